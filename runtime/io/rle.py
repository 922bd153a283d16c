"""COCO run-length encoding of masks, written here so the device needs no pycocotools.

Produces exactly what ``pycocotools.mask.encode`` gives (column-major runs starting with zeros,
then COCO's compressed string: deltas against the run two before, in 5-bit groups offset by 48).
"""

from __future__ import annotations

import numpy as np


def rle_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO run lengths of an (H, W) bool mask (column-major, zeros first)."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def counts_to_string(counts: list[int]) -> str:
    """COCO's compressed form of run lengths (``maskApi.c: rleToString``)."""
    out = []
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = (x != -1) if (ch & 0x10) else (x != 0)
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def encode(mask: np.ndarray) -> dict:
    """``{"size": [H, W], "counts": str}``, equal to pycocotools' ``encode`` output (decoded to str)."""
    h, w = mask.shape
    return {"size": [int(h), int(w)], "counts": counts_to_string(rle_counts(mask))}

"""Annotated frames: boxes, labels and scores, instance masks, an optional semantic overlay."""

from __future__ import annotations

import unicodedata
from functools import lru_cache

import cv2
import numpy as np

from ..results import FrameResult
from .frame import Frame

PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
                    [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0],
                    [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128], [128, 128, 128]], np.uint8)
"""RGB colours by class id (semantic ids; thing ``k`` uses ``k + 1``)."""
_LUT = np.ascontiguousarray(PALETTE[np.arange(256) % len(PALETTE)].reshape(256, 1, 3))


@lru_cache(maxsize=1024)
def drawable(text: str) -> str:
    """``text`` in the characters OpenCV's built-in (Hershey) fonts can draw: accents are dropped
    ("Gabelstapler Größe" becomes "Gabelstapler Grosse"), other letters become "?"; empty when
    nothing readable is left. JSON lines and reports keep the names as written."""
    t = unicodedata.normalize("NFKD", text.replace("ß", "ss"))
    t = "".join(c for c in t if not unicodedata.combining(c))
    out = "".join(c if 32 <= ord(c) < 127 else "?" for c in t)
    return out if any(c.isalnum() for c in out) else ""


def colour(class_id: int) -> tuple[int, int, int]:
    """RGB colour of a semantic class id."""
    c = PALETTE[class_id % len(PALETTE)]
    return int(c[0]), int(c[1]), int(c[2])


def annotate(frame: np.ndarray, result: FrameResult, semantic: bool = True, masks: bool = True,
             out: np.ndarray | None = None) -> np.ndarray:
    """Draw ``result`` over ``frame`` (RGB); returns the annotated RGB image (``out`` if given)."""
    if out is None:
        img = frame.copy()
    else:
        np.copyto(out, frame)
        img = out
    if semantic and result.semantic is not None:
        sem = result.semantic_frame()
        fg = sem > 0
        if fg.any():
            colours = cv2.applyColorMap(sem, _LUT)  # the LUT is in RGB order already, as is img
            tint = cv2.addWeighted(img, 0.55, colours, 0.45, 0.0)
            cv2.copyTo(tint, fg.view(np.uint8), img)
    for d in result.detections:
        c = colour(d.category + 1)
        if masks and d.has_mask:
            m = d.mask()
            if m is not None and m.any():
                x0, y0, x1, y1 = (int(v) for v in (np.floor(d.box[0]), np.floor(d.box[1]),
                                                   np.ceil(d.box[2]), np.ceil(d.box[3])))
                roi, mroi = img[y0:y1, x0:x1], m[y0:y1, x0:x1]  # the mask lies inside its box
                tint = cv2.addWeighted(roi, 0.5, np.full_like(roi, c), 0.5, 0.0)
                np.copyto(roi, tint, where=mroi[..., None])
        x0, y0, x1, y1 = (int(round(v)) for v in d.box)
        cv2.rectangle(img, (x0, y0), (x1, y1), c, 2)
        text = f"{drawable(d.label) or f'class {d.category}'} {d.score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        ty = max(y0, th + base + 1)
        cv2.rectangle(img, (x0, ty - th - base - 1), (x0 + tw + 2, ty), c, -1)
        cv2.putText(img, text, (x0 + 1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def annotated(frame: Frame, result: FrameResult, semantic: bool = True) -> np.ndarray:
    """:func:`annotate` of a run's frame, drawn once per frame however many sinks show it."""
    return result.memo(("annotated", semantic), lambda: annotate(frame.image, result, semantic=semantic))

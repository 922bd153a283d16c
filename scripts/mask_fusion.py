"""Instance masks with the semantic map folded in, against the masks alone (maintainer tooling, not installed).

The model gives two views of a thing's pixels: its instance mask (coefficients times prototypes, cropped to the
box) and the semantic map's class. This scores, on one split and with ``eval``'s decode (score >= 0.05), the
instance masks as the runtime builds them against masks whose logits are moved by the semantic map's log-odds of
the detection's class over the same prototype cells: a shifted threshold (``thr``), a sum (``sum``, weight A),
the smaller of the two (``and``) and a mean of the two probabilities (``avgp``, weight A on the semantic one).
The model is invoked once per image; only the masks change between rows.

Usage: ``.venv/bin/python scripts/mask_fusion.py MODEL.tflite --data DIR [--split val]``; one JSON line per variant.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np

from ocrnet_edge.model.data import load_dataset
from ocrnet_edge.model.evaluate import EVAL_DECODE, evaluate_results
from ocrnet_edge.runtime import contract
from ocrnet_edge.runtime.decode.frame import decode_outputs
from ocrnet_edge.runtime.decode.instance import MaskCrop
from ocrnet_edge.runtime.engine import Engine, EngineOptions

VARIANTS = (("base", 0.0), ("thr", -0.5), ("thr", 0.5), ("sum", 0.25), ("sum", 0.5), ("sum", 1.0), ("and", 1.0),
            ("avgp", 0.3), ("avgp", 0.5))


def log_odds(seg: np.ndarray, c: int) -> np.ndarray:
    """Log-odds of semantic class ``c`` against all the others, per cell of ``seg`` (h, w, C logits)."""
    others = np.delete(seg, c, axis=-1)
    top = others.max(-1)
    return seg[..., c] - (top + np.log(np.exp(others - top[..., None]).sum(-1)))


def fused(kind: str, a: float, inst: np.ndarray, sem: np.ndarray) -> np.ndarray:
    """The mask logits of one variant (mask where > 0)."""
    if kind == "base":
        return inst
    if kind == "thr":
        return inst - a
    if kind == "sum":
        return inst + a * sem
    if kind == "and":
        return np.minimum(inst, a * sem)
    p = (1 - a) / (1 + np.exp(-inst)) + a / (1 + np.exp(-sem))
    return np.log(p + 1e-9) - np.log(1 - p + 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="val")
    args = ap.parse_args()
    with Engine.open(args.model, None, EngineOptions()) as engine:
        data = load_dataset(args.data, engine.card.class_names, split=args.split, quiet=True)
        sem_names = list(engine.card.semantic_classes)
        quants = engine.quants
        cached = []
        for rec in data.records:
            out, transform = engine.invoke_raw(rec.image())
            cached.append((rec, {k: np.array(v) for k, v in out.items()}, transform))

    def results(kind: str, a: float):
        for rec, out, transform in cached:
            res = decode_outputs(out, transform, data.class_names, EVAL_DECODE, quants, seg_stride=engine.card.seg_stride)
            raw = out[contract.SEG_LOGITS]
            seg = quants[contract.SEG_LOGITS].dequantize(raw).reshape(raw.shape[-3:])
            dets = []
            for d in res.detections:
                m = d._mask_logits
                h, w = m.logits.shape
                sem = log_odds(seg[m.y0:m.y0 + h, m.x0:m.x0 + w], sem_names.index(d.label))
                logits = fused(kind, a, m.logits, sem).astype(np.float32)
                dets.append(dataclasses.replace(d, _mask_logits=MaskCrop(m.x0, m.y0, logits)))
            yield rec, dataclasses.replace(res, detections=tuple(dets))

    for kind, a in VARIANTS:
        m = evaluate_results(data, results(kind, a))
        print(json.dumps({"variant": kind, "weight": a, "box_ap": round(m["box_ap"], 4), "mask_ap": round(m["mask_ap"], 4),
                          "mask_ap50": round(m["mask_ap50"], 4)}), flush=True)


if __name__ == "__main__":
    main()

"""How a mask model's detections are ranked, scored on one split (maintainer tooling, not installed).

The runtime ranks a mask model's detections by class probability times mask confidence
(``runtime.decode.instance.mask_confidence``). This scores, with the run path's decode (the card's score threshold,
NMS IoU and cap), the same detections ranked by the class probability alone (``power 0``), by the class probability
times the mask confidence to the powers 1 (the runtime), 2 and 3, and by the product with the card's threshold then
applied to it instead of to the class probability (``cut after``). The model is invoked once per image; only the
ranking (and, for the last row, the detections kept) changes between rows.

Usage: ``.venv/bin/python scripts/mask_rescore.py MODEL.tflite --data DIR [--split val]``; one JSON line per variant.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from ocrnet_edge.convert.fidelity import engine_outputs
from ocrnet_edge.model.data import load_dataset
from ocrnet_edge.model.evaluate import evaluate_results
from ocrnet_edge.runtime.decode.detect import DecodeOptions
from ocrnet_edge.runtime.decode.frame import decode_outputs
from ocrnet_edge.runtime.engine import Engine

VARIANTS = (("power", 0), ("power", 1), ("power", 2), ("power", 3), ("cut after", 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="val")
    args = ap.parse_args()
    with Engine.open(args.model) as engine:
        data = load_dataset(args.data, engine.card.class_names, split=args.split, quiet=True)
        options = DecodeOptions.merged(engine.card.decode)
        cached = []
        for rec, out, transform in engine_outputs(engine, data):
            # Decoded at once (the masks are assembled, the semantic logits copied) before the next invoke.
            res = decode_outputs(out, transform, data.class_names, options, engine.quants,
                                 seg_stride=engine.card.seg_stride)
            # The runtime's score is class probability x confidence, so the confidence is their ratio.
            conf = [d.score / d.class_probability if d.class_probability > 0 else 0.0 for d in res.detections]
            cached.append((rec, res, conf))

    def results(kind: str, power: int):
        for rec, res, conf in cached:
            dets = tuple(dataclasses.replace(d, score=d.class_probability * c ** power)
                         for d, c in zip(res.detections, conf))
            if kind == "cut after":
                dets = tuple(d for d in dets if d.score >= options.score_threshold)
            yield rec, dataclasses.replace(res, detections=dets)

    print(json.dumps({"decode": dataclasses.asdict(options)}), flush=True)
    for kind, power in VARIANTS:
        m = evaluate_results(data, results(kind, power))
        print(json.dumps({"variant": kind, "power": power,
                          **{k: round(m[k], 4) for k in ("box_ap", "box_ap50", "mask_ap", "mask_ap50")}}), flush=True)


if __name__ == "__main__":
    main()

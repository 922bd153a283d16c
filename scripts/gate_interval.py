"""The fidelity gate's figures for a model and its converted int8 file, with every gated metric's interval over
resampled gate images, whether the gate passed or not (maintainer tooling, not installed). ``convert`` computes the
intervals only for a failed drop; this gives them for any file, to see how wide the gate's view is on a dataset.

The same code as ``convert``'s gate: the float Keras model at batch 1 and the int8 file through the runtime's
engine, both scored by :func:`model.evaluate.evaluate_outputs` on the split, then
:func:`convert.fidelity.with_intervals` (200 paired draws, 90% interval) on every gated metric.

Usage: ``.venv/bin/python scripts/gate_interval.py MODEL.keras MODEL_int8.tflite --data DIR [--split val]
[--skip-bad]``;
prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("keras", type=Path)
    ap.add_argument("int8", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--draws", type=int, default=None, help="resamples (default: convert's)")
    ap.add_argument("--skip-bad", action="store_true", help="skip files with problems, as convert --skip-bad")
    args = ap.parse_args()

    from ocrnet_edge.convert import fidelity
    from ocrnet_edge.convert.export import export_model
    from ocrnet_edge.model.data import load_dataset
    from ocrnet_edge.model.evaluate import Scored, evaluate_keras, evaluate_outputs
    from ocrnet_edge.model.io import load_model, load_model_config
    from ocrnet_edge.runtime.engine import Engine

    cfg = load_model_config(args.keras)
    data = load_dataset(args.data, cfg.class_names, split=args.split, skip_bad=args.skip_bad)
    static = export_model(load_model(args.keras), cfg)
    f_scored, i_scored = Scored(), Scored()
    with Engine.open(args.int8) as engine:
        f_m = evaluate_keras(static, data, progress=False, keep=f_scored)
        i_m = evaluate_outputs(data, fidelity.engine_outputs(engine, data), engine.quants, progress=False,
                               keep=i_scored)
    verdict = fidelity.gate(f_m, i_m)
    t0 = time.perf_counter()
    # Every gated metric "fails" a limit no drop can stay under, so that each gets its interval.
    every = fidelity.with_intervals(fidelity.gate(f_m, i_m, max_drop=-1e9), data, f_scored, i_scored,
                                    draws=args.draws or fidelity.DRAWS)
    print(json.dumps({"images": len(data), "drops_points": verdict.drops, "passed": verdict.ok,
                      "intervals": every.intervals, "level": fidelity.LEVEL, "draws": args.draws or fidelity.DRAWS,
                      "interval_seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()

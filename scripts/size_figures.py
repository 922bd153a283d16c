"""Model sizes for the README (maintainer tooling, not installed): for each ``--size-preset`` on a backbone, and
the reference model's architecture, MACs and parameters, the int8 file size, the converter's Edge TPU check,
int8 invoke time measured interleaved in one process with ratios to the reference model, and the peak RSS of
``ocrnet-edge run`` on each file in its own process.

Usage: ``.venv/bin/python scripts/size_figures.py WORK [--size 320] [--rounds 5] [--frames 50]``; prints a
Markdown table and writes ``WORK/sizes.json``. Models are untrained, with BatchNorm statistics estimated on
calibration images as in ``backbone_figures.py`` (size, MACs and time do not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from backbone_figures import cpu_line, interleaved_invoke_ms, peak_rss_of_run  # noqa: E402

ROWS = [("reference", "compact", 1.0, None), ("n", "mobilenet_v2", 1.0, "n"), ("s", "mobilenet_v2", 1.0, "s"),
        ("m", "mobilenet_v2", 1.0, "m"), ("s", "mobilenet_v2", 0.5, "s")]
"""(label, backbone, width, preset): the reference model's architecture first (the ratios' base)."""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work", type=Path)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import keras

    from ocrnet_edge.convert import calibration
    from ocrnet_edge.convert.card import write_with_card
    from ocrnet_edge.convert.checks import check_edgetpu
    from ocrnet_edge.convert.export import keras_to_tflite
    from ocrnet_edge.model.config import ModelConfig
    from ocrnet_edge.model.network import build_ocrnet
    from ocrnet_edge.runtime.modelfile import count_macs, inspect_model, xnnpack_refusals

    args.work.mkdir(parents=True, exist_ok=True)
    files = calibration.scan(REPO / "calibration_data", 1).files[::5][:40]
    rows = []
    for label, backbone, width, preset in ROWS:
        name = f"{label}_{backbone}_{width:g}"
        path = args.work / f"{name}_{args.size}_int8.tflite"
        cfg = ModelConfig(input_size=args.size, backbone=backbone, width=width)
        cfg = cfg.with_preset(preset) if preset else cfg
        keras.utils.set_random_seed(0)
        net = build_ocrnet(cfg)
        batch = np.concatenate(list(calibration.iter_preprocessed(files[:16], args.size)))
        for _ in range(30):  # BatchNorm statistics of real images (momentum 0.9): healthy activation ranges
            net(batch, training=True)
        if not path.exists():
            data = keras_to_tflite(net, cfg, lambda: ([x] for x in calibration.iter_preprocessed(files, args.size)))
            write_with_card(data, cfg, name, None, path)
        info = inspect_model(path)
        tpu = check_edgetpu(info)
        if xnnpack_refusals(info):
            sys.exit(f"{path}: XNNPACK would refuse it: {xnnpack_refusals(info)[0]}")
        rows.append({"label": label, "backbone": backbone, "width": width, "preset": preset,
                     "channels": {k: getattr(cfg, k) for k in ("neck_channels", "det_channels", "head_channels",
                                                                "num_protos", "ocr_channels")},
                     "file": str(path), "params": int(net.count_params()), "macs": int(count_macs(info)),
                     "int8_bytes": path.stat().st_size, "edgetpu_mapped": f"{tpu.mapped_ops}/{tpu.total_ops}",
                     "edgetpu_ok": tpu.ok})
        print(name, rows[-1]["macs"] / 1e6, "MMAC", flush=True)
    ms = interleaved_invoke_ms({r["file"]: Path(r["file"]) for r in rows}, args.rounds, args.frames, args.threads)
    base = ms[rows[0]["file"]]
    for r in rows:
        r["invoke_ms"] = ms[r["file"]]
        r["invoke_ratio_to_reference"] = r["invoke_ms"] / base
        r["peak_rss_mb"] = peak_rss_of_run(Path(r["file"]), args.work, args.threads)
    doc = {"cpu": cpu_line(), "size": args.size, "threads": args.threads, "rounds": args.rounds,
           "frames_per_round": args.frames, "rows": rows}
    (args.work / "sizes.json").write_text(json.dumps(doc, indent=1))
    print(f"\n{doc['cpu']}, input {args.size}, {args.threads} threads, LiteRT XNNPACK; median of {args.rounds} "
          f"interleaved rounds of {args.frames} invokes")
    print("| size | backbone | neck / det / head / protos | MMAC | parameters | int8 file | Edge TPU check | "
          "int8 invoke | vs reference | peak RSS |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        c = r["channels"]
        print(f"| {r['label']} | {r['backbone']} {r['width']:g} | {c['neck_channels']} / {c['det_channels']} / "
              f"{c['head_channels']} / {c['num_protos']} | {r['macs'] / 1e6:.0f} | {r['params'] / 1e6:.2f} M | "
              f"{r['int8_bytes'] / 1024:.0f} KiB | {r['edgetpu_mapped']} ops map | {r['invoke_ms']:.2f} ms | "
              f"{r['invoke_ratio_to_reference']:.2f} | {r['peak_rss_mb']:.0f} MB |")


if __name__ == "__main__":
    main()

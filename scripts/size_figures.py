"""Model sizes for the README (maintainer tooling, not installed): for each ``--size-preset`` on a backbone, and
the reference model's architecture (and the default's model for a set with boxes alone, at ``--size``
and larger inputs), MACs and parameters, the int8 file size, the converter's Edge TPU check,
int8 invoke time measured interleaved in one process with ratios to the reference model, and the peak RSS of
``ocrnet-edge run`` on each file in its own process.

Usage: ``.venv/bin/python scripts/size_figures.py WORK [--size 320] [--shapes 384x288,416x320] [--rounds 5]
[--frames 50]``; prints a Markdown table and writes ``WORK/sizes.json``. ``--shapes`` adds the default size's row
(``s`` on MobileNetV2 0.5, DeepLab layout) at each of those input sizes, timed in the same rounds. Models are
untrained, with BatchNorm statistics estimated on calibration images as in ``backbone_figures.py`` (size, MACs and
time do not depend on the weights).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from backbone_figures import cpu_line, measure, parse_args  # noqa: E402

from ocrnet_edge.runtime.contract import size_text  # noqa: E402

ROWS = [("reference", "compact", 1.0, None, 8), ("n", "mobilenet_v2", 1.0, "n", 8), ("s", "mobilenet_v2", 1.0, "s", 8),
        ("m", "mobilenet_v2", 1.0, "m", 8), ("s", "mobilenet_v2", 0.5, "s", 1), ("m", "mobilenet_v2", 0.5, "m", 1)]
"""(label, backbone, width, preset, channel divisor): the reference model's architecture first (the ratios' base);
width 0.5 in DeepLab's channel layout (divisor 1), that of the bundled pretrained file."""
DEFAULT_ROW = ROWS[4]
"""The default on photographs (``model.train.photo_defaults``)."""
BOX_ROWS = [(("s, boxes alone", "mobilenet_v2", 0.5, "s", 1), None), (("s, boxes alone", "mobilenet_v2", 0.5, "s", 1), 416),
            (("s, boxes alone", "mobilenet_v2", 0.5, "s", 1), (512, 384)),
            (("s, boxes alone", "mobilenet_v2", 1.0, "s", 8), None)]
"""(row, input or None for ``--size``): the model ``train`` builds for a set with boxes only (the detection head
alone, one class) at ``--size``, and at 416 and 512x384, the inputs of the "Box sets at 416" runs (docs/recipe_runs.md;
measured, not adopted); the last row is the same model on the width-1.0 backbone."""


def main() -> None:
    from ocrnet_edge.model.config import ModelConfig

    args = parse_args(__doc__)
    specs = [(row, args.size) for row in ROWS] + [(row, size or args.size) for row, size in BOX_ROWS]
    specs += [(DEFAULT_ROW, shape) for shape in args.shapes]
    models = []
    for (label, backbone, width, preset, divisor), size in specs:
        cfg = ModelConfig(input_size=size, backbone=backbone, width=width, channel_divisor=divisor)
        cfg = cfg.with_preset(preset) if preset else cfg
        if "boxes alone" in label:
            cfg = dataclasses.replace(cfg, tasks=("detect",), class_names=("object",))
        name = label.replace(", boxes alone", "_boxes")
        models.append((f"{name}_{backbone}_{width:g}", cfg))
    rows_spec = [row for row, _ in specs]
    rows = measure(models, args)
    for (label, backbone, width, preset, divisor), (_, cfg), r in zip(rows_spec, models, rows):
        r.update(label=label, input=size_text(cfg.input_size), backbone=backbone, width=width, preset=preset,
                 channel_divisor=divisor,
                 invoke_ratio_to_reference=r.pop("invoke_ratio"),
                 channels={k: getattr(cfg, k) for k in ("neck_channels", "det_channels", "head_channels", "num_protos",
                                                        "ocr_channels")})
    doc = {"cpu": cpu_line(), "size": size_text(args.size), "threads": args.threads, "rounds": args.rounds,
           "frames_per_round": args.frames, "rows": rows}
    (args.work / "sizes.json").write_text(json.dumps(doc, indent=1))
    print(f"\n{doc['cpu']}, input {doc['size']}, {args.threads} threads, LiteRT XNNPACK; median of {args.rounds} "
          f"interleaved rounds of {args.frames} invokes")
    print("| size | backbone | input | neck / det / head / protos | MMAC | parameters | int8 file | Edge TPU check | "
          "int8 invoke | vs reference | peak RSS |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        c = r["channels"]
        layout = " (DeepLab layout)" if r["channel_divisor"] != 8 else ""
        print(f"| {r['label']} | {r['backbone']} {r['width']:g}{layout} | {r['input']} | "
              f"{c['neck_channels']} / {c['det_channels']} / "
              f"{c['head_channels']} / {c['num_protos']} | {r['macs'] / 1e6:.0f} | {r['params'] / 1e6:.2f} M | "
              f"{r['int8_bytes'] / 1024:.0f} KiB | {r['edgetpu_mapped']} ops map | {r['invoke_ms']:.2f} ms | "
              f"{r['invoke_ratio_to_reference']:.2f} | {r['peak_rss_mb']:.0f} MB |")


if __name__ == "__main__":
    main()

"""float32-to-int8 fidelity per backbone (maintainer tooling, not installed): each backbone and width of
``backbone_figures.BACKBONES`` is trained briefly at one input size on the same generated scenes over real
photographs (same epochs and seed, random start, so every backbone is compared at an equal budget), then
converted with ``convert``, whose gate scores the float model and the int8 file on the run's validation
scenes. The drops are those of ``convert``'s report; the float scores say at what accuracy they were taken.

Usage: ``.venv/bin/python scripts/backbone_fidelity.py WORK [--size 320] [--train 240] [--epochs 8]``;
prints a Markdown table and writes ``WORK/fidelity.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from backbone_figures import BACKBONES, cpu_line  # scripts/ is on sys.path when run as a script
from pretrained_figures import sh


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work", type=Path)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--train", type=int, default=240)
    ap.add_argument("--epochs", type=int, default=8)
    args = ap.parse_args()
    w = args.work
    w.mkdir(parents=True, exist_ok=True)
    data, val = w / "train", w / "val"
    if not data.exists():
        sh("generate", "--out", str(data), "--count", str(args.train), "--seed", "31", "--size", str(args.size), "--quiet")
    if not val.exists():
        sh("generate", "--out", str(val), "--count", "40", "--seed", "32", "--size", str(args.size), "--quiet")
    rows = []
    for backbone, width in BACKBONES:
        run = w / f"{backbone}_{width:g}"
        if not (run / "model.keras").exists():
            sh("train", "--data", str(data), "--val", str(val), "--out", str(run), "--epochs", str(args.epochs),
               "--seed", "0", "--size", str(args.size), "--backbone", backbone, "--width", str(width), "--quiet")
        report = run / "int8" / "model.report.json"
        if not report.exists():  # the gate: the run's recorded validation scenes, float and int8 side by side
            sh("convert", str(run / "model.keras"), "--out", str(run / "int8"), "--name", "model", "--quiet",
               "--max-drop", "100")  # record the drop, whatever it is, rather than stop at the gate
        fid = json.loads(report.read_text())["fidelity"]
        rows.append({"backbone": backbone, "width": width, "float": fid["float"], "int8": fid["int8"],
                     "drops_points": fid["drops_points"]})
        print(backbone, width, fid["drops_points"], flush=True)
    doc = {"cpu": cpu_line(), "size": args.size, "train": args.train, "epochs": args.epochs, "rows": rows}
    (w / "fidelity.json").write_text(json.dumps(doc, indent=1))
    print(f"\n{args.train} scenes at {args.size}, {args.epochs} epochs, seed 0, random start; convert's gate on 40 "
          "validation scenes")
    print("| backbone | width | float box AP / mask AP / mIoU | int8 drop (box / mask / mIoU, points) |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        f, d = r["float"], r["drops_points"]
        print(f"| {r['backbone']} | {r['width']:g} | {f.get('box_ap', 0):.3f} / {f.get('mask_ap', 0):.3f} / "
              f"{f.get('miou', 0):.3f} | {d.get('box_ap', 0):+.2f} / {d.get('mask_ap', 0):+.2f} / "
              f"{d.get('miou', 0):+.2f} |")


if __name__ == "__main__":
    main()

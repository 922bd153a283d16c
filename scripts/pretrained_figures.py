"""Equal-budget comparison of a pretrained start (maintainer tooling, not installed).

Runs on the same generated scenes over real photographs, same epochs and seed, scored on a held-out
split with ``eval``: ``mobilenet_v2`` width 1.0 from Coral's quantized ImageNet classifier
(``--pretrained ../shared/peers/coral/mobilenet_v2_1.0_224_quant.tflite``) at each ``--backbone-lr``,
``mobilenet_v1`` width 0.5 from Coral's ``mobilenet_v1_0.5_160_quant.tflite``, ``mobilenet_v2`` 1.0 from
random weights, and ``compact`` from random weights; each is then converted (``convert``, whose gate
scores float and int8 on generated scenes) for the float32-to-int8 drop.

Usage: ``.venv/bin/python scripts/pretrained_figures.py WORK [--epochs 6] [--size 256] [--backbone-lr 0.1,1.0]``;
(also --train 240, --heldout 100); prints a Markdown table and writes ``WORK/pretrained.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

from backbone_figures import cpu_line, interleaved_invoke_ms  # scripts/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
CLI = [str(REPO / ".venv" / "bin" / "ocrnet-edge")]
CORAL = REPO.parent / "shared" / "peers" / "coral" / "mobilenet_v2_1.0_224_quant.tflite"
CORAL_V1 = CORAL.with_name("mobilenet_v1_0.5_160_quant.tflite")


def sh(*args: str) -> None:
    print("$ ocrnet-edge", " ".join(args), flush=True)
    p = subprocess.run([*CLI, *args], capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"failed ({p.returncode}): {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ''}")


def run_dir(work: Path, name: str) -> Path:
    """``WORK/<backbone>_<width>/<start>[_lr<F>]`` of a run named ``"<backbone> <width>, <start> ...[, backbone lr F]"``."""
    arch, start = name.split(", ", 1)
    lr = start.split("backbone lr ")[1] if "backbone lr " in start else ""
    return work / arch.replace(" ", "_") / (start.split()[0].lower() + (f"_lr{lr}" if lr else ""))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work", type=Path)
    ap.add_argument("--train", type=int, default=240)
    ap.add_argument("--heldout", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--backbone-lr", default="0.1,1.0",
                    help="comma-separated backbone learning-rate fractions for the pretrained start (train --backbone-lr)")
    args = ap.parse_args()
    w = args.work
    w.mkdir(parents=True, exist_ok=True)
    data, val, held = w / "train", w / "val", w / "heldout"
    if not data.exists():
        sh("generate", "--out", str(data), "--count", str(args.train), "--seed", "31", "--size", str(args.size), "--quiet")
    if not val.exists():
        sh("generate", "--out", str(val), "--count", "40", "--seed", "32", "--size", str(args.size), "--quiet")
    if not held.exists():
        sh("generate", "--out", str(held), "--count", str(args.heldout), "--seed", "20261126", "--size", str(args.size),
           "--quiet")
    coral = ["--backbone", "mobilenet_v2", "--width", "1.0", "--pretrained", str(CORAL)]
    runs = {f"mobilenet_v2 1.0, Coral ImageNet file, backbone lr {f}": [*coral, "--backbone-lr", f]
            for f in args.backbone_lr.split(",")}
    runs |= {
        "mobilenet_v1 0.5, Coral ImageNet file, backbone lr 0.1": ["--backbone", "mobilenet_v1", "--width", "0.5",
                                                                   "--pretrained", str(CORAL_V1), "--backbone-lr", "0.1"],
        "mobilenet_v2 1.0, random": ["--backbone", "mobilenet_v2", "--width", "1.0"],
        "compact 1.0, random": ["--backbone", "compact", "--width", "1.0"],
    }
    out: dict = {"train": args.train, "epochs": args.epochs, "size": args.size, "heldout": args.heldout, "runs": {}}
    for name, extra in runs.items():
        run = run_dir(w, name)
        if not (run / "heldout.json").exists():
            sh("train", "--data", str(data), "--val", str(val), "--out", str(run), "--epochs", str(args.epochs),
               "--seed", "0", "--size", str(args.size), "--quiet", *extra)
            sh("eval", str(run / "model.keras"), "--data", str(held), "--json", str(run / "heldout.json"), "--quiet")
        if not (run / "int8" / "model.report.json").exists():  # the gate: generated scenes of the held-out seed
            sh("convert", str(run / "model.keras"), "--out", str(run / "int8"), "--name", "model", "--quiet")
        fid = json.loads((run / "int8" / "model.report.json").read_text())["fidelity"]
        m = json.loads((run / "heldout.json").read_text())
        rows = list(csv.DictReader((run / "history.csv").open()))
        out["runs"][name] = {k: m[k] for k in ("box_ap", "mask_ap", "miou")}
        out["runs"][name]["seconds"] = float(rows[-1]["seconds"])
        out["runs"][name]["int8_drop_points"] = fid["drops_points"]
    # Invoke time of each run's int8 file against the reference model's (compact at 320), interleaved in one
    # process: is a pretrained backbone at this size within the reference's time on this machine?
    ref = w / "reference" / "reference_int8.tflite"
    if not ref.exists():
        sh("convert", str(REPO / "models" / "reference" / "model.keras"), "--out", str(ref.parent), "--name", "reference",
           "--quiet")
    files = {"reference (compact 1.0 at 320)": ref} | {name: run_dir(w, name) / "int8" / "model_int8.tflite"
                                                       for name in runs}
    ms = {n: round(t, 2) for n, t in interleaved_invoke_ms(files, rounds=7, frames=50).items()}
    for name, t in ms.items():
        if name in out["runs"]:
            out["runs"][name]["invoke_ms"] = t
    out["reference_invoke_ms"] = ms["reference (compact 1.0 at 320)"]
    out["cpu"] = cpu_line()
    (w / "pretrained.json").write_text(json.dumps(out, indent=1))
    print(f"\n{args.train} training scenes at {args.size}, {args.epochs} epochs, seed 0; held-out {args.heldout} scenes")
    print(f"int8 invoke on {out['cpu']}, 2 threads; the reference model (compact at 320): "
          f"{out['reference_invoke_ms']:.2f} ms")
    print("| start | box AP | mask AP | mIoU | training time | int8 drop (box/mask/mIoU points) | int8 invoke |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in out["runs"].items():
        d = r["int8_drop_points"]
        print(f"| {name} | {r['box_ap']:.3f} | {r['mask_ap']:.3f} | {r['miou']:.3f} | {r['seconds'] / 60:.1f} min | "
              f"{d.get('box_ap', 0):+.2f} / {d.get('mask_ap', 0):+.2f} / {d.get('miou', 0):+.2f} | "
              f"{r['invoke_ms']:.2f} ms |")


if __name__ == "__main__":
    main()

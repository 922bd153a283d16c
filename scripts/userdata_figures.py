"""Figures for "Train on your own data" (maintainer tooling, not installed).

On a YOLO-segmentation dataset with classes the reference model never had (three thing classes and a
region class, images of several sizes and aspects), with the commands a user types:

1. transfer: ``train --init models/reference/model.keras`` against training from scratch, equal budget
   (same images, epochs and seed), both scored on a held-out set with ``eval``;
2. time per epoch with augmentation on against off (two epochs each, the second timed; and the data
   pipeline alone, interleaved in one process).

Usage: ``.venv/bin/python scripts/userdata_figures.py WORK [--epochs N] [--train N]``; prints a Markdown
table and writes ``WORK/figures.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import write_yolo_seg  # noqa: E402  (the fixture builder of the tests)

CLI = [str(REPO / ".venv" / "bin" / "ocrnet-edge")]


def sh(*args: str) -> str:
    print("$ ocrnet-edge", " ".join(args), flush=True)
    p = subprocess.run([*CLI, *args], capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"failed ({p.returncode}): {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ''}")
    return p.stdout


def epoch_seconds(run: Path) -> list[float]:
    rows = list(csv.DictReader((run / "history.csv").open()))
    t = [float(r["seconds"]) for r in rows]
    return [b - a for a, b in zip([0.0, *t[:-1]], t)]


def pipeline_seconds(data: Path, rounds: int = 3) -> dict[str, float]:
    """Median seconds to build one epoch of batches, augmentation on and off, interleaved."""
    import statistics

    from ocrnet_edge.model.augment import AugmentOptions
    from ocrnet_edge.model.config import TrainConfig
    from ocrnet_edge.model.data import load_dataset
    from ocrnet_edge.model.train import Batches

    ds = load_dataset(data)
    cfg = TrainConfig()
    times: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(rounds):
        for mode in ("on", "off"):
            b = Batches(ds, cfg, AugmentOptions(enabled=mode == "on"))
            t0 = time.perf_counter()
            for i in range(len(b)):
                b[i]
            times[mode].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work", type=Path)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--train", type=int, default=320)
    ap.add_argument("--heldout", type=int, default=100)
    args = ap.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    data, held = work / "data", work / "heldout"
    if not data.exists():
        write_yolo_seg(data, train=args.train, val=40, seed=101)
    if not held.exists():
        write_yolo_seg(held, train=1, val=args.heldout, seed=202)  # scored: its val split

    fig: dict = {"cpu": platform.processor() or platform.machine(), "epochs": args.epochs, "train_images": args.train}
    try:
        fig["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    sh("dataset", str(data))
    runs = {"init from reference": ["--init", str(REPO / "models/reference/model.keras")], "from scratch": []}
    for name, extra in runs.items():
        out = work / name.replace(" ", "_")
        sh("train", "--data", str(data), "--out", str(out), "--epochs", str(args.epochs), "--seed", "0", "--quiet", *extra)
        sh("eval", str(out / "model.keras"), "--data", str(held), "--json", str(out / "heldout.json"), "--quiet")
        m = json.loads((out / "heldout.json").read_text())
        fig[name] = {k: m[k] for k in ("box_ap", "mask_ap", "miou")}
        fig[name]["per_class_iou"] = m["per_class_iou"]
        fig[name]["epoch_seconds"] = epoch_seconds(out)
    for mode in ("on", "off"):
        out = work / f"aug_{mode}"
        sh("train", "--data", str(data), "--out", str(out), "--epochs", "2", "--seed", "0", "--quiet",
           "--augment", mode, "--val-images", "0")
        fig[f"epoch2_seconds_augment_{mode}"] = epoch_seconds(out)[1]
    fig["pipeline_epoch_seconds"] = pipeline_seconds(data)
    (work / "figures.json").write_text(json.dumps(fig, indent=1, ensure_ascii=False))
    print(f"\nCPU: {fig['cpu']}; {args.train} training images, {args.epochs} epochs, seed 0, held-out {args.heldout}")
    print("| start | box AP | mask AP | mIoU |\n| --- | --- | --- | --- |")
    for name in runs:
        f = fig[name]
        print(f"| {name} | {f['box_ap']:.3f} | {f['mask_ap']:.3f} | {f['miou']:.3f} |")
    on, off = fig["epoch2_seconds_augment_on"], fig["epoch2_seconds_augment_off"]
    p = fig["pipeline_epoch_seconds"]
    print(f"\nepoch time (second epoch): augmentation on {on:.1f} s, off {off:.1f} s (ratio {on / off:.2f}); "
          f"data pipeline alone per epoch: on {p['on']:.1f} s, off {p['off']:.1f} s (ratio {p['on'] / p['off']:.2f})")


if __name__ == "__main__":
    main()

"""Backbone comparison for the README (maintainer tooling, not installed): for each backbone and width at
one input size, MACs and parameters (counted from the converted graph), the int8 file size, the
converter's Edge TPU check, int8 invoke time on this machine, measured interleaved in one process
with ratios to ``compact``, and the peak RSS of ``ocrnet-edge run`` on each file in its own process.

Usage: ``.venv/bin/python scripts/backbone_figures.py WORK [--size 320] [--rounds 5] [--frames 50]``;
prints a Markdown table and writes ``WORK/backbones.json``. Models are untrained (timing and size do not
depend on the weights, but an untrained network's activations shrink layer by layer until their int8
scales are degenerate, so each model's BatchNorm statistics are first estimated on the calibration
images: a forward pass in training mode, no weight changes); calibration uses 40 images of
``calibration_data/``. A file XNNPACK would refuse is reported, not timed on XNNPACK.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ocrnet_edge.runtime.contract import parse_size, size_text  # noqa: E402

BACKBONES = [("compact", 1.0), ("mobilenet_v2", 0.35), ("mobilenet_v2", 0.5), ("mobilenet_v2", 0.75),
             ("mobilenet_v2", 1.0), ("mobilenet_v1", 0.25), ("mobilenet_v1", 0.5), ("mobilenet_v1", 0.75),
             ("mobilenet_v1", 1.0)]


def cpu_line() -> str:
    """The CPU and its int8-relevant flags, as bench records them."""
    from ocrnet_edge.runtime.system.machine import cpu_flags, cpu_model

    return f"{cpu_model()} ({', '.join(cpu_flags()) or 'no int8 flags'})"


def interleaved_invoke_ms(files: dict[str, Path], rounds: int = 5, frames: int = 50, threads: int = 2) -> dict:
    """Median int8 invoke time per file in ms, rounds interleaved so every file sees the same machine state."""
    from ocrnet_edge.runtime.engine import Engine, EngineOptions

    engines = {n: Engine.open(f, options=EngineOptions(threads=threads)) for n, f in files.items()}
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    times: dict[str, list[float]] = {n: [] for n in files}
    try:
        for e in engines.values():
            for _ in range(5):
                e.backend.invoke()
        for _ in range(rounds):
            for n, e in engines.items():
                e.process(frame)
                t = []
                for _ in range(frames):
                    t0 = time.perf_counter()
                    e.backend.invoke()
                    t.append(time.perf_counter() - t0)
                times[n].append(statistics.median(t) * 1000)
    finally:
        for e in engines.values():
            e.close()
    return {n: statistics.median(t) for n, t in times.items()}


def peak_rss_of_run(model: Path, work: Path, threads: int) -> float:
    """Peak RSS of ``ocrnet-edge run`` on 20 synthetic frames, in its own process, as a board would see it."""
    summary = work / (model.stem + ".summary.json")
    subprocess.run([sys.executable, "-m", "ocrnet_edge", "run", str(model), "--source",
                    "synthetic://?seed=0&size=640x480&frames=20", "--board", "host", "--threads", str(threads),
                    "--summary", str(summary), "--quiet"], check=True, capture_output=True)
    return json.loads(summary.read_text())["memory_mb"]["peak"]


def parse_args(doc: str):
    """The options both figure scripts take."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("--size", type=parse_size, default=320, help="320, or 384x288 (width x height)")
    ap.add_argument("--shapes", type=lambda t: [parse_size(v) for v in t.split(",")], default=[],
                    help="size_figures.py: the default size's row again at each of these sizes (e.g. 384x288)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    return args


def measure(models: list, args) -> list[dict]:
    """For each ``(name, ModelConfig)``: build it untrained with BatchNorm statistics of calibration images,
    convert it to full int8 (reused when ``WORK/<name>_<size>_int8.tflite`` exists), count MACs and parameters,
    check it for the Edge TPU, then time every file interleaved (``invoke_ratio``: to the first model) and take
    the peak RSS of a run on each."""
    import keras

    from ocrnet_edge.convert import calibration
    from ocrnet_edge.convert.card import write_with_card
    from ocrnet_edge.convert.checks import check_edgetpu
    from ocrnet_edge.convert.export import keras_to_tflite
    from ocrnet_edge.model.network import build_ocrnet
    from ocrnet_edge.runtime.modelfile import count_macs, inspect_model, xnnpack_refusals

    files = calibration.scan(REPO / "calibration_data", 1).files[::5][:40]
    rows = []
    for name, cfg in models:
        path = args.work / f"{name}_{size_text(cfg.input_size)}_int8.tflite"
        batch = np.concatenate(list(calibration.iter_preprocessed(files[:16], cfg.input_size)))
        keras.utils.set_random_seed(0)
        net = build_ocrnet(cfg)
        for _ in range(30):  # BatchNorm statistics of real images (momentum 0.9): healthy activation ranges
            net(batch, training=True)
        if not path.exists():
            data = keras_to_tflite(net, cfg, lambda s=cfg.input_size: ([x] for x in calibration.iter_preprocessed(files, s)))
            write_with_card(data, cfg, name, None, path)
        info = inspect_model(path)
        tpu = check_edgetpu(info)
        if xnnpack_refusals(info):
            sys.exit(f"{path}: XNNPACK would refuse it: {xnnpack_refusals(info)[0]}")
        rows.append({"file": str(path), "params": int(net.count_params()), "macs": int(count_macs(info)),
                     "int8_bytes": path.stat().st_size, "edgetpu_mapped": f"{tpu.mapped_ops}/{tpu.total_ops}",
                     "edgetpu_ok": tpu.ok})
        print(name, rows[-1]["macs"] / 1e6, "MMAC", flush=True)
    ms = interleaved_invoke_ms({r["file"]: Path(r["file"]) for r in rows}, args.rounds, args.frames, args.threads)
    for r in rows:
        r["invoke_ms"] = ms[r["file"]]
        r["invoke_ratio"] = r["invoke_ms"] / ms[rows[0]["file"]]
        r["peak_rss_mb"] = peak_rss_of_run(Path(r["file"]), args.work, args.threads)
    return rows


def main() -> None:
    from ocrnet_edge.model.config import ModelConfig

    args = parse_args(__doc__)
    models = [(f"{b}_{w:g}", ModelConfig(input_size=args.size, backbone=b, width=w)) for b, w in BACKBONES]
    rows = measure(models, args)
    for (backbone, width), r in zip(BACKBONES, rows):
        r.update(backbone=backbone, width=width, invoke_ratio_to_compact=r.pop("invoke_ratio"))
    doc = {"cpu": cpu_line(), "size": args.size, "threads": args.threads, "rounds": args.rounds,
           "frames_per_round": args.frames, "rows": rows}
    (args.work / "backbones.json").write_text(json.dumps(doc, indent=1))
    print(f"\n{doc['cpu']}, input {args.size}, {args.threads} threads, LiteRT XNNPACK; median of {args.rounds} "
          f"interleaved rounds of {args.frames} invokes")
    print("| backbone | width | MMAC | parameters | int8 file | Edge TPU check | int8 invoke (ms) | vs compact | peak RSS |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['backbone']} | {r['width']:g} | {r['macs'] / 1e6:.0f} | {r['params'] / 1e6:.2f} M | "
              f"{r['int8_bytes'] / 1024:.0f} KiB | {r['edgetpu_mapped']} ops map | {r['invoke_ms']:.2f} | "
              f"{r['invoke_ratio_to_compact']:.2f} | {r['peak_rss_mb']:.0f} MB |")


if __name__ == "__main__":
    main()

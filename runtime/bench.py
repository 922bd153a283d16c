"""``ocrnet-edge bench``: latency of the whole device path per stage, with memory, per configuration.

Each configuration (model file x backend x threads) runs in its own subprocess: its peak RSS is its
own, and a configuration that fails or crashes is recorded as failed with the reason while the others
go on. A worker warms up, then times ``frames`` frames through source, preprocess, invoke, decode and
(optionally) annotation, and reports per stage the median, p90, p99 and mean in milliseconds.

Timings taken under emulation are marked ``emulated`` and are never a board's figures.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import contract

STAGES = ("source", "preprocess", "invoke", "decode", "sink", "total")
SCHEMA_VERSION = "ocrnet-edge-bench/1"


@dataclass(frozen=True)
class BenchConfig:
    """One configuration to time.

    Attributes:
        model: The ``.tflite`` or ``.onnx`` file.
        backend: A backend name (``cpu``, ``edgetpu``, ``onnxruntime``, ``tensorrt``).
        threads: Interpreter threads.
        frames: Timed frames.
        warmup: Untimed frames first.
        source: ``synthetic://...`` (a pool of pre-drawn scenes) or a video/image path (looped).
        sink: Also annotate each frame (the cost a video or viewer sink adds).
        card: Card for a file without one.
        board: Board profile name (for the budget).
        budget_mb: The board's memory budget.
        precision: ``auto`` or ``int8``, ``fp16``, ``fp32`` (GPU backends).
        board_precision: The board's precisions (``auto``'s choice).
        device: The backend's device (Edge TPU, ONNX Runtime provider, CUDA index), or None.
    """

    model: str
    backend: str = "cpu"
    threads: int = 1
    frames: int = 100
    warmup: int = 10
    source: str = "synthetic://?seed=0&size=640x480"
    sink: bool = False
    card: str | None = None
    board: str = "host"
    budget_mb: float = 0.0
    precision: str = "auto"
    board_precision: tuple[str, ...] = ("fp16", "fp32")
    device: str | None = None


def percentiles(values: list[float]) -> dict[str, float]:
    """Median, p90, p99 and mean of a list of milliseconds (rounded to microseconds)."""
    a = np.asarray(values, dtype=np.float64)
    return {"median": round(float(np.median(a)), 3), "p90": round(float(np.percentile(a, 90)), 3),
            "p99": round(float(np.percentile(a, 99)), 3), "mean": round(float(a.mean()), 3)}


def _frames(source: str, n: int):
    from .io.sources import open_source

    if source.startswith("synthetic://"):
        # A pool drawn before timing: the source stage then measures handing out a frame, as a camera
        # that already holds the newest frame would, not the cost of drawing scenes.
        src = open_source(source + ("&" if "?" in source else "?") + f"frames={min(n, 16)}")
        pool = [f.image for f in src]
        src.close()
        i = 0
        while True:
            yield pool[i % len(pool)]
            i += 1
    while True:
        src = open_source(source)
        got = False
        for f in src:
            got = True
            yield f.image
        src.close()
        if not got:
            return


def bench_one(cfg: BenchConfig) -> dict:
    """Time one configuration in this process."""
    from .engine import Engine, EngineOptions
    from .io.draw import annotate
    from .run import device_memory
    from .system.memory import peak_rss_mb, rss_mb

    after_import = rss_mb()
    engine = Engine.open(cfg.model, cfg.card, EngineOptions(
        backend=cfg.backend, threads=cfg.threads, precision=cfg.precision, board_precision=tuple(cfg.board_precision),
        device=cfg.device))
    after_load = rss_mb()
    frames = _frames(cfg.source, cfg.frames + cfg.warmup)
    times: dict[str, list[float]] = {s: [] for s in STAGES}
    try:
        for i in range(cfg.warmup + cfg.frames):
            t0 = time.perf_counter()
            frame = next(frames)
            t1 = time.perf_counter()
            res = engine.process(frame)
            t2 = time.perf_counter()
            if cfg.sink:
                annotate(frame, res)
            t3 = time.perf_counter()
            if i < cfg.warmup:
                continue
            times["source"].append((t1 - t0) * 1e3)
            for k in ("preprocess", "invoke", "decode"):
                times[k].append(res.times_ms[k])
            times["sink"].append((t3 - t2) * 1e3)
            times["total"].append((t3 - t0) * 1e3)
        info = engine.info
        runtime = engine.backend.runtime_version
        ran = {"file": str(engine.path), "precision": engine.backend.precision, "served_by": engine.backend.served_by}
        ran_path = engine.path  # a GPU backend may run the ONNX build beside the file given
        gpu_mb, shared = device_memory(engine)
        arch = (engine.card.raw.get("notes") or {}).get("model_config") or {}
        backbone = f"{arch['backbone']} {arch.get('width', 1.0):g}" if arch.get("backbone") else None
        size = engine.input_size
    finally:
        engine.close()
    stages = {k: percentiles(v) for k, v in times.items() if v and (k != "sink" or cfg.sink)}
    total_s = sum(times["total"]) / 1e3
    macs = info.macs
    invoke_s = stages["invoke"]["median"] / 1e3
    peak = peak_rss_mb()
    gpu = round(gpu_mb, 1) if gpu_mb is not None else None
    return {
        "config": asdict(cfg), "ok": True, "input_size": contract.size_json(size), "stages_ms": stages,
        "fps": round(cfg.frames / total_s, 2) if total_s else None,
        # The budget counts GPU memory too where the GPU shares the board's DRAM (a Jetson): see MemoryFigures.
        "memory_mb": {"after_import": round(after_import, 1), "after_load": round(after_load, 1),
                      "peak": round(peak, 1), "budget": cfg.budget_mb, "gpu": gpu, "gpu_shared": shared,
                      "counted": round(peak + ((gpu or 0.0) if shared else 0.0), 1)},
        "model": {"file": str(ran_path), "bytes": ran_path.stat().st_size, "sha256": _sha256(str(ran_path)),
                  "macs": macs, "parameters": info.parameters, "ops": len(info.ops), "edgetpu": info.is_edgetpu,
                  "backbone": backbone, "format": info.format},
        "ran": ran,
        "achieved_gmacs_per_s": round(macs / invoke_s / 1e9, 3) if invoke_s and macs else None,
        "runtime": runtime,
    }


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def bench_subprocess(cfg: BenchConfig, timeout_s: float = 900) -> dict:
    """Time one configuration in a fresh process; a failure is recorded, never raised."""
    cmd = [sys.executable, "-m", "ocrnet_edge.runtime.bench", json.dumps(asdict(cfg))]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"config": asdict(cfg), "ok": False, "reason": f"timed out after {timeout_s:.0f} s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode == 0 and lines:
        return json.loads(lines[-1])
    err = [ln for ln in p.stderr.strip().splitlines() if ln.strip() and not ln.startswith("INFO:")]
    reason = err[-1] if err else f"worker exited with code {p.returncode}"
    return {"config": asdict(cfg), "ok": False, "reason": reason[:300]}


def configurations(model: str, board, backends: list[str] | None = None, precisions: list[str] | None = None,
                   device: str | None = None) -> list[tuple[str, str, str | None]]:
    """``(backend, precision, device)`` to measure for one model file: every backend (``backends``, else the
    board's order then the registry's others) that is available here and runs this file, at every precision
    it would run it at (``precisions``, else ``auto`` and the board's), each distinct plan once. A backend
    asked for by name but unavailable is kept, so its reason is recorded."""
    from .backends import BACKENDS
    from .engine import EngineOptions
    from .errors import OcrnetError
    from .modelfile import inspect_file

    names = backends or list(dict.fromkeys((*board.backends, *BACKENDS)))
    try:
        info = inspect_file(model)
    except OcrnetError:  # recorded by the worker as a failed configuration, once per thread count
        return [(names[0], "auto", device)]
    out: list[tuple[str, str, str | None]] = []
    for name in names:
        cls = BACKENDS[name]
        if cls.is_available() is not None and not backends:
            continue
        seen = set()
        for p in precisions or ["auto", *board.precision]:
            try:
                plan = cls.plan(Path(model), info, EngineOptions(backend=name, precision=p, device=device,
                                                                 board_precision=tuple(board.precision)))
            except OcrnetError:
                continue
            if (plan.path, plan.precision) not in seen:
                seen.add((plan.path, plan.precision))
                out.append((name, p, device))
    return out


def run_bench(models: list[str], board, threads: list[int] | None = None, backends: list[str] | None = None,
              frames: int = 100, warmup: int = 10, source: str | None = None, sink: bool = False,
              card: str | None = None, progress=None, precisions: list[str] | None = None,
              device: str | None = None) -> dict:
    """Every configuration of models x backends x precisions x threads, each in its own process
    (:func:`configurations` says which backends and precisions).

    Returns:
        A JSON-ready document (schema ``ocrnet-edge-bench/1``) with the machine and one entry per configuration.
    """
    from .system.machine import machine_info

    threads = threads or list(range(1, (os.cpu_count() or 1) + 1))
    source = source or f"synthetic://?seed=0&size={board.camera_width}x{board.camera_height}"
    results = []
    for model in models:
        for backend, precision, dev in configurations(model, board, backends, precisions, device):
            for n in threads:
                cfg = BenchConfig(str(model), backend, n, frames, warmup, source, sink, card, board.name,
                                  float(board.memory_budget_mb), precision, tuple(board.precision), dev)
                if progress:
                    progress(cfg)
                results.append(bench_subprocess(cfg))
    machine = machine_info(board.name)
    return {
        "schema": SCHEMA_VERSION,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "board": board.name,
        "machine": machine,
        "emulated": machine["emulated"],
        "results": results,
    }


def soak(model: str, frames: int, threads: int = 2) -> dict:
    """RSS, threads and open files at frame 1,000, half-way and the end of a long run on pre-drawn synthetic
    frames (run it in a fresh process: :func:`in_subprocess`)."""
    import threading

    from .engine import Engine, EngineOptions
    from .io.scenes import draw_scene
    from .system.memory import rss_mb

    pool = [draw_scene((9, i)).image for i in range(8)]
    marks = {}
    with Engine.open(model, options=EngineOptions(threads=threads)) as e:
        for i in range(frames):
            r = e.process(pool[i % 8])
            r.semantic_frame()
            for d in r.detections[:3]:
                d.mask()
            if i + 1 in (1000, frames // 2, frames):
                marks[i + 1] = [rss_mb(), threading.active_count(), len(os.listdir("/proc/self/fd"))]
    return marks


def group_peak(models: list[str], clip: str, frames: int = 100, threads: int = 2) -> dict:
    """Peak RSS and median per-frame time of one process that runs every model on each frame (fresh process)."""
    import time

    import numpy as np

    from .engine import Engine, EngineOptions
    from .io.sources import open_source
    from .system.memory import peak_rss_mb

    src = open_source(clip)
    pool = [f.image for _, f in zip(range(4), src)]
    src.close()
    base = peak_rss_mb()
    engines = [Engine.open(p, options=EngineOptions(threads=threads)) for p in models]
    times = []
    for i in range(frames + 10):
        t = time.perf_counter()
        for e in engines:
            e.process(pool[i % 4])
        if i >= 10:
            times.append((time.perf_counter() - t) * 1e3)
    return {"peak_rss_mb": peak_rss_mb(), "before_models_mb": base, "ms": float(np.median(times))}


WORKERS = {"bench": lambda kw: bench_one(BenchConfig(**kw)), "soak": lambda kw: soak(**kw),
           "group_peak": lambda kw: group_peak(**kw)}
"""Measurements that must run in a fresh process (their memory is the figure): name -> function of a dict."""


def in_subprocess(worker: str, timeout_s: float = 3600, **kwargs) -> dict:
    """Run one of :data:`WORKERS` in a fresh interpreter; its JSON result, or :class:`RuntimeError` naming
    the worker's last error line."""
    cmd = [sys.executable, "-m", "ocrnet_edge.runtime.bench", worker, json.dumps(kwargs)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode or not lines:
        err = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
        raise RuntimeError(f"{worker} worker failed: {err[-1] if err else p.returncode}")
    return json.loads(lines[-1])


def _worker() -> None:
    name, kwargs = (sys.argv[1], sys.argv[2]) if len(sys.argv) > 2 else ("bench", sys.argv[1])
    try:
        out = WORKERS[name](json.loads(kwargs))
    except Exception as e:  # reported by the parent (a failed configuration, or a failed figure)
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(3)
    print(json.dumps(out))


if __name__ == "__main__":
    _worker()

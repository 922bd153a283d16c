"""``ocrnet-edge run``: source -> preprocess -> invoke -> decode -> sinks, with a live status line.

SIGINT and SIGTERM stop the loop between frames; sinks are then closed normally (the video is
finalized, the JSON flushed) and the run reports :data:`~runtime.errors.EXIT_INTERRUPTED`.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import contract
from .card import ModelCard
from .engine import Engine, EngineOptions
from .errors import OcrnetError
from .io.sinks import BackgroundSink, JsonLinesSink, SemanticSink, Sink, StopRun, VideoSink, WindowSink
from .io.sources import Source, open_source
from .system.boards import Board
from .system.machine import emulated
from .system.memory import MemoryFigures, peak_rss_mb, rss_mb

MAX_CONSECUTIVE_ERRORS = 50
"""Invokes failing in a row before a run gives up."""
STAGES = ("capture", "preprocess", "invoke", "decode", "sinks", "total", "latency")


class MemoryBudgetError(OcrnetError):
    """The model and its buffers do not fit the board's memory budget."""

    exit_code = 6


@dataclass(frozen=True)
class RunOptions:
    """A run.

    Attributes:
        source: Source string (see :mod:`runtime.sources`).
        board: Board profile (threads, memory budget, camera size).
        engine: Backend, threads, device and thresholds.
        realtime: Pace file sources like a camera.
        save: Annotated video path.
        json_out: JSON lines path, or ``-`` for stdout.
        save_semantic: Folder for uint8 label maps per frame.
        show: Open a window.
        serve: ``HOST:PORT`` of the live viewer.
        serve_token: Token the viewer requires (needed when binding beyond localhost).
        semantic_overlay: Draw the semantic map on annotated frames.
        max_frames: Stop after this many frames.
        status: Print a live status line (on a terminal).
    """

    source: str
    board: Board
    engine: EngineOptions = EngineOptions()
    realtime: bool = False
    save: Path | None = None
    json_out: str | None = None
    save_semantic: Path | None = None
    show: bool = False
    serve: str | None = None
    serve_token: str | None = None
    semantic_overlay: bool = True
    max_frames: int | None = None
    status: bool = True


@dataclass
class RunSummary:
    """What a run did and measured."""

    frames: int = 0
    seconds: float = 0.0
    dropped: int = 0
    stage_ms: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    faults: dict[str, int] = field(default_factory=dict)
    memory: MemoryFigures | None = None
    interrupted: bool = False
    source: str = ""
    backend: str = ""
    precision: str = ""
    model: str = ""

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def medians(self) -> dict[str, float]:
        return {k: float(np.median(v)) for k, v in self.stage_ms.items() if v}

    def line(self) -> str:
        med = self.medians()
        stages = " ".join(f"{k} {med[k]:.1f}" for k in ("preprocess", "invoke", "decode", "sinks") if k in med)
        mem = ""
        if self.memory:
            mem = f"; peak RSS {self.memory.peak:.0f}/{self.memory.budget:.0f} MB"
            if self.memory.gpu is not None:
                mem = (f"; peak RSS {self.memory.peak:.0f} + GPU {self.memory.gpu:.0f} = {self.memory.counted:.0f}/"
                       f"{self.memory.budget:.0f} MB" if self.memory.shared else
                       f"{mem} (GPU {self.memory.gpu:.0f} MB beside)")
            mem += " (emulated: the emulator's, budget not enforced)" if self.memory.emulated else ""
        faults = "".join(f", {k} {v}" for k, v in self.faults.items() if v)
        return (f"{self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} fps); median ms: {stages}; "
                f"dropped {self.dropped}{faults}{mem}" + ("; interrupted" if self.interrupted else ""))

    def as_dict(self) -> dict:
        return {"frames": self.frames, "seconds": round(self.seconds, 3), "fps": round(self.fps, 2),
                "dropped": self.dropped, "median_ms": {k: round(v, 3) for k, v in self.medians().items()},
                "faults": self.faults, "memory_mb": self.memory.as_dict() if self.memory else None,
                "interrupted": self.interrupted, "source": self.source, "backend": self.backend,
                "precision": self.precision, "model": self.model}


class _Stop:
    """Turns SIGINT/SIGTERM into a flag checked between frames."""

    def __init__(self):
        self.event = threading.Event()
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, lambda *_: self.event.set())
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def check_budget(engine: Engine, board: Board, after_import: float) -> MemoryFigures:
    """Run one frame and compare the process's memory with the board's budget.

    Under user-mode emulation (QEMU) the process's RSS is the emulator's, 40-70 MB above the same run
    on a board (measured: 166 MB against 117 MB on x86 for the reference model), so the figures are
    recorded and marked, and the budget is not enforced.

    Raises:
        MemoryBudgetError: One line with the figures and the smaller input size to use.
    """
    after_load = rss_mb()
    w, h = contract.input_wh(engine.input_size)
    engine.process(np.zeros((h, w, 3), np.uint8))  # XNNPACK packs weights on the first invoke
    gpu_mb, shared = device_memory(engine)
    figures = MemoryFigures(after_import, after_load, rss_mb(), peak_rss_mb(), float(board.memory_budget_mb),
                            emulated(), gpu_mb, shared)
    if figures.counted > board.memory_budget_mb and not figures.emulated:
        smaller = sorted((s for s in board.sizes if contract.input_area(s) < w * h), key=contract.input_area)
        hint = (f"convert at --size {contract.size_text(smaller[-1])}" if smaller
                else "use a smaller model (lower --width when training)")
        gpu_part = f" with {gpu_mb:.0f} MB on the GPU, which shares the board's memory" if shared and gpu_mb else ""
        raise MemoryBudgetError(
            f"the model needs {figures.counted:.0f} MB{gpu_part} (after import {after_import:.0f}, after loading "
            f"{after_load:.0f}) but board {board.name} allows {board.memory_budget_mb} MB; {hint}"
        )
    return figures


def device_memory(engine: Engine) -> tuple[float | None, bool]:
    """``(GPU memory the backend holds, whether that GPU shares the board's memory)``; ``(None, False)``
    for backends that hold none (asking a CPU backend never touches CUDA)."""
    mb = engine.backend.device_memory_mb()
    if mb is None:
        return None, False
    from .system.gpu import first_gpu

    dev = first_gpu()
    return mb, bool(dev and dev.integrated)


def open_sinks(options: RunOptions, source: Source, semantic_classes: tuple[str, ...]
               ) -> tuple[list[Sink], BackgroundSink | None]:
    """The sinks ``options`` ask for, in writing order, and the video sink (whose drops the summary counts).

    Each opened sink is closed again if a later one cannot be opened.
    """
    b = options.board
    opened: list[Sink] = []
    video = None
    try:
        if options.save:  # in its own thread: a slow disk never stalls a live run
            video = BackgroundSink(VideoSink(options.save, getattr(source, "fps", b.camera_fps),
                                             options.semantic_overlay), drop=source.live)
            opened.append(video)
        if options.save_semantic:
            opened.append(SemanticSink(options.save_semantic))
        if options.show:
            opened.append(WindowSink(semantic_overlay=options.semantic_overlay))
        if options.serve:
            from .io.viewer import Viewer

            opened.append(Viewer.start(options.serve, options.serve_token, budget_mb=b.memory_budget_mb,
                                       semantic_overlay=options.semantic_overlay))
        if options.json_out:
            opened.append(JsonLinesSink(options.json_out, semantic_classes))
    except BaseException:
        for s in opened:
            s.close()
        raise
    return opened, video


def run(model: Path | str, options: RunOptions, card: Path | ModelCard | None = None, out=sys.stderr,
        sinks: Sequence[Sink] = ()) -> RunSummary:
    """Run a model on a source until it ends, ``max_frames`` is reached or a signal arrives.

    Args:
        model: The ``.tflite`` file.
        options: What to run on and where results go.
        card: The model card, when not beside the file.
        out: Where the live status line goes (when it is a terminal).
        sinks: More :class:`~runtime.io.sinks.Sink` objects, written after those ``options`` open, closed
            by the run like them.
    """
    after_import = rss_mb()
    engine = Engine.open(model, card, options.engine)
    summary = RunSummary(source=options.source, backend=engine.backend.name, precision=engine.backend.precision,
                         model=str(engine.path))
    extra, sinks = list(sinks), []
    source = None
    try:
        summary.memory = check_budget(engine, options.board, after_import)
        b = options.board
        source = open_source(options.source, options.realtime, (b.camera_width, b.camera_height), b.camera_fps)
        sinks, video = open_sinks(options, source, engine.card.semantic_classes)
        sinks += extra
        tty = options.status and out.isatty()
        start = time.perf_counter()
        last_status = 0.0
        with _Stop() as stop:
            it = iter(source)
            i = invoke_errors = consecutive = 0
            while not stop.event.is_set():
                t0 = time.perf_counter()
                frame = next(it, None)
                if frame is None:
                    break
                t1 = time.perf_counter()
                try:
                    result = engine.process(frame.image)
                except OcrnetError:
                    # One bad frame (an invoke that raised) does not end a live run; many in a row do.
                    invoke_errors += 1
                    consecutive += 1
                    if consecutive >= MAX_CONSECUTIVE_ERRORS:
                        raise
                    continue
                consecutive = 0
                t2 = time.perf_counter()
                times = {"capture": (t1 - t0) * 1e3, **result.times_ms, "total": (t2 - t0) * 1e3,
                         "latency": (time.monotonic() - frame.timestamp) * 1e3}  # capture to result
                result = dataclasses.replace(result, times_ms=times, sequence=i, elapsed_s=t2 - start)
                try:
                    for sink in sinks:
                        sink.write(frame, result)
                except StopRun:
                    break
                t3 = time.perf_counter()
                summary.seconds = t3 - start
                for k, v in (*times.items(), ("sinks", (t3 - t2) * 1e3)):
                    summary.stage_ms[k].append(v)
                summary.frames = i = i + 1
                summary.dropped = source.dropped
                if tty and t3 - last_status > 0.5:
                    out.write("\r" + summary.line()[:160].ljust(160))
                    out.flush()
                    last_status = t3
                if options.max_frames and i >= options.max_frames:
                    break
            summary.interrupted = stop.event.is_set()
        summary.seconds = time.perf_counter() - start
        summary.faults = {**source.faults, "invoke_errors": invoke_errors,
                          "sink_drops": video.dropped if video else 0}
        if summary.memory:
            summary.memory = dataclasses.replace(summary.memory, peak=peak_rss_mb())
        if tty:
            out.write("\n")
    finally:
        for s in sinks or extra:
            s.close()
        if source is not None:
            source.close()
        engine.close()
    return summary

"""Where results go: JSON lines, an annotated video, semantic label maps, a window (and the browser viewer
of :mod:`.viewer`). Every sink satisfies :class:`Sink`: ``write(frame, result)`` per frame, ``close()`` once;
:func:`~runtime.run.run` holds a list of them.

Files are written under a temporary name and renamed when the sink closes, so a stopped run (Ctrl-C,
SIGTERM) still leaves a finalized video; JSON lines are flushed per frame and readable at any moment.

JSON lines schema (one object per frame)::

    {"frame": int, "timestamp": float (seconds since the run started), "source_frame": int,
     "ms": {"capture": float, "preprocess": float, "invoke": float, "decode": float,
            "total": float (capture start to result), "latency": float (capture to result)},
     "detections": [{"class": str, "class_id": int, "score": float, "box": [x0, y0, x1, y1],
                     "mask": {"size": [H, W], "counts": str} (COCO RLE, when the model has masks),
                     "class_score": float (when the model has masks: the class probability, which --score
                                   applies to; "score" is it times the mask's confidence)}],
     "semantic": {"class": pixel share in [0, 1]} (classes present, when the model has a semantic head),
     "dropped": int (frames the source dropped so far), "name": str (image sources)}
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

import cv2
import numpy as np

from ..errors import EnvironmentMissing, InputError, OutputError
from ..results import FrameResult
from . import rle
from .draw import annotated
from .frame import Frame

FOURCC = {".avi": "MJPG", ".mp4": "mp4v", ".webm": "VP80", ".mkv": "FFV1"}
"""Codecs the OpenCV wheels can write, by extension (no software H.264 encoder in the wheel)."""

JSON_SCHEMA = {
    "type": "object",
    "required": ["frame", "timestamp", "ms", "detections", "dropped"],
    "properties": {
        "frame": {"type": "integer", "minimum": 0},
        "source_frame": {"type": "integer", "minimum": 0},
        "timestamp": {"type": "number"},
        "ms": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0}},
        "detections": {"type": "array", "items": {
            "type": "object", "required": ["class", "class_id", "score", "box"],
            "properties": {
                "class": {"type": "string"}, "class_id": {"type": "integer"},
                "score": {"type": "number", "minimum": 0, "maximum": 1},
                "box": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
                "mask": {"type": "object", "required": ["size", "counts"]},
                "class_score": {"type": "number", "minimum": 0, "maximum": 1},
            }}},
        "semantic": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1}},
        "dropped": {"type": "integer", "minimum": 0},
        "name": {"type": "string"},
    },
}
"""JSON Schema of one line of ``--json-out``."""


@runtime_checkable
class Sink(Protocol):
    """Where one run's results go."""

    def write(self, frame: Frame, result: FrameResult) -> None:
        """Take one frame's result.

        Raises:
            OutputError: The output cannot be written (one line; what was written before is intact).
            StopRun: The user asked this sink to end the run (a window's q or Esc).
        """

    def close(self) -> None:
        """Finalize the output (rename, flush); called once, also after an error."""


class StopRun(Exception):
    """Raised by a sink whose user asked to end the run."""


def frame_record(frame: Frame, result: FrameResult, semantic_classes: tuple[str, ...], masks: bool = True) -> dict:
    """The JSON-lines object of one frame (see the module docstring)."""
    dets = []
    for d in result.detections:
        item = {"class": d.label, "class_id": d.category, "score": round(d.score, 4),
                "box": [round(v, 1) for v in d.box]}
        if masks and d.has_mask:
            item["mask"] = rle.encode(d.mask())
        if d.has_mask:
            item["class_score"] = round(d.class_probability, 4)
        dets.append(item)
    rec = {"frame": result.sequence, "timestamp": round(result.elapsed_s, 4), "source_frame": frame.index,
           "ms": {k: round(v, 3) for k, v in result.times_ms.items()}, "detections": dets, "dropped": frame.dropped}
    if result.semantic is not None:
        counts = np.bincount(result.semantic.ravel(), minlength=len(semantic_classes))
        share = counts / max(1, result.semantic.size)
        names = semantic_classes or tuple(str(i) for i in range(len(counts)))
        rec["semantic"] = {names[i] if i < len(names) else str(i): round(float(v), 4)
                           for i, v in enumerate(share) if v > 0}
    if frame.name:
        rec["name"] = frame.name
    return rec


class JsonLinesSink:
    """One JSON object per frame to a file (or ``-`` for stdout), flushed per frame.

    Args:
        target: A file path, or ``-`` for stdout.
        semantic_classes: Names of the semantic classes, for the per-class pixel shares.
    """

    def __init__(self, target: str, semantic_classes: tuple[str, ...] = ()):
        self.target = target
        self.semantic_classes = semantic_classes
        if target == "-":
            self.f: IO[str] = sys.stdout
        else:
            try:
                self.f = open(target, "w", buffering=1)
            except OSError as e:
                raise OutputError(f"{target}: cannot write JSON lines ({e.strerror})") from None
        self._good = 0

    def write(self, frame: Frame, result: FrameResult) -> None:
        self.write_record(frame_record(frame, result, self.semantic_classes))

    def write_record(self, record: dict) -> None:
        """Append one JSON object as a line."""
        line = json.dumps(record, separators=(",", ":")) + "\n"
        try:
            self.f.write(line)
            self.f.flush()
        except OSError as e:
            self._cut_partial_line()
            raise OutputError(f"{self.target}: writing failed ({e.strerror}); the lines written before are intact") \
                from None
        self._good += len(line)  # bytes: json.dumps writes ASCII only

    def _cut_partial_line(self) -> None:
        # A full disk can leave half a line behind: cut the file back to the last complete one.
        if self.f is sys.stdout:
            return
        try:
            fd = self.f.fileno()
            os.ftruncate(fd, self._good)
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        if self.f is not sys.stdout:
            try:
                self.f.close()
            except OSError:
                self._cut_partial_line()


class VideoSink:
    """An annotated video, written to ``<name>.partial<ext>`` and renamed when closed."""

    def __init__(self, path: str | Path, fps: float, semantic_overlay: bool = True):
        self.path = Path(path)
        ext = self.path.suffix.lower()
        if ext not in FOURCC:
            raise InputError(f"{self.path}: video sinks write {', '.join(sorted(FOURCC))} "
                             "(the OpenCV wheel has no H.264 encoder)")
        self.tmp = self.path.with_name(self.path.stem + ".partial" + ext)
        self.fourcc = cv2.VideoWriter_fourcc(*FOURCC[ext])
        self.fps = fps if fps and fps > 0 else 30.0
        self.semantic_overlay = semantic_overlay
        self.writer: cv2.VideoWriter | None = None
        self.frames = 0
        self._size: tuple[int, int] | None = None
        if not self.path.parent.is_dir() or not os.access(self.path.parent, os.W_OK):
            raise OutputError(f"{self.path.parent}: output folder does not exist or cannot be written")

    def write(self, frame: Frame, result: FrameResult) -> None:
        img = annotated(frame, result, self.semantic_overlay)
        h, w = img.shape[:2]
        if self.writer is None:
            self.writer = cv2.VideoWriter(str(self.tmp), self.fourcc, self.fps, (w, h))
            if not self.writer.isOpened():
                raise OutputError(f"{self.path}: OpenCV cannot write this video format here")
            self._size = (w, h)
        if (w, h) != self._size:  # a source that changed size: keep the file consistent
            img = cv2.resize(img, self._size)
        self.writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
            self.tmp.replace(self.path)


class SemanticSink:
    """uint8 PNG label maps of class ids at the source's resolution, one per frame."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{self.folder}: cannot create the folder ({e.strerror})") from None

    def write(self, frame: Frame, result: FrameResult) -> None:
        sem = result.semantic_frame()
        if sem is None:
            return
        name = (Path(frame.name).stem if frame.name else f"{result.sequence:06d}") + ".png"
        path = self.folder / name
        tmp = self.folder / (name + ".partial.png")
        if not cv2.imwrite(str(tmp), sem):
            raise OutputError(f"{path}: cannot write the label map")
        tmp.replace(path)

    def close(self) -> None:
        pass


class WindowSink:
    """A window (``--show``), when a display exists."""

    def __init__(self, title: str = "ocrnet-edge", semantic_overlay: bool = True):
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise EnvironmentMissing("--show needs a display (no DISPLAY or WAYLAND_DISPLAY); use --serve or --save")
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise EnvironmentMissing("--show needs OpenCV with GUI support; opencv-python-headless has none "
                                     "(use --serve HOST:PORT to watch in a browser)") from None
        self.title = title
        self.semantic_overlay = semantic_overlay

    def write(self, frame: Frame, result: FrameResult) -> None:
        cv2.imshow(self.title, cv2.cvtColor(annotated(frame, result, self.semantic_overlay), cv2.COLOR_RGB2BGR))
        if (cv2.waitKey(1) & 0xFF) in (ord("q"), 27):
            raise StopRun

    def close(self) -> None:
        cv2.destroyWindow(self.title)


class BackgroundSink:
    """Runs a sink's writes in its own thread behind a bounded queue, so a slow disk never stalls a live run.

    With ``drop=True`` (live sources) a full queue drops the frame and counts it; with ``drop=False``
    (files, where every frame must be written) the run waits for the disk instead.

    Args:
        sink: The sink whose writes run in the thread.
        drop: Drop frames when the queue is full instead of waiting.
        depth: Queue length.
    """

    def __init__(self, sink: Sink, drop: bool, depth: int = 8):
        self.sink, self.drop = sink, drop
        self.dropped = 0
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._loop, name=f"sink-{type(sink).__name__}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.error is None:
                try:
                    self.sink.write(*item)
                except BaseException as e:  # reported on the next write or at close
                    self.error = e

    def write(self, frame: Frame, result: FrameResult) -> None:
        if self.error is not None:
            raise self.error
        if self.drop:
            try:
                self._queue.put_nowait((frame, result))
            except queue.Full:
                self.dropped += 1
        else:
            self._queue.put((frame, result))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self.sink.close()
        if self.error is not None:
            raise self.error

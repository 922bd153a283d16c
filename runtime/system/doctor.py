"""``ocrnet-edge doctor``: the board, each backend with available or why not, versions, camera paths."""

from __future__ import annotations

import platform
import sys

import cv2
import numpy as np

from ..backends import BACKENDS
from ..io.sources import gstreamer_available, picamera2_available
from .boards import detect_board, detected_model_string, load_board


def _videoio() -> dict[str, bool]:
    build = cv2.getBuildInformation()
    out = {}
    for name in ("V4L/V4L2", "FFMPEG", "GStreamer"):
        line = next((ln for ln in build.splitlines() if ln.strip().startswith(name + ":")), "")
        out[name] = "YES" in line
    out["GStreamer"] = gstreamer_available()
    return out


def report(board: str = "auto") -> str:
    """The doctor's text."""
    detected = detect_board()
    chosen = load_board(detected if board == "auto" else board)
    lines = [f"board: {chosen.name} ({chosen.description})" + (" [detected]" if board == "auto" else
                                                                 f" [detected: {detected}]")]
    model = detected_model_string()
    if model:
        lines.append(f"device tree: {model}")
    lines.append(f"budget: {chosen.memory_budget_mb} MB, threads {chosen.threads}, input {chosen.input_size}, "
                 f"backends {', '.join(chosen.backends)}")
    lines.append("backends:")
    for name, cls in BACKENDS.items():
        reason = cls.is_available()
        lines.append(f"  {name}: {'available' if reason is None else 'unavailable: ' + reason}")
    lines.append("runtimes:")
    try:
        from ..backends.cpu import interpreter_class

        lines.append(f"  interpreter: {interpreter_class()[2]}")
    except Exception as e:  # report, never fail
        lines.append(f"  interpreter: missing ({e})")
    lines.append(f"  python {platform.python_version()} ({sys.platform}, {platform.machine()}), numpy {np.__version__}, "
                 f"opencv {cv2.__version__}")
    lines.append("camera paths:")
    for name, ok in _videoio().items():
        lines.append(f"  {name}: {'yes' if ok else 'no'}")
    lines.append(f"  picamera2: {'yes' if picamera2_available() else 'no'}")
    return "\n".join(lines)

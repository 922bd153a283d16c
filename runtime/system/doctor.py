"""``ocrnet-edge doctor``: the board, each backend with available or why not, versions, camera paths."""

from __future__ import annotations

import platform
import sys

import cv2
import numpy as np

from ..backends import BACKENDS
from ..contract import size_text
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


def gpu_lines() -> list[str]:
    """CUDA, TensorRT and ONNX Runtime's execution providers: what was found, or why not."""
    from . import gpu

    out = []
    try:
        c = gpu.cuda()
        reason = gpu.gpu_reason()
        dev = gpu.first_gpu() if reason is None else None
        where = f"CUDA runtime {c.runtime_version()} ({c.path})"
        if dev:
            kind = "shares the board's memory" if dev.integrated else "own memory"
            out.append(f"CUDA: {where}; GPU {dev.index}: {dev.name}, sm {dev.compute[0]}.{dev.compute[1]}, "
                       f"{dev.total_mb:.0f} MB ({kind}); fast INT8 {'yes' if dev.fast_int8 else 'no'}, "
                       f"fast FP16 {'yes' if dev.fast_fp16 else 'no'}")
        else:
            out.append(f"CUDA: {where}; {reason}")
    except Exception as e:  # report, never fail
        out.append(f"CUDA: not found ({e})")
    try:
        import tensorrt  # type: ignore

        out.append(f"TensorRT: {tensorrt.__version__} (Python bindings)")
    except ImportError:
        lib = gpu.tensorrt_library_version()
        from ..backends.tensorrt import INSTALL_HINT

        out.append(f"TensorRT: Python bindings not found{f' (libnvinfer {lib} is installed)' if lib else ''}; "
                   f"{INSTALL_HINT}")
    try:
        from ..backends.onnxruntime import _ort

        ort = _ort()
        out.append(f"ONNX Runtime: {ort.__version__}, providers {', '.join(ort.get_available_providers())}")
    except Exception as e:  # report, never fail
        out.append(f"ONNX Runtime: {e}")
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
    lines.append(f"budget: {chosen.memory_budget_mb} MB, threads {chosen.threads}, input {size_text(chosen.input_size)}, "
                 f"backends {', '.join(chosen.backends)}, GPU precision {', '.join(chosen.precision)}")
    lines.append("backends:")
    for name, cls in BACKENDS.items():
        reason = cls.is_available()
        lines.append(f"  {name}: {'available' if reason is None else 'unavailable: ' + reason}")
    lines.append("GPU:")
    lines += [f"  {line}" for line in gpu_lines()]
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

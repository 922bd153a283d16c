"""Backends run tensors; they never decode a model family.

Every backend satisfies :class:`~.base.Backend` (a :class:`typing.Protocol`; tested for each). A plain
dict is the registry.
"""

from __future__ import annotations

from .base import Backend, Plan
from .cpu import CpuBackend
from .edgetpu import EdgeTpuBackend
from .onnxruntime import OnnxRuntimeBackend
from .tensorrt import TensorRtBackend

BACKENDS: dict[str, type[Backend]] = {"cpu": CpuBackend, "edgetpu": EdgeTpuBackend, "onnxruntime": OnnxRuntimeBackend,
                                      "tensorrt": TensorRtBackend}
"""Backend name to class, in the order ``auto`` tries them after the board's own order. Importing a backend
module imports none of its libraries (LiteRT, ONNX Runtime, TensorRT load when a backend is opened)."""

__all__ = ["BACKENDS", "Backend", "CpuBackend", "EdgeTpuBackend", "OnnxRuntimeBackend", "Plan", "TensorRtBackend"]

"""Backends run tensors; they never decode a model family.

Each backend class offers ``is_available() -> str | None`` (None when usable, else the reason),
is constructed with a model path, and exposes ``input_view()``, ``invoke() -> dict[name, ndarray]``,
``output_quant(name)``, ``tensor_index`` for binding, and ``close()``. A plain dict is the registry.
"""

from __future__ import annotations

from .cpu import CpuBackend
from .edgetpu import EdgeTpuBackend

BACKENDS = {"cpu": CpuBackend, "edgetpu": EdgeTpuBackend}
"""Backend name to class."""

__all__ = ["BACKENDS", "CpuBackend", "EdgeTpuBackend"]

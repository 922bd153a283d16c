"""Backends run tensors; they never decode a model family.

Every backend satisfies :class:`~.base.Backend` (a :class:`typing.Protocol`; tested for each). A plain
dict is the registry.
"""

from __future__ import annotations

from .base import Backend
from .cpu import CpuBackend
from .edgetpu import EdgeTpuBackend

BACKENDS: dict[str, type[Backend]] = {"cpu": CpuBackend, "edgetpu": EdgeTpuBackend}
"""Backend name to class."""

__all__ = ["BACKENDS", "Backend", "CpuBackend", "EdgeTpuBackend"]

"""The contract every backend satisfies, as a :class:`typing.Protocol` that :class:`~runtime.engine.Engine`
is typed with. A backend runs tensors and never decodes a model family."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from ..quant import Quant


@dataclass(frozen=True)
class Plan:
    """What a backend would run for a model file it was given, decided before anything is loaded.

    Attributes:
        path: The file it runs: the one given, or the build of another format or precision that
            ``convert`` wrote beside it (``x.onnx`` for ``x_int8.tflite`` on a GPU).
        info: That file's inspection (:class:`~runtime.modelfile.ModelFileInfo` or
            :class:`~runtime.onnxfile.OnnxFileInfo`).
        precision: What it runs at: ``int8``, ``float32`` (a TFLite file's own types), or ``int8``,
            ``fp16``, ``fp32`` on a GPU.
        notes: What the choice changed, each said once (another file, a precision fallen back).
        extra: Backend-specific settings (reference kernels, a device).
    """

    path: Path
    info: Any
    precision: str
    notes: tuple[str, ...] = ()
    extra: Mapping[str, Any] | None = None


@runtime_checkable
class Backend(Protocol):
    """A model file opened on one kind of hardware.

    Attributes:
        name: The registry name (``cpu``, ``edgetpu``, ``onnxruntime``, ``tensorrt``).
        formats: Model file formats it runs (``tflite``, ``onnx``).
        runtime_version: The interpreter package and version, for reports.
        precision: What it runs at (see :class:`Plan`).
        served_by: What actually runs the model (XNNPACK, an execution provider, a GPU), for reports.
        threads: CPU threads the interpreter uses.
        tensor_index: Tensor name to index, for binding outputs by the card's tensor names.
        signature_outputs: Signature output name to tensor index (empty without a signature).
    """

    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]
    runtime_version: str
    precision: str
    served_by: str
    threads: int
    tensor_index: Mapping[str, int]
    signature_outputs: Mapping[str, int]

    @staticmethod
    def is_available() -> str | None:
        """None when this backend can run here, else why not (one line)."""

    @classmethod
    def plan(cls, path: Path, info: Any, options: Any) -> Plan:
        """What this backend would run for ``path`` under ``options`` (an
        :class:`~runtime.engine.EngineOptions`), without loading anything.

        Raises:
            ModelError: It cannot run this file (another format with no build of its own beside it, an Edge
                TPU build on the CPU...), one line saying why.
        """

    @classmethod
    def open(cls, plan: Plan, options: Any) -> Backend:
        """Load what :meth:`plan` decided.

        Raises:
            EnvironmentMissing: Its library or device is missing (exit 6, with what to install).
            ModelError: The runtime refused the model.
        """

    def device_memory_mb(self) -> float | None:
        """Accelerator memory this backend holds beyond the process's RSS (GPU buffers, engine), or None."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of the single input tensor."""

    @property
    def input_dtype(self) -> np.dtype:
        """Element type of the input tensor."""

    def bind(self, names_to_index: Mapping[str, int]) -> None:
        """Choose which output tensors :meth:`invoke` returns, under which names."""

    def output_quant(self, name: str) -> Quant:
        """Quantization of a bound output."""

    def input_view(self) -> np.ndarray:
        """A writable view of the input tensor; dropped before :meth:`invoke`."""

    def invoke(self) -> dict[str, np.ndarray]:
        """Run the model; views of the bound outputs, valid until the next invoke.

        Raises:
            ModelError: The interpreter failed (one line).
        """

    def close(self) -> None:
        """Release the interpreter and any device."""

"""The contract every backend satisfies, as a :class:`typing.Protocol` that :class:`~runtime.engine.Engine`
is typed with. A backend runs tensors and never decodes a model family."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from ..quant import Quant


@runtime_checkable
class Backend(Protocol):
    """A model file opened on one kind of hardware.

    Attributes:
        name: The registry name (``cpu``, ``edgetpu``).
        runtime_version: The interpreter package and version, for reports.
        threads: CPU threads the interpreter uses.
        tensor_index: Tensor name to index, for binding outputs by the card's tensor names.
        signature_outputs: Signature output name to tensor index (empty without a signature).
    """

    name: ClassVar[str]
    runtime_version: str
    threads: int
    tensor_index: Mapping[str, int]
    signature_outputs: Mapping[str, int]

    @staticmethod
    def is_available() -> str | None:
        """None when this backend can run here, else why not (one line)."""

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

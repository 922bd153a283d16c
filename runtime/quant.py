"""Affine quantization of a tensor, as TFLite records it: ``real = scale * (q - zero_point)``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Quant:
    """Affine quantization of a tensor: ``real = scale * (q - zero_point)``.

    A ``Quant`` of ``None`` scale means the tensor is already real-valued (float model).
    """

    scale: float | None = None
    zero_point: int = 0

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """Real values of ``q`` as float32."""
        if self.scale is None:
            return np.asarray(q, dtype=np.float32)
        return (q.astype(np.float32) - self.zero_point) * np.float32(self.scale)

    def threshold(self, value: float, dtype: np.dtype) -> float | int:
        """The smallest raw value of ``dtype`` whose real value is >= ``value``."""
        if self.scale is None:
            return value
        info = np.iinfo(dtype)
        q = int(np.ceil(value / self.scale - 1e-6)) + self.zero_point
        return int(np.clip(q, info.min, info.max + 1))


FLOAT = Quant()
"""The quantization of a real-valued (float) tensor."""

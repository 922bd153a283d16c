"""Decoding, one module per task: ``detect`` (boxes, thresholds, NMS), ``semantic`` (argmax, mapping to the
frame), ``instance`` (masks from coefficients and prototypes), and ``frame`` joining them into a
:class:`~runtime.results.FrameResult`."""

from .detect import DecodeOptions

__all__ = ["DecodeOptions"]

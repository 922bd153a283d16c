"""Semantic decoding: argmax at the model's resolution, mapped to the frame on demand."""

from __future__ import annotations

import cv2
import numpy as np

from ..preprocess import Transform
from ..quant import FLOAT, Quant


def semantic_argmax(logits: np.ndarray) -> np.ndarray:
    """(h, w) uint8 class ids from (h, w, C) or (1, h, w, C) logits, raw or float.

    The argmax of raw int8 logits equals that of the dequantized ones (one positive scale per
    tensor), so nothing is dequantized.
    """
    return np.argmax(logits.reshape(logits.shape[-3:]), axis=-1).astype(np.uint8)


def semantic_to_frame(logits: np.ndarray, transform: Transform, stride: float, quant: Quant = FLOAT) -> np.ndarray:
    """(frame_h, frame_w) uint8 class ids, resampling the logits (not the ids) bilinearly.

    Args:
        logits: (h, w, C) or (1, h, w, C) semantic logits, raw or float.
        transform: Input-to-frame transform of the frame.
        stride: Input pixels per logit cell.
        quant: Quantization of ``logits``.
    """
    grid = np.ascontiguousarray(quant.dequantize(logits.reshape(logits.shape[-3:])))
    up = cv2.warpAffine(
        grid, transform.frame_to_grid(stride), (transform.frame_w, transform.frame_h),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
    )
    return np.argmax(up.reshape(transform.frame_h, transform.frame_w, -1), axis=-1).astype(np.uint8)


def labels_to_frame(labels: np.ndarray, transform: Transform, stride: float) -> np.ndarray:
    """(frame_h, frame_w) uint8 class ids from a class-id map computed inside the graph (nearest)."""
    grid = labels.reshape(labels.shape[-2:]).astype(np.uint8)
    return cv2.warpAffine(
        grid, transform.frame_to_grid(stride), (transform.frame_w, transform.frame_h),
        flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
    )

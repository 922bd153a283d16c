"""Instance masks: the attention fusion of detection and segmentation, after NMS.

For each kept detection, its location's mask coefficients (from the detection branch) weight the
mask prototypes (from the segmentation branch): ``logits = coeffs @ protos``. Only kept detections
are assembled, at prototype resolution, cropped to their box; mapping to frame pixels happens only
when a consumer asks for a mask.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..preprocess import Transform
from .detect import FLOAT, Quant


def assemble_masks(
    coeffs: np.ndarray,
    protos: np.ndarray,
    locations: np.ndarray,
    stride: int,
    coeffs_quant: Quant = FLOAT,
    protos_quant: Quant = FLOAT,
) -> np.ndarray:
    """Mask logits of the kept detections at prototype resolution.

    The crop to each box happens when a mask is mapped to the frame (:func:`mask_to_frame` samples
    the box only): cropping here, at prototype resolution, would bleed the outside into the border
    cells under bilinear sampling and shrink every mask by half a cell.

    Args:
        coeffs: (N, K) or (1, N, K) per-location coefficients, raw or float.
        protos: (h, w, K) or (1, h, w, K) prototypes, raw or float.
        locations: (D,) location index of each kept detection.
        stride: Input pixels per prototype cell.
        coeffs_quant: Quantization of ``coeffs``.
        protos_quant: Quantization of ``protos``.

    Returns:
        (D, h, w) float32 logits.
    """
    protos = protos.reshape(protos.shape[-3:])
    h, w, k = protos.shape
    d = len(locations)
    if d == 0:
        return np.zeros((0, h, w), np.float32)
    c = coeffs_quant.dequantize(coeffs.reshape(-1, coeffs.shape[-1])[locations])
    p = protos_quant.dequantize(protos.reshape(-1, k))
    logits = (c @ p.T).reshape(d, h, w)
    return logits


def mask_to_frame(logits: np.ndarray, box_frame: np.ndarray, transform: Transform, stride: int) -> np.ndarray:
    """One detection's mask at frame resolution.

    Args:
        logits: (h, w) mask logits at prototype resolution (from :func:`assemble_masks`).
        box_frame: (4,) x0, y0, x1, y1 of the detection in frame pixels.
        transform: Input-to-frame transform of the frame.
        stride: Input pixels per prototype cell.

    Returns:
        (frame_h, frame_w) bool mask, True inside the object (sigmoid > 0.5), False outside its box.
    """
    fh, fw = transform.frame_h, transform.frame_w
    out = np.zeros((fh, fw), bool)
    x0, y0 = int(np.floor(box_frame[0])), int(np.floor(box_frame[1]))
    x1, y1 = int(np.ceil(box_frame[2])), int(np.ceil(box_frame[3]))
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, fw), min(y1, fh)
    if x1 <= x0 or y1 <= y0:
        return out
    m = transform.frame_to_grid(stride).copy()
    # Sample only the box: shift the affine so that output pixel (0, 0) is frame pixel (x0, y0).
    m[:, 2] += m[:, 0] * x0 + m[:, 1] * y0
    patch = cv2.warpAffine(
        np.ascontiguousarray(logits, dtype=np.float32), m, (x1 - x0, y1 - y0),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
    )
    out[y0:y1, x0:x1] = patch > 0
    return out

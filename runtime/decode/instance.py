"""Instance masks: the attention fusion of detection and segmentation, after NMS.

For each kept detection, its location's mask coefficients (from the detection branch) weight the
mask prototypes (from the segmentation branch): ``logits = coeffs @ protos``. Only kept detections
are assembled, at prototype resolution, cropped to their box; mapping to frame pixels happens only
when a consumer asks for a mask.

Each mask also gives a confidence, the mean probability of its foreground cells inside the box (SOLOv2's
"maskness", Wang et al. 2020), which the decoder multiplies into the detection's score: a box whose mask is
blurred or empty ranks below one with a crisp mask at the same class probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..preprocess import Transform
from ..quant import FLOAT, Quant


@dataclass(frozen=True)
class MaskCrop:
    """One detection's mask logits over the prototype cells of its box (plus a one-cell margin).

    Attributes:
        x0: Column of the crop's first cell in the prototype grid.
        y0: Row of the crop's first cell.
        logits: (h, w) float32 logits of the cells.
    """

    x0: int
    y0: int
    logits: np.ndarray


def assemble_masks(
    coeffs: np.ndarray,
    protos: np.ndarray,
    locations: np.ndarray,
    boxes: np.ndarray,
    stride: float,
    coeffs_quant: Quant = FLOAT,
    protos_quant: Quant = FLOAT,
) -> list[MaskCrop]:
    """Mask logits of the kept detections, computed only over the prototype cells of each box.

    The cost follows the boxes' areas, not the number of detections times the prototype map. A margin
    of one cell is kept so that bilinear sampling at the box's edge sees real neighbours; the exact
    crop to the box happens when the mask is mapped to the frame (:func:`mask_to_frame`).

    Args:
        coeffs: (N, K) or (1, N, K) per-location coefficients, raw or float.
        protos: (h, w, K) or (1, h, w, K) prototypes, raw or float.
        locations: (D,) location index of each kept detection.
        boxes: (D, 4) x0, y0, x1, y1 in input pixels.
        stride: Input pixels per prototype cell.
        coeffs_quant: Quantization of ``coeffs``.
        protos_quant: Quantization of ``protos``.

    Returns:
        One :class:`MaskCrop` per detection.
    """
    protos = protos.reshape(protos.shape[-3:])
    h, w, k = protos.shape
    if len(locations) == 0:
        return []
    c = coeffs_quant.dequantize(coeffs.reshape(-1, coeffs.shape[-1])[locations])
    p = protos_quant.dequantize(protos)  # once per frame (h*w*K values), not once per detection
    cells = np.floor(boxes / stride - 0.5).astype(np.int64).tolist()
    out = []
    for i, (cx0, cy0, cx1, cy1) in enumerate(cells):
        x0, y0 = max(cx0, 0), max(cy0, 0)
        x1, y1 = max(min(cx1 + 2, w), x0 + 1), max(min(cy1 + 2, h), y0 + 1)
        out.append(MaskCrop(x0, y0, p[y0:y1, x0:x1] @ c[i]))
    return out


def mask_confidence(crops: list[MaskCrop], boxes: np.ndarray, stride: float) -> np.ndarray:
    """How sure each mask is of its own pixels: the mean probability of its foreground cells inside the box.

    A cell counts when its centre lies inside the box; a box narrower or shorter than a cell counts the
    crop's cells instead. A mask with no cell above 0.5 has confidence 0.

    Args:
        crops: Mask logits from :func:`assemble_masks`.
        boxes: (D, 4) x0, y0, x1, y1 in input pixels, the boxes the crops were cut for.
        stride: Input pixels per prototype cell.

    Returns:
        (D,) float32 in [0.5, 1], or 0 for an empty mask.
    """
    out = np.zeros(len(crops), np.float32)
    if not crops:
        return out
    b = np.asarray(boxes, np.float64)
    # Cells whose centre ((u + 0.5) * stride) lies inside [x0, x1]: u from ceil(x0 / stride - 0.5) to floor(x1 / ...).
    first = np.ceil(b[:, :2] / stride - 0.5).astype(np.int64).tolist()
    last = np.floor(b[:, 2:] / stride - 0.5).astype(np.int64).tolist()
    parts = []
    for crop, (u0, v0), (u1, v1) in zip(crops, first, last):
        h, w = crop.logits.shape
        c0, c1 = max(u0 - crop.x0, 0), min(u1 - crop.x0 + 1, w)
        r0, r1 = max(v0 - crop.y0, 0), min(v1 - crop.y0 + 1, h)
        parts.append((crop.logits[r0:r1, c0:c1] if c1 > c0 and r1 > r0 else crop.logits).ravel())
    # One pass over every mask's cells (the per-mask work is a slice): none of the parts is empty.
    sizes = np.fromiter((len(x) for x in parts), np.int64, len(parts))
    logits = np.concatenate(parts)
    fg = logits > 0
    prob = np.where(fg, 1.0 / (1.0 + np.exp(-np.maximum(logits, 0))), 0.0)  # exp of at most 0: no overflow
    starts = np.cumsum(sizes) - sizes
    count = np.add.reduceat(fg.astype(np.float64), starts)
    np.divide(np.add.reduceat(prob, starts), count, out=out, where=count > 0, casting="unsafe")
    return out


def mask_to_frame(crop: MaskCrop, box_frame: np.ndarray, transform: Transform, stride: float) -> np.ndarray:
    """One detection's mask at frame resolution.

    Args:
        crop: The detection's logits from :func:`assemble_masks`.
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
    # Output pixel (0, 0) is frame pixel (x0, y0); grid coordinates are relative to the crop's first cell.
    m[:, 2] += m[:, 0] * x0 + m[:, 1] * y0 - np.array([crop.x0, crop.y0], dtype=np.float64)
    patch = cv2.warpAffine(
        np.ascontiguousarray(crop.logits, dtype=np.float32), m, (x1 - x0, y1 - y0),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
    )
    out[y0:y1, x0:x1] = patch > 0
    return out

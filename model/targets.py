"""Training targets: FCOS-style assignment of ground truth to detection locations, and batches.

A location is a positive for an object when its centre lies inside the object's box and within
``CENTER_RADIUS`` strides of the box centre, and the object's largest distance from it falls in the
location's level range. Ties go to the smaller object. An object that got no location (a thin
sliver left by occlusion) takes the nearest free stride-8 location, so every object is learned.
"""

from __future__ import annotations

import numpy as np

from ocrnet_edge.runtime.contract import SEG_STRIDE
from ocrnet_edge.runtime.decode.detect import anchor_points

CENTER_RADIUS = 1.5
LEVEL_LIMITS = 4.0
"""Level ``s`` takes objects whose largest location-to-edge distance is under ``LEVEL_LIMITS * s``."""


def assign(boxes: np.ndarray, size: int, strides: tuple[int, ...]) -> np.ndarray:
    """Index of the object each location learns from, or -1.

    Args:
        boxes: (G, 4) x0, y0, x1, y1 in input pixels.
        size: Input side.
        strides: Pyramid strides.

    Returns:
        (N,) int64 object index per location.
    """
    centres, st = anchor_points(size, tuple(strides))
    n = len(centres)
    if len(boxes) == 0:
        return np.full(n, -1, np.int64)
    cx, cy = centres[:, 0:1], centres[:, 1:2]
    lft, t = cx - boxes[None, :, 0], cy - boxes[None, :, 1]
    r, b = boxes[None, :, 2] - cx, boxes[None, :, 3] - cy
    inside = np.minimum(np.minimum(lft, t), np.minimum(r, b)) > 0
    bcx, bcy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    rad = CENTER_RADIUS * st[:, None]
    central = (np.abs(cx - bcx[None]) < rad) & (np.abs(cy - bcy[None]) < rad)
    far = np.maximum(np.maximum(lft, t), np.maximum(r, b))
    lower = np.where(st == min(strides), 0.0, LEVEL_LIMITS * st / 2)[:, None]
    upper = np.where(st == max(strides), np.inf, LEVEL_LIMITS * st)[:, None]
    ok = inside & central & (far >= lower) & (far < upper)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    cost = np.where(ok, area[None, :], np.inf)
    owner = np.argmin(cost, axis=1)
    owner = np.where(np.isfinite(cost[np.arange(n), owner]), owner, -1).astype(np.int64)
    finest = st == min(strides)
    for g in np.setdiff1d(np.arange(len(boxes)), owner):
        d = (centres[:, 0] - bcx[g]) ** 2 + (centres[:, 1] - bcy[g]) ** 2
        d = np.where(finest & (owner < 0), d, np.inf)
        i = int(np.argmin(d))
        if np.isfinite(d[i]):
            owner[i] = g
    return owner


def soft_masks(masks: np.ndarray, stride: int = SEG_STRIDE) -> np.ndarray:
    """(I, H, W) bool masks to (I, H/stride, W/stride) float32 coverage (area-averaged)."""
    i, h, w = masks.shape
    if i == 0:
        return np.zeros((0, h // stride, w // stride), np.float32)
    m = masks.reshape(i, h // stride, stride, w // stride, stride).astype(np.float32)
    return m.mean(axis=(2, 4))


def image_targets(
    boxes: np.ndarray,
    categories: np.ndarray,
    masks: np.ndarray,
    semantic: np.ndarray,
    size: int,
    strides: tuple[int, ...],
    max_mask_samples: int,
    rng: np.random.Generator,
    mask_valid: np.ndarray | None = None,
    ignore: np.ndarray | None = None,
    has_boxes: bool = True,
) -> dict[str, np.ndarray]:
    """All targets of one image (already at the input size).

    Args:
        boxes, categories, masks: The image's objects at the input size.
        semantic: (S, S) semantic ids, 255 where nothing is taught.
        size, strides: Input side and pyramid strides.
        max_mask_samples: Positive locations that get a mask loss.
        rng: Sampling of those locations.
        mask_valid: (I,) which objects have a mask (default: all).
        ignore: (S, S) crowd regions: their locations are neither positive nor negative.
        has_boxes: The image's boxes are complete; without them detection learns nothing here.

    Returns:
        ``cls_label`` (N,) int32 class or -1; ``cls_weight`` (N,) float32 (0: not taught);
        ``box_target`` (N, 4) float32 pixels; ``mask_loc`` (P,) int32 sampled positive locations;
        ``mask_target`` (P, h, w) float32 coverage of their object at prototype resolution;
        ``mask_box`` (P, 4) float32 object box in prototype cells; ``mask_weight`` (P,) float32 (0 for
        padding); ``semantic`` (S, S) int32 (255 ignored).
    """
    centres, _ = anchor_points(size, tuple(strides))
    n_loc = len(centres)
    owner = assign(boxes, size, strides) if has_boxes else np.full(n_loc, -1, np.int64)
    pos = owner >= 0
    cls_label = np.where(pos, categories[np.maximum(owner, 0)] if len(boxes) else -1, -1).astype(np.int32)
    cls_weight = np.full(n_loc, 1.0 if has_boxes else 0.0, np.float32)
    if ignore is not None and has_boxes and ignore.any():
        cx = np.clip(centres[:, 0].astype(np.int64), 0, size - 1)
        cy = np.clip(centres[:, 1].astype(np.int64), 0, size - 1)
        cls_weight[ignore[cy, cx] & ~pos] = 0.0
    box_target = np.zeros((n_loc, 4), np.float32)
    if len(boxes):
        box_target[pos] = boxes[owner[pos]]
    g = size // SEG_STRIDE
    p = max_mask_samples
    mask_loc = np.zeros(p, np.int32)
    mask_target = np.zeros((p, g, g), np.float32)
    mask_box = np.zeros((p, 4), np.float32)
    mask_weight = np.zeros(p, np.float32)
    valid = np.ones(len(boxes), bool) if mask_valid is None else np.asarray(mask_valid, bool)
    locs = np.nonzero(pos & (valid[np.maximum(owner, 0)] if len(boxes) else pos))[0]
    if len(locs):
        if len(locs) > p:
            locs = rng.choice(locs, p, replace=False)
        soft = soft_masks(masks)
        k = len(locs)
        mask_loc[:k] = locs
        mask_target[:k] = soft[owner[locs]]
        mask_box[:k] = boxes[owner[locs]] / SEG_STRIDE
        mask_weight[:k] = 1.0
    return {
        "cls_label": cls_label,
        "cls_weight": cls_weight,
        "box_target": box_target,
        "mask_loc": mask_loc,
        "mask_target": mask_target,
        "mask_box": mask_box,
        "mask_weight": mask_weight,
        "semantic": semantic.astype(np.int32),
    }

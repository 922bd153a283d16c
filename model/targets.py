"""Training targets: FCOS-style assignment of ground truth to detection locations, and batches.

A location is a positive for an object when its centre lies inside the object's box and within
``CENTER_RADIUS`` strides of the box centre, and the object's largest distance from it falls in the
location's level range. Ties go to the smaller object. An object that got no location (a thin
sliver left by occlusion) takes the nearest free stride-8 location, so every object is learned.

With the task-aligned assigner (``LossConfig.assigner == "tal"``, :func:`model.losses.task_aligned_losses`)
the positives are chosen inside the training graph from the predictions; this module then only pads
each image's objects to :data:`MAX_OBJECTS` for it, and samples the mask locations from the static set
of places where that assigner may put positives (:func:`candidates`).
"""

from __future__ import annotations

import numpy as np

from ocrnet_edge.runtime.contract import SEG_STRIDE, InputSize, input_wh
from ocrnet_edge.runtime.decode.detect import anchor_points

CENTER_RADIUS = 1.5
LEVEL_LIMITS = 4.0
"""Level ``s`` takes objects whose largest location-to-edge distance is under ``LEVEL_LIMITS * s``."""
TAL_CENTER_RADIUS = 2.5
"""Task-aligned candidates of an object: the locations, on every level, whose centre lies inside its box
and within this many strides of the box centre. The in-graph assigner picks its positives among them,
and the mask samples of ``tal`` runs are drawn from the same set, so the mask coefficients are trained
wherever the detector may be taught to fire."""
MAX_OBJECTS = 64
"""Objects per image the task-aligned assigner sees (``gt_boxes`` (G, 4), ``gt_labels`` (G,) padded to
it, so the graph's shapes are static). An image with more keeps its ``MAX_OBJECTS`` largest; the
locations inside the boxes of the others (and of no kept one) are neither positive nor negative
(``cls_weight`` 0), so those objects are not taught as background."""
ASSIGNERS = ("fcos", "tal")
"""Label assignments :func:`image_targets` prepares for (``LossConfig.assigner``)."""


def _owners(ok: np.ndarray, boxes: np.ndarray, centres: np.ndarray, st: np.ndarray) -> np.ndarray:
    """(N,) the object each location learns from among those ``ok`` (N, G) allows: the smallest; an object
    left without a location takes the nearest free finest-level one; -1 for none."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    cost = np.where(ok, area[None, :], np.inf)
    owner = np.argmin(cost, axis=1)
    owner = np.where(np.isfinite(cost[np.arange(len(centres)), owner]), owner, -1).astype(np.int64)
    finest = st == st.min()
    bcx, bcy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    for g in np.setdiff1d(np.arange(len(boxes)), owner):
        d = (centres[:, 0] - bcx[g]) ** 2 + (centres[:, 1] - bcy[g]) ** 2
        d = np.where(finest & (owner < 0), d, np.inf)
        i = int(np.argmin(d))
        if np.isfinite(d[i]):
            owner[i] = g
    return owner


def assign(boxes: np.ndarray, size: InputSize, strides: tuple[int, ...]) -> np.ndarray:
    """Index of the object each location learns from, or -1.

    Args:
        boxes: (G, 4) x0, y0, x1, y1 in input pixels.
        size: Input size: a side, or ``(width, height)``.
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
    return _owners(ok, boxes, centres, st)


def level_shares(records, size: InputSize, strides: tuple[int, ...]) -> np.ndarray:
    """(L,) share of the objects of ``records`` that each level of the pyramid learns, finest first, by the level
    ranges of :func:`assign`: half an object's largest side once its image is letterboxed to ``size`` (the
    largest distance from its centre to an edge) against :data:`LEVEL_LIMITS` strides. Augmentation zooms around
    that scale. ``records`` need ``boxes`` (pixels), ``width`` and ``height``; all zeros when none has a box."""
    in_w, in_h = input_wh(size)
    st = np.sort(np.asarray(strides, np.float64))
    counts = np.zeros(len(st), np.int64)
    for r in records:
        if len(r.boxes):
            half = np.max(r.boxes[:, 2:] - r.boxes[:, :2], axis=1) * min(in_w / r.width, in_h / r.height) / 2
            counts += np.bincount(np.searchsorted(LEVEL_LIMITS * st[:-1], half, side="right"), minlength=len(st))
    return counts / max(int(counts.sum()), 1)


def box_set_det_head(shares) -> str:
    """The detection head of a model that learns boxes alone, from its training boxes' :func:`level_shares`
    (finest level first): ``decoupled``, whose bottom-up path brings stride-8 detail to the coarse levels that take
    large objects, where more boxes go to the coarsest level than to the finest; else ``shared``, which costs less
    and was no worse where the boxes were small (README, ``--det-head``)."""
    return "decoupled" if float(shares[-1]) > float(shares[0]) else "shared"


LARGE_BOX_SCALE = 1.3
"""The input side of a model that learns boxes alone with the ``decoupled`` head (objects mostly large) against the
default's: 416 for 320. On kangaroo, seeds 0 to 2, run-path box AP50 0.884, 0.859 and 0.818 against 0.773, 0.852
and 0.759 at 320, box AP 0.460, 0.462 and 0.460 against 0.427, 0.446 and 0.402; on Penn-Fudan's boxes, seed 0, 0.908
against 0.874
(docs/recipe_runs.md, "Sets of large boxes at 416"). Its int8 invoke is 1.30x the reference model's, against 0.80x
at 320 and the fused default's 1.18x (one Intel Xeon, the same run), within the issue's 1.5x."""


def box_set_side(side: int, head: str, multiple: int = 32) -> int:
    """The square side a model that learns boxes alone trains at, with the head :func:`box_set_det_head` gave it:
    :data:`LARGE_BOX_SCALE` times ``side`` (to a ``multiple``) for the ``decoupled`` head of a set of large
    objects, whose coarse levels gain from the finer detail; ``side`` for the ``shared`` head of small objects
    (BCCD's cells at 512x384 lost 5 points of box AP50 against 384x288: README, ``--size``)."""
    return int(round(side * LARGE_BOX_SCALE / multiple)) * multiple if head == "decoupled" else side


def box_set_assigner(head: str) -> str:
    """The label assignment of a model that learns boxes alone, with the head :func:`box_set_det_head` gave it:
    task-aligned (``tal``) with the ``shared`` head of a set of mostly small objects, so each of many small, touching
    objects keeps the locations that predict it best (the static assigner gives a location inside two boxes to the
    smaller one); static (``fcos``) with the ``decoupled`` head of a set of large objects (README, ``--assigner``)."""
    return "tal" if head == "shared" else "fcos"


def candidates(boxes: np.ndarray, size: InputSize, strides: tuple[int, ...],
               radius: float = TAL_CENTER_RADIUS) -> np.ndarray:
    """Index of the object each location is a task-aligned candidate of, or -1.

    A candidate's centre lies inside the object's box and within ``radius`` strides of its centre, on
    any level (the superset of the in-graph assigner's positives); where several objects claim a
    location the smaller takes it, as in :func:`assign`. An object that got none (a sliver between
    location centres) takes the nearest free finest-level location, as the in-graph assigner does.

    Args:
        boxes: (G, 4) x0, y0, x1, y1 in input pixels.
        size: Input size: a side, or ``(width, height)``.
        strides: Pyramid strides.
        radius: Distance to the box centre, in strides of the location's level.

    Returns:
        (N,) int64 object index per location.
    """
    centres, st = anchor_points(size, tuple(strides))
    n = len(centres)
    if len(boxes) == 0:
        return np.full(n, -1, np.int64)
    cx, cy = centres[:, 0:1], centres[:, 1:2]
    inside = np.minimum(np.minimum(cx - boxes[None, :, 0], cy - boxes[None, :, 1]),
                        np.minimum(boxes[None, :, 2] - cx, boxes[None, :, 3] - cy)) > 0
    bcx, bcy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    rad = radius * st[:, None]
    ok = inside & (np.abs(cx - bcx[None]) < rad) & (np.abs(cy - bcy[None]) < rad)
    return _owners(ok, boxes, centres, st)


def padded_objects(boxes: np.ndarray, categories: np.ndarray, centres: np.ndarray,
                   limit: int = MAX_OBJECTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An image's objects padded to ``limit`` for the in-graph assigner.

    Returns:
        ``gt_boxes`` (limit, 4) float32 pixels (0 for padding), ``gt_labels`` (limit,) int32 (-1 for
        padding), and ``(N,)`` bool: the locations inside a dropped object's box and inside no kept one
        (when the image holds more than ``limit`` objects, the smallest are dropped).
    """
    gt_boxes = np.zeros((limit, 4), np.float32)
    gt_labels = np.full(limit, -1, np.int32)
    dropped = np.zeros(len(centres), bool)
    keep = np.arange(len(boxes))
    if len(boxes) > limit:
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        keep = np.sort(np.argsort(-area, kind="stable")[:limit])
        cx, cy = centres[:, 0:1], centres[:, 1:2]
        inside = ((cx > boxes[None, :, 0]) & (cy > boxes[None, :, 1])
                  & (cx < boxes[None, :, 2]) & (cy < boxes[None, :, 3]))
        kept = np.zeros(len(boxes), bool)
        kept[keep] = True
        dropped = inside[:, ~kept].any(axis=1) & ~inside[:, kept].any(axis=1)
    gt_boxes[: len(keep)] = boxes[keep]
    gt_labels[: len(keep)] = categories[keep]
    return gt_boxes, gt_labels, dropped


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
    size: InputSize,
    strides: tuple[int, ...],
    max_mask_samples: int,
    rng: np.random.Generator,
    mask_valid: np.ndarray | None = None,
    ignore: np.ndarray | None = None,
    has_boxes: bool = True,
    assigner: str = "fcos",
) -> dict[str, np.ndarray]:
    """All targets of one image (already at the input size).

    Args:
        boxes, categories, masks: The image's objects at the input size.
        semantic: (H, W) semantic ids, 255 where nothing is taught.
        size, strides: Input size (a side, or ``(width, height)``) and pyramid strides.
        max_mask_samples: Positive locations that get a mask loss.
        rng: Sampling of those locations.
        mask_valid: (I,) which objects have a mask (default: all).
        ignore: (H, W) crowd regions: their locations are neither positive nor negative.
        has_boxes: The image's boxes are complete; without them detection learns nothing here.
        assigner: ``fcos``: the static assignment above teaches detection and places the mask samples.
            ``tal``: the same, plus the image's objects for the in-graph task-aligned assigner
            (``gt_boxes``, ``gt_labels``: :func:`padded_objects`), and the mask samples drawn from its
            candidates (:func:`candidates`) instead of the static positives.

    Returns:
        ``cls_label`` (N,) int32 class or -1; ``cls_weight`` (N,) float32 (0: not taught);
        ``box_target`` (N, 4) float32 pixels; ``mask_loc`` (P,) int32 sampled positive locations;
        ``mask_target`` (P, h, w) float32 coverage of their object at prototype resolution;
        ``mask_box`` (P, 4) float32 object box in prototype cells; ``mask_weight`` (P,) float32 (0 for
        padding); ``semantic`` (H, W) int32 (255 ignored). With ``tal`` also ``gt_boxes`` (G, 4) float32
        pixels and ``gt_labels`` (G,) int32 (-1 for padding), G = :data:`MAX_OBJECTS`.

    Raises:
        ValueError: ``assigner`` is not one of :data:`ASSIGNERS`.
    """
    if assigner not in ASSIGNERS:
        raise ValueError(f"assigner must be one of {ASSIGNERS}. Received: {assigner!r}")
    centres, _ = anchor_points(size, tuple(strides))
    n_loc = len(centres)
    owner = assign(boxes, size, strides) if has_boxes else np.full(n_loc, -1, np.int64)
    pos = owner >= 0
    cls_label = np.where(pos, categories[np.maximum(owner, 0)] if len(boxes) else -1, -1).astype(np.int32)
    cls_weight = np.full(n_loc, 1.0 if has_boxes else 0.0, np.float32)
    if ignore is not None and has_boxes and ignore.any():
        cx = np.clip(centres[:, 0].astype(np.int64), 0, ignore.shape[1] - 1)
        cy = np.clip(centres[:, 1].astype(np.int64), 0, ignore.shape[0] - 1)
        cls_weight[ignore[cy, cx] & ~pos] = 0.0
    box_target = np.zeros((n_loc, 4), np.float32)
    if len(boxes):
        box_target[pos] = boxes[owner[pos]]
    extra = {}
    sample_owner = owner
    if assigner == "tal":
        if has_boxes:
            gt_boxes, gt_labels, dropped = padded_objects(boxes, categories, centres)
            cls_weight[dropped] = 0.0
            sample_owner = candidates(boxes, size, strides)
        else:
            gt_boxes, gt_labels, _ = padded_objects(boxes[:0], categories[:0], centres)
        extra = {"gt_boxes": gt_boxes, "gt_labels": gt_labels}
    gw, gh = (v // SEG_STRIDE for v in input_wh(size))
    p = max_mask_samples
    mask_loc = np.zeros(p, np.int32)
    mask_target = np.zeros((p, gh, gw), np.float32)
    mask_box = np.zeros((p, 4), np.float32)
    mask_weight = np.zeros(p, np.float32)
    valid = np.ones(len(boxes), bool) if mask_valid is None else np.asarray(mask_valid, bool)
    sampled = sample_owner >= 0
    locs = np.nonzero(sampled & (valid[np.maximum(sample_owner, 0)] if len(boxes) else sampled))[0]
    if len(locs):
        if len(locs) > p:
            locs = rng.choice(locs, p, replace=False)
        soft = soft_masks(masks)
        k = len(locs)
        mask_loc[:k] = locs
        mask_target[:k] = soft[sample_owner[locs]]
        mask_box[:k] = boxes[sample_owner[locs]] / SEG_STRIDE
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
        **extra,
    }

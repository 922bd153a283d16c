"""Loss terms, in ``keras.ops`` only, so that training runs on the TensorFlow and JAX backends.

As the source document describes: an IoU-family loss for boxes (GIoU), a focal-family loss for
classes (quality focal loss, whose target is the IoU of the predicted box, so scores rank boxes by
quality), pixel cross-entropy for the semantic map, and per-instance mask BCE.

Two label assignments feed the detection terms (``LossConfig.assigner``): the static FCOS-style one
of :mod:`model.targets` (:func:`detection_losses`), and a task-aligned one (TOOD, YOLOv8) made here,
inside the graph, from the predictions themselves (:func:`task_aligned_losses`).
"""

from __future__ import annotations

from keras import ops

from .targets import TAL_CENTER_RADIUS

EPS = 1e-6
TAL_TOPK = 10
"""Task-aligned assignment: each object's positives are its ``TAL_TOPK`` candidates of highest alignment
(TOOD's and YOLOv8's value; fewer when it has fewer candidates)."""
TAL_ALPHA = 1.0
TAL_BETA = 6.0
"""Alignment metric ``t = s ** TAL_ALPHA * IoU ** TAL_BETA``, with ``s`` the predicted score of the
object's class and ``IoU`` that of the predicted box with the object's (TOOD's and YOLOv8's values):
the box's quality counts far more than the score, so a location is chosen for the box it predicts."""


def decode_boxes(dist, centres, strides):
    """(B, N, 4) distances in stride units to (B, N, 4) x0, y0, x1, y1 pixels."""
    d = dist * strides[None, :, None]
    c = centres[None]
    return ops.concatenate([c - d[..., :2], c + d[..., 2:]], axis=-1)


def iou_and_giou(a, b):
    """Element-wise IoU and GIoU of (..., 4) boxes."""
    area_a = ops.maximum(a[..., 2] - a[..., 0], 0) * ops.maximum(a[..., 3] - a[..., 1], 0)
    area_b = ops.maximum(b[..., 2] - b[..., 0], 0) * ops.maximum(b[..., 3] - b[..., 1], 0)
    lt = ops.maximum(a[..., :2], b[..., :2])
    rb = ops.minimum(a[..., 2:], b[..., 2:])
    wh = ops.maximum(rb - lt, 0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a + area_b - inter
    iou = inter / (union + EPS)
    elt = ops.minimum(a[..., :2], b[..., :2])
    erb = ops.maximum(a[..., 2:], b[..., 2:])
    ewh = ops.maximum(erb - elt, 0)
    enclose = ewh[..., 0] * ewh[..., 1]
    return iou, iou - (enclose - union) / (enclose + EPS)


def detection_losses(scores, dist, cls_label, box_target, centres, strides, num_classes: int, cls_weight=None):
    """Quality focal loss on scores and GIoU loss on boxes, both normalised by the positives.

    Args:
        scores: (B, N, C) sigmoid probabilities.
        dist: (B, N, 4) predicted distances in stride units.
        cls_label: (B, N) int class of the assigned object, -1 for negatives.
        box_target: (B, N, 4) assigned object box in pixels.
        centres: (N, 2) location centres; strides: (N,) location strides.
        num_classes: C.
        cls_weight: (B, N) 1 where the score is taught, 0 where the labels say nothing (crowd regions,
            images without boxes); None: everywhere.

    Returns:
        ``(cls_loss, box_loss)`` scalars.
    """
    pos = ops.cast(cls_label >= 0, "float32")
    num_pos = ops.maximum(ops.sum(pos), 1.0)
    pred = decode_boxes(dist, centres, strides)
    iou, giou = iou_and_giou(pred, box_target)
    quality = ops.stop_gradient(ops.clip(iou, 0.0, 1.0)) * pos
    onehot = ops.one_hot(ops.maximum(cls_label, 0), num_classes) * pos[..., None]
    y = onehot * quality[..., None]
    p = ops.clip(scores, EPS, 1.0 - EPS)
    bce = -(y * ops.log(p) + (1.0 - y) * ops.log(1.0 - p))
    qfl = ops.square(y - p) * bce
    if cls_weight is not None:
        qfl = qfl * ops.cast(cls_weight, "float32")[..., None]
    cls_loss = ops.sum(qfl) / num_pos
    box_loss = ops.sum((1.0 - giou) * pos) / num_pos
    return cls_loss, box_loss


def task_aligned_targets(scores, pred_boxes, gt_boxes, gt_labels, centres, strides, num_classes: int,
                         topk: int = TAL_TOPK) -> dict:
    """Task-aligned label assignment (TOOD, YOLOv8) from the current predictions, in ``keras.ops``.

    Candidates of an object are the locations whose centre lies inside its box and within
    :data:`~model.targets.TAL_CENTER_RADIUS` strides of its centre, on every level (an object with none,
    a sliver between location centres, takes the finest-level location nearest its centre). Among them
    the ``topk`` of highest alignment ``t = s ** TAL_ALPHA * IoU ** TAL_BETA`` are its positives; a
    location chosen by several objects goes to the one its predicted box overlaps most. The class target
    of a positive is its ``t`` normalised per object, ``t / max t * max IoU`` (both maxima over that
    object's positives), so each object's best location is taught the IoU it reaches and the others less.
    Padding objects (label -1) are candidates nowhere. No gradient flows through any of it.

    Args:
        scores: (B, N, C) sigmoid probabilities.
        pred_boxes: (B, N, 4) decoded predicted boxes, x0, y0, x1, y1 pixels (:func:`decode_boxes`).
        gt_boxes: (B, G, 4) float32 object boxes in pixels, anything for padding.
        gt_labels: (B, G) int32 object classes, -1 for padding.
        centres: (N, 2) location centres; strides: (N,) location strides.
        num_classes: C.
        topk: Positives per object at most.

    Returns:
        ``positive`` (B, G, N) float32 1 where location n is a positive of object g (at most one g per n);
        ``fg`` (B, N) float32 1 at positives; ``box_target`` (B, N, 4) float32 the assigned object's box
        (0 elsewhere); ``cls_target`` (B, N, C) float32 the normalised alignment at the assigned class;
        ``iou`` (B, G, N) float32 IoU of each predicted box with each object (0 for padding).
    """
    scores = ops.stop_gradient(ops.convert_to_tensor(scores, "float32"))
    pred = ops.stop_gradient(ops.convert_to_tensor(pred_boxes, "float32"))
    gt_boxes = ops.cast(gt_boxes, "float32")
    labels = ops.cast(gt_labels, "int32")
    centres = ops.cast(centres, "float32")
    strides = ops.cast(strides, "float32")
    n, g = centres.shape[0], labels.shape[1]
    valid = ops.cast(labels >= 0, "float32")[..., None]  # (B, G, 1)
    cx, cy = centres[None, None, :, 0], centres[None, None, :, 1]  # (1, 1, N)
    x0, y0, x1, y1 = (gt_boxes[..., i : i + 1] for i in range(4))  # (B, G, 1) each
    inside = ops.minimum(ops.minimum(cx - x0, cy - y0), ops.minimum(x1 - cx, y1 - cy)) > 0
    rad = TAL_CENTER_RADIUS * strides[None, None, :]
    bcx, bcy = (x0 + x1) / 2, (y0 + y1) / 2
    central = (ops.abs(cx - bcx) < rad) & (ops.abs(cy - bcy) < rad)
    cand = ops.cast(inside & central, "float32") * valid
    # An object between location centres takes the nearest finest-level location, as model.targets does.
    finest = strides[None, None, :] <= ops.min(strides)
    d2 = ops.where(finest, ops.square(cx - bcx) + ops.square(cy - bcy), 1e12)
    nearest = ops.cast(ops.arange(n)[None, None, :] == ops.argmin(d2, axis=-1)[..., None], "float32")
    none = ops.cast(ops.sum(cand, axis=-1, keepdims=True) == 0, "float32") * valid
    cand = ops.maximum(cand, nearest * none)

    iou, _ = iou_and_giou(pred[:, None, :, :], gt_boxes[:, :, None, :])
    iou = ops.clip(iou, 0.0, 1.0) * valid  # (B, G, N)
    idx = ops.zeros_like(iou, dtype="int32") + ops.maximum(labels, 0)[..., None]
    s = ops.take_along_axis(ops.transpose(scores, (0, 2, 1)), idx, axis=1)  # (B, G, N): score of g's class
    align = ops.power(s, TAL_ALPHA) * ops.power(iou, TAL_BETA) * cand
    # Candidates rank above every other location, so an object with fewer than topk candidates takes them
    # all and nothing more; a candidate whose metric is 0 (a collapsed box) may still be chosen, and then
    # gets its box loss (GIoU teaches even without overlap) and a class target of 0.
    _, top = ops.top_k(ops.where(cand > 0, align, -1.0), k=min(topk, n))
    loc = ops.arange(n)[None, None, :]
    chosen = ops.zeros_like(align)
    for j in range(min(topk, n)):  # topk (B, G, N) comparisons instead of a (B, G, topk, N) one-hot
        chosen = ops.maximum(chosen, ops.cast(loc == top[..., j : j + 1], "float32"))
    pos = chosen * cand
    # A location chosen by several objects goes to the one its box overlaps most (ties: the first).
    shared = ops.sum(pos, axis=1, keepdims=True) > 1
    best = ops.argmax((iou + 1.0) * pos, axis=1)  # (B, N)
    best = ops.transpose(ops.one_hot(best, g), (0, 2, 1))
    pos = ops.where(shared, best * pos, pos)

    max_align = ops.max(align * pos, axis=-1, keepdims=True)
    max_iou = ops.max(iou * pos, axis=-1, keepdims=True)
    norm = align * pos / ops.where(max_align > 0, max_align, 1.0) * max_iou  # (B, G, N)
    fg = ops.sum(pos, axis=1)  # (B, N), 0 or 1
    owner = ops.argmax(pos, axis=1)  # (B, N)
    box_target = ops.take_along_axis(gt_boxes, ops.repeat(owner[..., None], 4, axis=-1), axis=1) * fg[..., None]
    label = ops.take_along_axis(ops.maximum(labels, 0), owner, axis=1)
    cls_target = ops.one_hot(label, num_classes) * (ops.sum(norm, axis=1) * fg)[..., None]
    out = {"positive": pos, "fg": fg, "box_target": box_target, "cls_target": cls_target, "iou": iou}
    return {k: ops.stop_gradient(v) for k, v in out.items()}


def task_aligned_losses(scores, dist, gt_boxes, gt_labels, centres, strides, num_classes: int, cls_weight=None,
                        topk: int = TAL_TOPK):
    """Quality focal loss and GIoU loss on the positives of :func:`task_aligned_targets`.

    The quality focal loss has the form of :func:`detection_losses`' with the normalised alignment as its
    soft target. The GIoU loss is the plain mean over the positives, not weighted by that target as
    YOLOv8 weights it: a positive whose predicted box does not yet overlap its object (target 0) still
    learns its box, and both terms keep :func:`detection_losses`' normalisation (by the positives), so the
    loss weights of :class:`~model.config.LossConfig` mean the same with either assigner.

    Args:
        scores: (B, N, C) sigmoid probabilities.
        dist: (B, N, 4) predicted distances in stride units.
        gt_boxes: (B, G, 4) object boxes in pixels; gt_labels: (B, G) int classes, -1 for padding.
        centres: (N, 2) location centres; strides: (N,) location strides.
        num_classes: C.
        cls_weight: (B, N) 1 where a negative's score is taught, 0 where the labels say nothing (crowd
            regions, images without boxes, objects past :data:`~model.targets.MAX_OBJECTS`); positives are
            always taught. None: everywhere.
        topk: Positives per object at most.

    Returns:
        ``(cls_loss, box_loss)`` scalars.
    """
    pred = decode_boxes(dist, centres, strides)
    t = task_aligned_targets(scores, pred, gt_boxes, gt_labels, centres, strides, num_classes, topk)
    fg = t["fg"]
    num_pos = ops.maximum(ops.sum(fg), 1.0)
    y = t["cls_target"]
    p = ops.clip(scores, EPS, 1.0 - EPS)
    bce = -(y * ops.log(p) + (1.0 - y) * ops.log(1.0 - p))
    qfl = ops.square(y - p) * bce
    if cls_weight is not None:
        qfl = qfl * ops.maximum(ops.cast(cls_weight, "float32"), fg)[..., None]
    cls_loss = ops.sum(qfl) / num_pos
    _, giou = iou_and_giou(pred, t["box_target"])
    box_loss = ops.sum((1.0 - giou) * fg) / num_pos
    return cls_loss, box_loss


IGNORE_LABEL = 255


def semantic_loss(logits, labels, class_weights=None):
    """Mean pixel cross-entropy over labelled pixels; ``logits`` (B, h, w, C) are resized bilinearly to
    ``labels`` (B, H, W), whose value 255 marks pixels that teach nothing (crowd, unlabelled, bars).

    With ``class_weights`` (C,), each pixel's term is weighted by its class's weight and the sum divided by the
    sum of the weights (PyTorch's weighted mean), so the loss keeps its scale and rare classes their say."""
    h, w = labels.shape[1], labels.shape[2]
    up = ops.image.resize(logits, (h, w), interpolation="bilinear")
    valid = ops.cast(labels != IGNORE_LABEL, "float32")
    safe = ops.where(labels == IGNORE_LABEL, 0, labels)
    ce = ops.sparse_categorical_crossentropy(safe, up, from_logits=True)
    weight = valid
    if class_weights is not None:
        weight = ops.take(ops.convert_to_tensor(class_weights, "float32"), ops.cast(safe, "int32")) * valid
    return ops.sum(ce * weight) / ops.maximum(ops.sum(weight), 1.0)


def mask_loss(coeffs, protos, mask_loc, mask_target, mask_box, mask_weight, dice: float = 0.0):
    """Per-instance mask BCE inside each object's box, at prototype resolution, plus ``dice`` times a
    dice loss over the same cells (CondInst's form, ``1 - 2 sum(p t) / (sum p^2 + sum t^2)``): BCE
    weighs every cell alike, dice the overlap that mask AP scores.

    Args:
        coeffs: (B, N, K) coefficients; protos: (B, h, w, K) prototypes.
        mask_loc: (B, P) sampled positive locations; mask_target: (B, P, h, w) object coverage.
        mask_box: (B, P, 4) object box in prototype cells; mask_weight: (B, P) 1 or 0 (padding).
        dice: Weight of the dice term (0: BCE alone).
    """
    k = coeffs.shape[-1]
    idx = ops.repeat(ops.expand_dims(ops.cast(mask_loc, "int32"), -1), k, axis=-1)
    c = ops.take_along_axis(coeffs, idx, axis=1)  # (B, P, K)
    logits = ops.einsum("bpk,bhwk->bphw", c, protos)
    h, w = protos.shape[1], protos.shape[2]
    ys = ops.arange(h, dtype="float32") + 0.5
    xs = ops.arange(w, dtype="float32") + 0.5
    in_x = ops.cast((xs[None, None, :] >= mask_box[..., 0:1]) & (xs[None, None, :] <= mask_box[..., 2:3]), "float32")
    in_y = ops.cast((ys[None, None, :] >= mask_box[..., 1:2]) & (ys[None, None, :] <= mask_box[..., 3:4]), "float32")
    crop = in_y[..., :, None] * in_x[..., None, :]
    bce = _bce_logits(logits, mask_target)
    per = ops.sum(bce * crop, axis=(2, 3)) / ops.maximum(ops.sum(crop, axis=(2, 3)), 1.0)
    if dice:
        p = ops.sigmoid(logits) * crop
        t = mask_target * crop
        overlap = 2.0 * ops.sum(p * t, axis=(2, 3)) + 1.0
        per = per + dice * (1.0 - overlap / (ops.sum(p * p, axis=(2, 3)) + ops.sum(t * t, axis=(2, 3)) + 1.0))
    return ops.sum(per * mask_weight) / ops.maximum(ops.sum(mask_weight), 1.0)


def _bce_logits(logits, target):
    # Stable BCE with logits: max(x, 0) - x * t + log(1 + exp(-|x|)).
    return ops.relu(logits) - logits * target + ops.log1p(ops.exp(-ops.abs(logits)))


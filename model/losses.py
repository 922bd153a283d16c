"""Loss terms, in ``keras.ops`` only, so that training runs on the TensorFlow and JAX backends.

As the source document describes: an IoU-family loss for boxes (GIoU), a focal-family loss for
classes (quality focal loss, whose target is the IoU of the predicted box, so scores rank boxes by
quality), pixel cross-entropy for the semantic map, and per-instance mask BCE.
"""

from __future__ import annotations

from keras import ops

EPS = 1e-6


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


IGNORE_LABEL = 255


def semantic_loss(logits, labels):
    """Mean pixel cross-entropy over labelled pixels; ``logits`` (B, h, w, C) are resized bilinearly to
    ``labels`` (B, H, W), whose value 255 marks pixels that teach nothing (crowd, unlabelled, bars)."""
    h, w = labels.shape[1], labels.shape[2]
    up = ops.image.resize(logits, (h, w), interpolation="bilinear")
    valid = ops.cast(labels != IGNORE_LABEL, "float32")
    safe = ops.where(labels == IGNORE_LABEL, 0, labels)
    ce = ops.sparse_categorical_crossentropy(safe, up, from_logits=True)
    return ops.sum(ce * valid) / ops.maximum(ops.sum(valid), 1.0)


def mask_loss(coeffs, protos, mask_loc, mask_target, mask_box, mask_weight):
    """Per-instance mask BCE inside each object's box, at prototype resolution.

    Args:
        coeffs: (B, N, K) coefficients; protos: (B, h, w, K) prototypes.
        mask_loc: (B, P) sampled positive locations; mask_target: (B, P, h, w) object coverage.
        mask_box: (B, P, 4) object box in prototype cells; mask_weight: (B, P) 1 or 0 (padding).
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
    return ops.sum(per * mask_weight) / ops.maximum(ops.sum(mask_weight), 1.0)


def _bce_logits(logits, target):
    # Stable BCE with logits: max(x, 0) - x * t + log(1 + exp(-|x|)).
    return ops.relu(logits) - logits * target + ops.log1p(ops.exp(-ops.abs(logits)))


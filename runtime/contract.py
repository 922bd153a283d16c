"""The model's output contract, shared by the workstation side and the device side.

The names here are the ones the Keras model gives its outputs, the ones the TFLite signature
carries after conversion, and the ones the decoders bind to. Nothing is ever bound by index.

=============  ==================  =======  ===========  ==========================================
name           shape               dtype    range        meaning
=============  ==================  =======  ===========  ==========================================
det_scores     (1, N, C)           float    [0, 1]       per-location class probability (sigmoid
                                                         inside the graph), C thing classes
det_boxes      (1, N, 4)           float    [0, inf)     distances left, top, right, bottom from the
                                                         location's centre, in units of its stride
det_coeffs     (1, N, K)           float    [-1, 1]      per-location mask coefficients (tanh)
seg_logits     (1, S/4, S/4, C+1)  float    any          semantic class logits, background first
mask_protos    (1, S/4, S/4, K)    float    any          mask prototypes from the segmentation branch
=============  ==================  =======  ===========  ==========================================

``N`` is the number of locations over the pyramid levels (strides 8, 16, 32 by default), level
by level, each row-major: ``N = sum((S // s) ** 2 for s in strides)``. A location ``i`` of level
``s`` at grid cell ``(gx, gy)`` has its centre at ``((gx + 0.5) * s, (gy + 0.5) * s)`` in input
pixels. An instance mask is ``sigmoid(coeffs[i] @ protos)`` cropped to the detection's box.
"""

from __future__ import annotations

THING_CLASSES: tuple[str, ...] = ("ellipse", "triangle", "rectangle", "star")
"""Thing classes in id order (detection class ``k`` is ``THING_CLASSES[k]``)."""

SEMANTIC_CLASSES: tuple[str, ...] = ("background", *THING_CLASSES)
"""Semantic classes: ``background`` is 0, thing ``k`` is ``k + 1``."""

DET_SCORES = "det_scores"
DET_BOXES = "det_boxes"
DET_COEFFS = "det_coeffs"
SEG_LOGITS = "seg_logits"
MASK_PROTOS = "mask_protos"

OUTPUT_NAMES: tuple[str, ...] = (DET_SCORES, DET_BOXES, DET_COEFFS, SEG_LOGITS, MASK_PROTOS)
"""Every output of the fused model, in documentation order (never a binding order)."""

OUTPUT_ROLES: dict[str, str] = {
    DET_SCORES: "detection class probabilities per location (sigmoid in graph)",
    DET_BOXES: "detection box distances l,t,r,b per location, in stride units",
    DET_COEFFS: "instance mask coefficients per location (tanh in graph)",
    SEG_LOGITS: "semantic segmentation logits, background first",
    MASK_PROTOS: "instance mask prototypes",
}

DEFAULT_STRIDES: tuple[int, ...] = (8, 16, 32)
SEG_STRIDE = 4
"""Stride of ``seg_logits`` and ``mask_protos`` relative to the input."""


def num_locations(size: int, strides: tuple[int, ...] = DEFAULT_STRIDES) -> int:
    """Number of detection locations for a square input of ``size`` pixels."""
    return sum((size // s) ** 2 for s in strides)

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
seg_logits     (1, H/4, W/4, C+1)  float    any          semantic class logits, background first
mask_protos    (1, H/4, W/4, K)    float    any          mask prototypes from the segmentation branch
=============  ==================  =======  ===========  ==========================================

The input is ``(1, H, W, 3)``: square (``W == H``, the size written as one number, ``320``) or
rectangular (the size written as ``(W, H)``, ``416x320`` on the command line), each side a multiple of
the largest stride. ``N`` is the number of locations over the pyramid levels (strides 8, 16, 32 by
default), level by level, each row-major: ``N = sum((H // s) * (W // s) for s in strides)``. A location ``i`` of level
``s`` at grid cell ``(gx, gy)`` has its centre at ``((gx + 0.5) * s, (gy + 0.5) * s)`` in input
pixels. An instance mask is ``sigmoid(coeffs[i] @ protos)`` cropped to the detection's box.
"""

from __future__ import annotations

import re

from .errors import InputError

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


InputSize = int | tuple[int, int]
"""A model input size: one side for a square input, or ``(width, height)`` (the order of camera modes,
``cv2.resize`` and ``416x320``). A square size is always written as the int, so the two forms never
stand for the same input."""


def input_wh(size: InputSize | list[int]) -> tuple[int, int]:
    """``(width, height)`` of an input size (also as JSON writes it: ``[416, 320]``)."""
    if isinstance(size, int):
        return size, size
    w, h = size
    return int(w), int(h)


def input_area(size: InputSize) -> int:
    """Pixels of an input of ``size``."""
    w, h = input_wh(size)
    return w * h


def input_size(width: int, height: int) -> InputSize:
    """The canonical :data:`InputSize` of a ``width`` x ``height`` input (the int when square)."""
    return int(width) if width == height else (int(width), int(height))


def size_json(size: InputSize) -> int | list[int]:
    """The size as cards, reports and configs write it: ``320`` or ``[416, 320]`` (width, height)."""
    return size if isinstance(size, int) else list(input_wh(size))


def size_text(size: InputSize | list[int]) -> str:
    """``320`` or ``416x320``: the size as the command line takes it."""
    w, h = input_wh(size)
    return str(w) if w == h else f"{w}x{h}"


_SIZE_RE = re.compile(r"^\s*(\d+)\s*(?:[xX×]\s*(\d+))?\s*$")


def parse_size(text: str | int | tuple[int, int] | list[int], multiple: int = 32, least: int = 64) -> InputSize:
    """A size from the command line, a board profile or a config: ``320``, ``"416x320"`` (width x
    height) or ``[416, 320]``; each side a positive multiple of ``multiple`` of at least ``least``.

    Raises:
        InputError: One line saying what was wrong.
    """
    if isinstance(text, bool):
        raise InputError(f"input size must be a side (320) or width x height (416x320). Received: {text!r}")
    if isinstance(text, int):
        w = h = text
    elif isinstance(text, (tuple, list)) and len(text) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                     for v in text):
        w, h = text
    else:
        m = _SIZE_RE.match(str(text))
        if not m:
            raise InputError(f"input size must be a side (320) or width x height (416x320). Received: {text!r}")
        w = int(m.group(1))
        h = int(m.group(2)) if m.group(2) else w
    bad = [v for v in (w, h) if v < least or v % multiple]
    if bad:
        raise InputError(f"each side of the input size must be a multiple of {multiple}, at least {least}. "
                         f"Received: {size_text(input_size(w, h)) if w > 0 and h > 0 else text!r}")
    return input_size(w, h)


def num_locations(size: InputSize, strides: tuple[int, ...] = DEFAULT_STRIDES) -> int:
    """Number of detection locations for an input of ``size`` (a side, or ``(width, height)``)."""
    w, h = input_wh(size)
    return sum((h // s) * (w // s) for s in strides)

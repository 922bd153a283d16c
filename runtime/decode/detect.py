"""Detection decoding: per-location scores and box distances to boxes, thresholds, NMS.

Scores are thresholded in the quantized domain when the output is int8 or uint8: the threshold is
turned into an integer once, the comparison runs on the raw tensor, and only the locations that pass
are dequantized. NMS is OpenCV's class-aware ``NMSBoxesBatched``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from ..contract import DEFAULT_STRIDES, InputSize, input_wh, size_text
from ..errors import InputError
from ..quant import FLOAT, Quant


@dataclass(frozen=True)
class DecodeOptions:
    """Post-processing settings.

    Attributes:
        score_threshold: Minimum class probability of a detection.
        iou_threshold: NMS overlap above which the lower-scored box of the same class is dropped.
        max_detections: Cap on detections per frame, after NMS.
        pre_nms_top_k: Candidates kept (best scores) before NMS; NMS cost grows with its square.
    """

    score_threshold: float = 0.3
    iou_threshold: float = 0.5
    max_detections: int = 100
    pre_nms_top_k: int = 300

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_threshold <= 1.0:
            raise InputError(f"score threshold (--score) must lie in [0, 1]. Received: {self.score_threshold}")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise InputError(f"NMS IoU threshold (--iou) must lie in (0, 1]. Received: {self.iou_threshold}")
        if self.max_detections < 1 or self.pre_nms_top_k < 1:
            raise InputError(
                "max detections (--max-det) and pre_nms_top_k must be positive. "
                f"Received: {self.max_detections}, {self.pre_nms_top_k}"
            )

    @classmethod
    def merged(cls, card_decode: Mapping[str, float], **overrides: float | None) -> DecodeOptions:
        """The card's decode settings, field by field, with each given override (None keeps the card's);
        a field the card lacks takes the default of this class (the one place defaults are written)."""
        kw: dict = {k: type(getattr(cls, k))(card_decode[k]) for k in DECODE_FIELDS if k in card_decode}
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)


DECODE_FIELDS = ("score_threshold", "iou_threshold", "max_detections")
"""The decode settings a model card carries."""


@dataclass(frozen=True)
class RawDetections:
    """Kept detections in model-input pixels, best first.

    Attributes:
        boxes: (D, 4) float32 x0, y0, x1, y1, clipped to the input.
        scores: (D,) float32.
        classes: (D,) int32 thing class ids.
        locations: (D,) int64 index of the location each came from (to fetch mask coefficients).
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    locations: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def anchor_points(size: InputSize, strides: tuple[int, ...] = DEFAULT_STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """Centres and strides of every detection location, in the order of the model's outputs, for an
    input of ``size`` (a side, or ``(width, height)``).

    Returns:
        ``(centres, strides)``: (N, 2) float32 x, y in input pixels and (N,) float32.
    """
    return _anchor_points(input_wh(size), tuple(strides))


@lru_cache(maxsize=8)
def _anchor_points(wh: tuple[int, int], strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    w, h = wh
    centres, per_loc = [], []
    for s in strides:
        ys, xs = np.mgrid[0 : h // s, 0 : w // s]
        centres.append(np.stack([(xs.ravel() + 0.5) * s, (ys.ravel() + 0.5) * s], axis=1))
        per_loc.append(np.full(xs.size, s, np.float32))
    c, st = np.concatenate(centres).astype(np.float32), np.concatenate(per_loc)
    c.setflags(write=False)
    st.setflags(write=False)
    return c, st


def distances_to_boxes(dist: np.ndarray, centres: np.ndarray, strides: np.ndarray) -> np.ndarray:
    """(M, 4) l, t, r, b in stride units at (M, 2) centres to (M, 4) x0, y0, x1, y1 pixels."""
    d = dist * strides[:, None]
    return np.concatenate([centres - d[:, :2], centres + d[:, 2:]], axis=1)


def decode_detections(
    scores: np.ndarray,
    boxes: np.ndarray,
    input_size: InputSize,
    options: DecodeOptions = DecodeOptions(),
    scores_quant: Quant = FLOAT,
    boxes_quant: Quant = FLOAT,
    strides: tuple[int, ...] = DEFAULT_STRIDES,
) -> RawDetections:
    """Turn per-location outputs into kept detections.

    Args:
        scores: (N, C) or (1, N, C) class probabilities, raw (quantized) or float.
        boxes: (N, 4) or (1, N, 4) distances in stride units, raw or float.
        input_size: Model input size: a side, or ``(width, height)``.
        options: Thresholds and caps.
        scores_quant: Quantization of ``scores`` (``FLOAT`` for a float model).
        boxes_quant: Quantization of ``boxes``.
        strides: Pyramid strides of the model.

    Returns:
        The kept detections, best first, at most ``options.max_detections``.
    """
    scores = scores.reshape(-1, scores.shape[-1])
    boxes = boxes.reshape(-1, 4)
    centres, loc_strides = anchor_points(input_size, tuple(strides))
    if len(centres) != len(scores) or len(scores) != len(boxes):
        raise ValueError(
            f"Expected {len(centres)} locations for input {size_text(input_size)} and strides {tuple(strides)}. "
            f"Received: scores {scores.shape}, boxes {boxes.shape}"
        )
    t = scores_quant.threshold(options.score_threshold, scores.dtype)
    loc, cls = np.nonzero(scores >= t)
    if len(loc) == 0:
        return _empty()
    raw = scores[loc, cls]
    if len(raw) > options.pre_nms_top_k:
        top = np.argpartition(-raw.astype(np.float32), options.pre_nms_top_k - 1)[: options.pre_nms_top_k]
        loc, cls, raw = loc[top], cls[top], raw[top]
    conf = scores_quant.dequantize(raw)
    xyxy = distances_to_boxes(boxes_quant.dequantize(boxes[loc]), centres[loc], loc_strides[loc])
    w, h = input_wh(input_size)
    np.clip(xyxy[:, 0::2], 0, w, out=xyxy[:, 0::2])
    np.clip(xyxy[:, 1::2], 0, h, out=xyxy[:, 1::2])
    wh = xyxy[:, 2:] - xyxy[:, :2]
    ok = (wh > 0).all(axis=1)
    if not ok.all():
        loc, cls, conf, xyxy, wh = loc[ok], cls[ok], conf[ok], xyxy[ok], wh[ok]
        if len(loc) == 0:
            return _empty()
    xywh = np.concatenate([xyxy[:, :2], wh], axis=1)
    keep = cv2.dnn.NMSBoxesBatched(
        xywh.tolist(), conf.tolist(), cls.tolist(), options.score_threshold, options.iou_threshold,
        top_k=options.max_detections,
    )
    keep = np.asarray(keep, dtype=np.int64).reshape(-1)
    keep = keep[np.argsort(-conf[keep], kind="stable")][: options.max_detections]
    return RawDetections(
        boxes=xyxy[keep].astype(np.float32),
        scores=conf[keep].astype(np.float32),
        classes=cls[keep].astype(np.int32),
        locations=loc[keep].astype(np.int64),
    )


def _empty() -> RawDetections:
    return RawDetections(
        boxes=np.zeros((0, 4), np.float32),
        scores=np.zeros((0,), np.float32),
        classes=np.zeros((0,), np.int32),
        locations=np.zeros((0,), np.int64),
    )

"""Results of one frame: frozen dataclasses, with frame-resolution maps computed only on demand."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from .decode.instance import MaskCrop, mask_to_frame
from .decode.semantic import labels_to_frame, semantic_to_frame
from .preprocess import Transform
from .quant import FLOAT, Quant

T = TypeVar("T")


@dataclass(frozen=True)
class Detection:
    """One detected object.

    Attributes:
        category: Thing class id.
        label: Class name.
        score: Confidence in [0, 1] that ranks the detections: the class probability, times the mask's
            confidence (:func:`~runtime.decode.instance.mask_confidence`) for a model with instance masks.
        box: (x0, y0, x1, y1) in frame pixels.
        class_score: The class probability alone, which the score threshold (``--score``) applies to;
            None: the same as ``score``.
    """

    category: int
    label: str
    score: float
    box: tuple[float, float, float, float]
    class_score: float | None = None
    _mask_logits: MaskCrop | None = field(default=None, repr=False, compare=False)
    _transform: Transform | None = field(default=None, repr=False, compare=False)
    _stride: int = field(default=4, repr=False, compare=False)

    @property
    def class_probability(self) -> float:
        """The class probability alone (``class_score``, or ``score`` where the two are the same)."""
        return self.score if self.class_score is None else self.class_score

    @property
    def has_mask(self) -> bool:
        """Whether the model gave an instance mask for this detection."""
        return self._mask_logits is not None

    def mask(self) -> np.ndarray | None:
        """(frame_h, frame_w) bool instance mask, assembled now; None for a detection-only model."""
        if self._mask_logits is None or self._transform is None:
            return None
        return mask_to_frame(self._mask_logits, np.asarray(self.box, np.float32), self._transform, self._stride)


@dataclass(frozen=True)
class FrameResult:
    """Everything the model said about one frame.

    Attributes:
        detections: Kept detections, best first.
        semantic: (h, w) uint8 class ids at the model's resolution, or None (no semantic head).
        transform: Input-to-frame transform.
        times_ms: Milliseconds per stage (``preprocess``, ``invoke``, ``decode``; :func:`~runtime.run.run` adds
            ``capture``, ``total`` and ``latency``).
        sequence: The frame's number within a run (set by :func:`~runtime.run.run`; 0 for one ``process`` call).
        elapsed_s: Seconds from the run's start to this result.
    """

    detections: tuple[Detection, ...]
    semantic: np.ndarray | None
    transform: Transform
    times_ms: Mapping[str, float] = field(default_factory=dict)
    sequence: int = 0
    elapsed_s: float = 0.0
    _seg_logits: np.ndarray | None = field(default=None, repr=False, compare=False)
    _seg_quant: Quant = field(default=FLOAT, repr=False, compare=False)
    _seg_stride: float = field(default=4, repr=False, compare=False)
    _seg_is_labels: bool = field(default=False, repr=False, compare=False)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def semantic_frame(self) -> np.ndarray | None:
        """(frame_h, frame_w) uint8 class ids, resampled from the logits now; None without a semantic head."""
        if self._seg_logits is None:
            return None
        if self._seg_is_labels:
            return self.memo("semantic", lambda: labels_to_frame(self._seg_logits, self.transform, self._seg_stride))
        return self.memo("semantic", lambda: semantic_to_frame(self._seg_logits, self.transform, self._seg_stride,
                                                               self._seg_quant))

    def memo(self, key: Hashable, compute: Callable[[], T]) -> T:
        """``compute()`` once per result and ``key``, however many sinks ask (an annotated image, a map)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

"""One frame as a source gives it and as every sink receives it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One frame.

    Attributes:
        index: Frame number from the source's start (counting dropped frames for live sources).
        timestamp: ``time.monotonic()`` at capture.
        image: (H, W, 3) uint8 RGB.
        dropped: Frames the source dropped so far (live sources keep only the newest).
        name: File name for image sources, else empty.
    """

    index: int
    timestamp: float
    image: np.ndarray
    dropped: int = 0
    name: str = ""

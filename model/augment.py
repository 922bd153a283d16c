"""Training-time augmentation, deterministic by seed: where the image lands, and how its pixels look.

Geometry is one :class:`~model.data.Placement` per image (random scale and crop around the
runtime's letterbox, optional mirror), applied by :func:`model.data.render` to the image and every
label at once, so boxes, instance masks and label maps stay consistent. Without augmentation the
placement is exactly the runtime's letterbox: training sees what the device sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .data import Placement, Record


@dataclass(frozen=True)
class AugmentOptions:
    """What augmentation does.

    Attributes:
        enabled: Scale, crop and photometric changes (off: the runtime's letterbox, flips only if ``flip``).
        flip: Random horizontal mirror (half the images).
        scale: Range of the zoom around the letterbox scale (log-uniform).
        brightness: Largest brightness shift, in grey levels.
        contrast: Largest relative contrast change.
        saturation: Largest relative saturation change.
        blur_p: Share of images blurred (Gaussian, kernel 3 or 5).
        noise_p: Share of images with Gaussian noise (sigma 2 to 8 grey levels).
    """

    enabled: bool = True
    flip: bool = True
    scale: tuple[float, float] = (0.6, 1.5)
    brightness: float = 25.0
    contrast: float = 0.25
    saturation: float = 0.4
    blur_p: float = 0.15
    noise_p: float = 0.2


def placement(rec: Record, size: int, rng: np.random.Generator, opts: AugmentOptions) -> Placement:
    """Where ``rec``'s image lands in a ``size`` x ``size`` input."""
    base = Placement.letterbox(rec.width, rec.height, size)
    flip = bool(opts.flip and rng.random() < 0.5)
    if not opts.enabled:
        return Placement(base.scale, base.x, base.y, size, size, flip)
    lo, hi = np.log(opts.scale[0]), np.log(opts.scale[1])
    s = base.scale * float(np.exp(rng.uniform(lo, hi)))
    nw, nh = max(1, round(rec.width * s)), max(1, round(rec.height * s))
    # Smaller than the input: anywhere inside it; larger: a random crop.
    x = int(rng.integers(0, size - nw + 1)) if nw <= size else -int(rng.integers(0, nw - size + 1))
    y = int(rng.integers(0, size - nh + 1)) if nh <= size else -int(rng.integers(0, nh - size + 1))
    return Placement(s, x, y, size, size, flip)


def reduce_factor(rec: Record, p: Placement) -> int:
    """The largest JPEG reduced-decode factor (1, 2, 4, 8) that still leaves at least the pixels the
    placement needs: a 12-megapixel photo placed in 320 pixels decodes at 1/8, several times faster.
    OpenCV's reduced decoding ignores EXIF orientation, so rotated files are decoded whole."""
    if rec.exif_rotated:
        return 1
    r = 1
    while r < 8 and max(rec.width, rec.height) / (2 * r) >= max(rec.width, rec.height) * p.scale:
        r *= 2
    return r


def photometric(img: np.ndarray, rng: np.random.Generator, opts: AugmentOptions) -> np.ndarray:
    """Colour and brightness jitter, blur and noise on an (H, W, 3) uint8 image (a new array)."""
    f = img.astype(np.float32)
    a = 1.0 + rng.uniform(-opts.contrast, opts.contrast)
    b = rng.uniform(-opts.brightness, opts.brightness)
    grey = f.mean(axis=2, keepdims=True)
    sat = 1.0 + rng.uniform(-opts.saturation, opts.saturation)
    f = (grey + (f - grey) * sat - 128.0) * a + 128.0 + b
    if rng.random() < opts.noise_p:
        f += rng.normal(0.0, rng.uniform(2.0, 8.0), f.shape).astype(np.float32)
    out = np.clip(f, 0, 255).astype(np.uint8)
    if rng.random() < opts.blur_p:
        k = int(rng.choice([3, 5]))
        out = cv2.GaussianBlur(out, (k, k), 0)
    return out

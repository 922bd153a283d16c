"""Training-time augmentation, deterministic by seed: where the image lands, and how its pixels look.

Geometry is one :class:`~model.data.Placement` per image (random scale and crop around the
runtime's letterbox, optional mirror), applied by :func:`model.data.render` to the image and every
label at once, so boxes, instance masks and label maps stay consistent. Without augmentation the
placement is exactly the runtime's letterbox: training sees what the device sees.

Two augmentations combine images, as real-photo detectors train: :func:`mosaic` (four images in the
four corners of one input, each rendered with its labels into its own tile) and :func:`copy_paste`
(objects of one image pasted onto another through their masks, labels moving with the pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ocrnet_edge.runtime.contract import InputSize, input_wh
from ocrnet_edge.runtime.preprocess import PAD_VALUE

from .data import IGNORE, MIN_VISIBLE, Placement, Record, Rendered, read_rgb, render


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


def placement(rec: Record, size: InputSize, rng: np.random.Generator, opts: AugmentOptions) -> Placement:
    """Where ``rec``'s image lands in an input of ``size`` (a side, or ``(width, height)``)."""
    base = Placement.letterbox(rec.width, rec.height, size)
    sw, sh = base.size_w, base.size_h
    flip = bool(opts.flip and rng.random() < 0.5)
    if not opts.enabled:
        return Placement(base.scale, base.x, base.y, sw, sh, flip)
    lo, hi = np.log(opts.scale[0]), np.log(opts.scale[1])
    s = base.scale * float(np.exp(rng.uniform(lo, hi)))
    nw, nh = max(1, round(rec.width * s)), max(1, round(rec.height * s))
    # Smaller than the input: anywhere inside it; larger: a random crop.
    x = int(rng.integers(0, sw - nw + 1)) if nw <= sw else -int(rng.integers(0, nw - sw + 1))
    y = int(rng.integers(0, sh - nh + 1)) if nh <= sh else -int(rng.integers(0, nh - sh + 1))
    return Placement(s, x, y, sw, sh, flip)


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
    """Colour and brightness jitter, blur and noise on an (H, W, 3) uint8 image (a new array).

    Saturation (towards each pixel's grey), contrast (around 128) and brightness are one affine map of
    the three channels, applied by ``cv2.transform`` in one pass over the uint8 image (rounded and
    saturated): five times faster than the same arithmetic in float32 numpy, which cost about an
    eighth of a training step's time on 2 cores."""
    a = 1.0 + rng.uniform(-opts.contrast, opts.contrast)
    b = rng.uniform(-opts.brightness, opts.brightness)
    sat = 1.0 + rng.uniform(-opts.saturation, opts.saturation)
    # out = ((grey + (x - grey) * sat) - 128) * a + 128 + b, with grey the mean of the three channels
    m = np.full((3, 4), a * (1.0 - sat) / 3.0)
    m[:, :3] += np.eye(3) * a * sat
    m[:, 3] = 128.0 * (1.0 - a) + b
    if rng.random() < opts.noise_p:
        sigma = np.float32(rng.uniform(2.0, 8.0))
        f = cv2.transform(img.astype(np.float32), m)
        f += rng.standard_normal(f.shape, dtype=np.float32) * sigma
        out = np.clip(f, 0, 255).astype(np.uint8)
    else:
        out = cv2.transform(img, m)
    if rng.random() < opts.blur_p:
        k = int(rng.choice([3, 5]))
        out = cv2.GaussianBlur(out, (k, k), 0)
    return out


MOSAIC_CENTRE = (0.25, 0.75)
"""Range of the mosaic's centre, as a share of the input's width and height (every tile at least a quarter wide)."""
MOSAIC_ZOOM = (0.5, 1.0)
"""Zoom of each mosaic tile's image relative to its letterbox scale (log-uniform)."""


def mosaic(records: Sequence[Record], size: InputSize, rng: np.random.Generator, opts: AugmentOptions) -> Rendered:
    """Four images in one input of ``size`` (a side, or ``(width, height)``), one per corner around a
    random centre.

    Each image is rendered with every label into its own tile (:func:`model.data.render`, so objects
    cut by the tile's edge keep their visible part and are dropped below :data:`~model.data.MIN_VISIBLE`
    of their box), with its inner corner at the centre; its zoom follows :data:`MOSAIC_ZOOM` times
    ``opts.scale``'s middle. Boxes of objects with masks shrink to their visible mask.

    Args:
        records: Four records with the same supervision.
        size: Input size.
        rng: Draws the centre, zooms, flips and colours.
        opts: Augmentation options (flip, colour changes).

    Returns:
        A :class:`~model.data.Rendered` whose labels lie inside the input, each mask inside its box.
    """
    sw, sh = input_wh(size)
    cx = int(rng.uniform(*MOSAIC_CENTRE) * sw)
    cy = int(rng.uniform(*MOSAIC_CENTRE) * sh)
    tiles = ((0, 0, cx, cy), (cx, 0, sw - cx, cy), (0, cy, cx, sh - cy), (cx, cy, sw - cx, sh - cy))
    image = np.full((sh, sw, 3), PAD_VALUE, np.uint8)
    sem = np.full((sh, sw), IGNORE, np.uint8)
    ignore = np.zeros((sh, sw), bool)
    boxes, cats, masks, valid = [], [], [], []
    mid = float(np.sqrt(opts.scale[0] * opts.scale[1]))
    for k, (rec, (x0, y0, w, h)) in enumerate(zip(records, tiles)):
        base = Placement.letterbox(rec.width, rec.height, size).scale
        s = base * mid * float(np.exp(rng.uniform(np.log(MOSAIC_ZOOM[0]), np.log(MOSAIC_ZOOM[1]))))
        nw, nh = max(1, round(rec.width * s)), max(1, round(rec.height * s))
        # The image's inner corner sits at the mosaic centre: tiles left of it are right-aligned, etc.
        px = w - nw if k in (0, 2) else 0
        py = h - nh if k in (0, 1) else 0
        p = Placement(s, px, py, w, h, bool(opts.flip and rng.random() < 0.5))
        pixels = photometric(read_rgb(rec.path, reduce_factor(rec, p)), rng, opts)
        r = render(rec, p, image=pixels)
        image[y0 : y0 + h, x0 : x0 + w] = r.image
        sem[y0 : y0 + h, x0 : x0 + w] = r.semantic
        ignore[y0 : y0 + h, x0 : x0 + w] = r.ignore
        full = np.zeros((len(r.categories), sh, sw), bool)
        full[:, y0 : y0 + h, x0 : x0 + w] = r.masks
        boxes.append(r.boxes + np.array([x0, y0, x0, y0], np.float32))
        cats.append(r.categories)
        masks.append(full)
        valid.append(r.mask_valid)
    out = Rendered(image, np.concatenate(boxes).reshape(-1, 4), np.concatenate(cats).astype(np.int32),
                   np.concatenate(masks), np.concatenate(valid).astype(bool), sem, ignore)
    return _fit_boxes_to_masks(out, np.ones(len(out.categories), bool), np.zeros(len(out.categories)))


def _fit_boxes_to_masks(r: Rendered, changed: np.ndarray, old_area: np.ndarray) -> Rendered:
    """Shrink the boxes of ``changed`` objects with masks to their visible mask; drop those whose mask
    is gone or (where ``old_area`` is known) kept less than :data:`~model.data.MIN_VISIBLE` of it."""
    keep = np.ones(len(r.categories), bool)
    boxes = r.boxes.copy()
    for i in np.nonzero(changed & r.mask_valid)[0]:
        ys, xs = np.nonzero(r.masks[i])
        if len(xs) == 0 or len(xs) < MIN_VISIBLE * old_area[i]:
            keep[i] = False
            continue
        b = boxes[i]
        boxes[i] = (max(b[0], xs.min()), max(b[1], ys.min()), min(b[2], xs.max() + 1), min(b[3], ys.max() + 1))
        keep[i] = (boxes[i, 2:] - boxes[i, :2]).min() >= 2
    return Rendered(r.image, boxes[keep], r.categories[keep], r.masks[keep], r.mask_valid[keep], r.semantic, r.ignore)


COPY_SHARE = 0.5
"""Share of the donor's objects pasted (at least one)."""


def copy_paste(dst: Rendered, src: Rendered, rng: np.random.Generator) -> Rendered:
    """Paste objects of ``src`` onto ``dst`` through their masks (copy-paste augmentation).

    Every pasted pixel takes the pasted object's image value, semantic class and instance; objects of
    ``dst`` lose the pixels now covered (their boxes shrink to what stays visible, and an object left
    with less than :data:`~model.data.MIN_VISIBLE` of its mask is dropped). ``dst`` is returned as it is
    when it holds objects without masks (what they lose cannot be known) or ``src`` has no mask to paste.

    Args:
        dst: The image being trained on, rendered at the input.
        src: A donor image rendered at the same input size.
        rng: Which objects are pasted.

    Returns:
        A new :class:`~model.data.Rendered`.
    """
    cand = [i for i in range(len(src.categories)) if src.mask_valid[i] and src.masks[i].any()]
    if not cand or dst.image is None or src.image is None or not dst.mask_valid.all():
        return dst
    chosen = [i for i in cand if rng.random() < COPY_SHARE] or [int(rng.choice(cand))]
    image, sem, ignore = dst.image.copy(), dst.semantic.copy(), dst.ignore.copy()
    masks = dst.masks.copy()
    old_area = masks.sum(axis=(1, 2)).astype(np.float64)
    pasted = np.zeros(sem.shape, bool)
    for i in chosen:  # later objects cover earlier ones, as in the donor's own order
        m = src.masks[i]
        image[m] = src.image[m]
        sem[m] = src.categories[i] + 1
        ignore[m] = False
        pasted |= m
    new_masks = src.masks[chosen].copy()
    for j in range(len(chosen) - 1):  # a pasted object covered by one pasted after it
        new_masks[j] &= ~np.any(new_masks[j + 1 :], axis=0)
    masks &= ~pasted
    changed = np.concatenate([old_area != masks.sum(axis=(1, 2)), np.ones(len(chosen), bool)])
    out = Rendered(image, np.concatenate([dst.boxes, src.boxes[chosen]]).astype(np.float32),
                   np.concatenate([dst.categories, src.categories[chosen]]).astype(np.int32),
                   np.concatenate([masks, new_masks]), np.ones(len(changed), bool), sem, ignore)
    area = np.concatenate([old_area, src.masks[chosen].sum(axis=(1, 2))])
    return _fit_boxes_to_masks(out, changed, area)

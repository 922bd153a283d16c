"""Procedural scenes with exact labels, deterministic by seed.

One generator serves three users: the training and evaluation data (written to disk as COCO by the
workstation side), the calibration images, and the ``synthetic://`` camera source on the device.
It therefore needs only numpy and OpenCV.

A scene holds things of the four classes of :mod:`runtime.contract` drawn over a real photograph
or a texture, with what a camera varies: lighting and colour, rotation, sizes from about 12 pixels
to half the image, occlusion, blur, noise and compression. Labels are exact: every instance's mask
is the part of its shape left visible by the shapes drawn after it, its box is that mask's extent,
and the semantic map is the union of the visible masks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from ..contract import THING_CLASSES

BACKGROUNDS_DIR = Path(__file__).resolve().parents[1] / "assets" / "backgrounds"


@dataclass(frozen=True)
class SceneOptions:
    """How scenes are drawn.

    Attributes:
        width: Image width in pixels.
        height: Image height in pixels.
        min_objects: Fewest things drawn (before occlusion may remove some).
        max_objects: Most things drawn.
        min_size: Smallest object extent in pixels.
        max_size_frac: Largest object extent as a fraction of the shorter image side.
        min_visible_px: An instance with fewer visible pixels is removed from the scene.
        min_visible_frac: An instance with a smaller visible share of its shape is removed.
        photo_prob: Chance that the background is a photograph rather than a texture.
        degrade: Apply blur, noise and JPEG compression at random.
    """

    width: int = 320
    height: int = 320
    min_objects: int = 1
    max_objects: int = 8
    min_size: float = 12.0
    max_size_frac: float = 0.5
    min_visible_px: int = 24
    min_visible_frac: float = 0.25
    photo_prob: float = 0.7
    degrade: bool = True

    def __post_init__(self) -> None:
        if self.width < 32 or self.height < 32:
            raise ValueError(f"Scenes need at least 32x32 pixels. Received: {self.width}x{self.height}")
        if not 0 <= self.min_objects <= self.max_objects:
            raise ValueError(
                "Expected 0 <= min_objects <= max_objects. "
                f"Received: min_objects={self.min_objects}, max_objects={self.max_objects}"
            )
        if self.min_size < 4 or self.max_size_frac * min(self.width, self.height) < self.min_size:
            raise ValueError(
                f"Object sizes are empty: min_size={self.min_size}, max_size_frac={self.max_size_frac} "
                f"for {self.width}x{self.height}"
            )


@dataclass(frozen=True)
class Instance:
    """One visible thing.

    Attributes:
        category: Thing class id (index into ``THING_CLASSES``).
        mask: (H, W) bool, the visible pixels.
        box: (x0, y0, x1, y1) in pixels, the extent of ``mask`` (x1, y1 exclusive).
    """

    category: int
    mask: np.ndarray = field(repr=False)
    box: tuple[int, int, int, int]

    @property
    def area(self) -> int:
        """Visible pixel count."""
        return int(self.mask.sum())


@dataclass(frozen=True)
class Scene:
    """A drawn scene and its labels.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        instances: Visible things, in drawing order (later ones occlude earlier ones).
        semantic: (H, W) uint8 class ids, 0 for background, ``category + 1`` for things.
    """

    image: np.ndarray = field(repr=False)
    instances: tuple[Instance, ...]
    semantic: np.ndarray = field(repr=False)


@lru_cache(maxsize=1)
def _backgrounds() -> tuple[np.ndarray, ...]:
    entries = json.loads((BACKGROUNDS_DIR / "manifest.json").read_text())
    photos = []
    for entry in entries:
        bgr = cv2.imread(str(BACKGROUNDS_DIR / entry["file"]), cv2.IMREAD_COLOR)
        if bgr is not None:
            photos.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return tuple(photos)


def _photo_background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    photos = _backgrounds()
    photo = photos[rng.integers(len(photos))]
    ph, pw = photo.shape[:2]
    scale = rng.uniform(0.45, 1.0)
    cw = max(8, int(pw * scale))
    ch = max(8, min(ph, int(cw * h / w)))
    x0 = rng.integers(0, pw - cw + 1)
    y0 = rng.integers(0, ph - ch + 1)
    crop = photo[y0 : y0 + ch, x0 : x0 + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)


def _texture_background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    kind = rng.integers(4)
    base = rng.uniform(0, 255, size=3)
    if kind == 0:  # smooth noise
        cells = rng.integers(2, 12)
        low = rng.uniform(-60, 60, size=(cells, cells, 3))
        img = base + cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    elif kind == 1:  # stripes
        period = rng.uniform(6, 40)
        angle = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        phase = (xx * np.cos(angle) + yy * np.sin(angle)) / period
        other = rng.uniform(0, 255, size=3)
        t = (np.sin(2 * np.pi * phase) > 0).astype(np.float32)[..., None]
        img = base * t + other * (1 - t)
    elif kind == 2:  # checkerboard
        cell = int(rng.integers(6, 40))
        yy, xx = np.mgrid[0:h, 0:w]
        t = (((xx // cell) + (yy // cell)) % 2).astype(np.float32)[..., None]
        img = base * t + rng.uniform(0, 255, size=3) * (1 - t)
    else:  # gradient
        other = rng.uniform(0, 255, size=3)
        t = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
        img = base * (1 - t) + other * t
        img = np.broadcast_to(img, (h, w, 3))
    img = img + rng.normal(0, rng.uniform(0, 12), size=(h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _shape_polygon(rng: np.random.Generator, category: int, cx: float, cy: float, extent: float) -> np.ndarray:
    """Return an (M, 2) float polygon of the given class whose larger side is about ``extent``."""
    r = extent / 2
    angle = rng.uniform(0, 2 * np.pi)
    name = THING_CLASSES[category]
    if name == "ellipse":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        a, b = r, r * rng.uniform(0.45, 1.0)
        pts = np.stack([a * np.cos(t), b * np.sin(t)], axis=1)
    elif name == "triangle":
        t = np.pi / 2 + np.array([0, 2, 4]) * np.pi / 3 + rng.uniform(-0.25, 0.25, size=3)
        rad = r * rng.uniform(0.85, 1.0, size=3)
        pts = np.stack([rad * np.cos(t), rad * np.sin(t)], axis=1)
    elif name == "rectangle":
        a, b = r, r * rng.uniform(0.35, 1.0)
        pts = np.array([[-a, -b], [a, -b], [a, b], [-a, b]], dtype=np.float64) * 0.75
    else:  # star
        inner = rng.uniform(0.38, 0.5)
        t = np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, r, r * inner)
        pts = np.stack([rad * np.cos(t), rad * np.sin(t)], axis=1)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return pts @ rot.T + np.array([cx, cy])


def _fill(poly: np.ndarray, w: int, h: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _appearance(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A fill for one object's bounding region: flat colour, gradient or speckle; (h, w, 3) float32."""
    colour = rng.uniform(0, 255, size=3).astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:
        return np.broadcast_to(colour, (h, w, 3))
    if kind == 1:
        other = np.clip(colour + rng.uniform(-90, 90, size=3), 0, 255).astype(np.float32)
        t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        return np.broadcast_to(colour * (1 - t) + other * t, (h, w, 3))
    return colour + rng.normal(0, rng.uniform(5, 30), size=(h, w, 3)).astype(np.float32)


def _visible(full: list[np.ndarray]) -> list[np.ndarray]:
    covered = np.zeros_like(full[0]) if full else None
    out: list[np.ndarray] = []
    for m in reversed(full):
        out.append(m & ~covered)
        covered = covered | m
    return out[::-1]


def _degrade(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    f = img.astype(np.float32)
    # Lighting: exposure, contrast, colour cast and a linear illumination gradient.
    f = (f - 128) * rng.uniform(0.7, 1.3) + 128 + rng.uniform(-40, 40)
    f *= rng.uniform(0.85, 1.15, size=3)
    gx, gy = rng.uniform(-0.3, 0.3, size=2)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    f *= (1 + gx * (xx / w - 0.5) + gy * (yy / h - 0.5))[..., None]
    if rng.random() < 0.35:
        f = cv2.GaussianBlur(f, (0, 0), rng.uniform(0.4, 1.4))
    if rng.random() < 0.5:
        f += rng.normal(0, rng.uniform(1, 8), size=f.shape)
    out = np.clip(f, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 95))])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


def draw_scene(seed: int | tuple[int, ...], options: SceneOptions = SceneOptions()) -> Scene:
    """Draw one scene, the same for the same seed and options.

    Args:
        seed: Integer or tuple of integers (for example ``(split_seed, index)``).
        options: Image size and what varies.

    Returns:
        The scene, with an RGB uint8 image of ``(options.height, options.width, 3)``.
    """
    rng = np.random.default_rng(seed)
    w, h = options.width, options.height
    if rng.random() < options.photo_prob:
        bg = _photo_background(rng, w, h)
    else:
        bg = _texture_background(rng, w, h)

    n = int(rng.integers(options.min_objects, options.max_objects + 1))
    lo, hi = np.log(options.min_size), np.log(options.max_size_frac * min(w, h))
    cats, full, fills, regions = [], [], [], []
    for _ in range(n):
        cat = int(rng.integers(len(THING_CLASSES)))
        extent = float(np.exp(rng.uniform(lo, hi)))
        cx, cy = rng.uniform(-0.05, 1.05) * w, rng.uniform(-0.05, 1.05) * h
        mask = _fill(_shape_polygon(rng, cat, cx, cy, extent), w, h)
        # Fill and soft edge live in the object's bounding region (plus a pixel for the blur) only.
        ys, xs = np.nonzero(mask)
        region = (max(0, xs.min() - 2), max(0, ys.min() - 2), min(w, xs.max() + 3), min(h, ys.max() + 3)) \
            if len(xs) else (0, 0, 1, 1)
        cats.append(cat)
        full.append(mask)
        regions.append(region)
        fills.append(_appearance(rng, region[2] - region[0], region[3] - region[1]))

    # Remove what is too small or too hidden to be labelled fairly; removing an occluder can only
    # reveal more of what lies under it, so a few passes settle.
    keep = [int(m.sum()) >= options.min_visible_px for m in full]
    for _ in range(n + 1):
        idx = [i for i in range(n) if keep[i]]
        vis = _visible([full[i] for i in idx])
        changed = False
        for i, v in zip(idx, vis):
            a = int(v.sum())
            if a < options.min_visible_px or a < options.min_visible_frac * full[i].sum():
                keep[i] = False
                changed = True
        if not changed:
            break
    idx = [i for i in range(n) if keep[i]]
    vis = _visible([full[i] for i in idx]) if idx else []

    img = bg.astype(np.float32)
    for i in idx:
        # Soft edges in the picture, hard edges in the label, as a lens and a labeller would give.
        x0, y0, x1, y1 = regions[i]
        alpha = cv2.GaussianBlur(full[i][y0:y1, x0:x1].astype(np.float32), (3, 3), 0.6)[..., None]
        patch = img[y0:y1, x0:x1]
        img[y0:y1, x0:x1] = patch * (1 - alpha) + fills[i] * alpha
    image = np.clip(img, 0, 255).astype(np.uint8)
    if options.degrade:
        image = _degrade(rng, image)

    semantic = np.zeros((h, w), np.uint8)
    instances = []
    for i, v in zip(idx, vis):
        ys, xs = np.nonzero(v)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        instances.append(Instance(category=cats[i], mask=v, box=box))
        semantic[v] = cats[i] + 1
    return Scene(image=np.ascontiguousarray(image), instances=tuple(instances), semantic=semantic)

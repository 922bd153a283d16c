"""Calibration images: any folder of images, read in any mode, fed through the runtime's preprocessing.

Calibration and inference must see the same pixels, so every image goes through
:func:`runtime.preprocess.preprocess_into` (the function the device runs on camera frames).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ocrnet_edge.runtime.contract import InputSize, input_wh
from ocrnet_edge.runtime.errors import InputError
from ocrnet_edge.runtime.preprocess import preprocess_into

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}
MIN_IMAGES = 100
"""Fewer usable calibration images than this are refused unless explicitly allowed."""
DATASET_IMAGES = 200
"""Calibration images sampled from a model's training data."""
BUNDLED = Path(__file__).resolve().parents[1] / "calibration_data"
"""The repository's calibration folder (generated-scene models: the reference), found beside the package in
a checkout whatever the working directory; elsewhere ``./calibration_data``."""


@dataclass(frozen=True)
class CalibrationSet:
    """Usable calibration images and the files that were skipped.

    Attributes:
        files: Readable image files, sorted by name.
        skipped: ``(file, reason)`` for every file that could not be used.
    """

    files: tuple[Path, ...]
    skipped: tuple[tuple[Path, str], ...]


def to_rgb8(img: np.ndarray) -> np.ndarray:
    """Any decoded image (gray, gray+alpha, BGR, BGRA, 8 or 16 bit, float) to (H, W, 3) uint8 RGB."""
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        f = img.astype(np.float32)
        img = np.clip(f * 255.0 if f.max() <= 1.0 else f, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 1:
        return cv2.cvtColor(img[..., 0], cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 2:  # gray + alpha
        return cv2.cvtColor(img[..., 0], cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_image_any(path: Path) -> np.ndarray | None:
    """Read an image in whatever mode it is stored (palette, CMYK, 16-bit...) as RGB uint8, or None."""
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        return None
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        return None
    return to_rgb8(img)


def scan(folder: Path | str, min_images: int = MIN_IMAGES) -> CalibrationSet:
    """Find the usable images of a calibration folder (recursively).

    Raises:
        InputError: The folder is missing, holds no images, or fewer than ``min_images`` usable ones.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: calibration folder not found")
    candidates = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    files, skipped = [], []
    for p in candidates:
        if read_image_any(p) is None:
            skipped.append((p, "cannot be decoded as an image"))
        else:
            files.append(p)
    if not files:
        raise InputError(f"{folder}: no usable calibration images (found {len(candidates)} image files, "
                         f"{len(skipped)} unreadable)")
    if len(files) < min_images:
        raise InputError(
            f"{folder}: only {len(files)} usable calibration images, need at least {min_images} for stable int8 "
            "ranges (add images, or pass --min-calib N to accept fewer)"
        )
    return CalibrationSet(tuple(files), tuple(skipped))


def sample_files(files: list[Path], count: int, seed: int = 0) -> list[Path]:
    """Up to ``count`` files drawn without replacement by ``seed``, in their original order."""
    if len(files) <= count:
        return list(files)
    pick = np.sort(np.random.default_rng(seed).choice(len(files), count, replace=False))
    return [files[i] for i in pick]


def iter_preprocessed(files: tuple[Path, ...], size: InputSize, mode: str = "letterbox") -> Iterator[np.ndarray]:
    """(1, H, W, 3) float32 pixels in [0, 255] per image for an input of ``size`` (a side, or ``(width,
    height)``), prepared exactly as the runtime prepares frames."""
    w, h = input_wh(size)
    buf = np.empty((1, h, w, 3), np.uint8)
    for p in files:
        img = read_image_any(p)
        if img is None:
            continue
        preprocess_into(img, buf, mode=mode)
        yield buf.astype(np.float32)


def trained_on_scenes(cfg, data_record: dict | None) -> bool:
    """Whether the model was trained on this project's generated scenes (the reference model)."""
    if data_record is not None:
        return bool(data_record.get("generated"))
    from ocrnet_edge.runtime.contract import THING_CLASSES

    return tuple(cfg.class_names) == THING_CLASSES and not cfg.stuff_names


def recorded_dataset(entry: dict, cfg, what: str, model_path: Path, flag: str):
    """The dataset (and split, and held-out share) a model's data record names, read with its classes.

    Raises:
        InputError: The recorded folder is not on this machine (naming the flag to pass instead).
    """
    from ocrnet_edge.model.data import holdout_split, load_dataset

    path = Path(entry["path"])
    if not path.exists():
        raise InputError(f"{model_path}: its {what} data {path} is not here (the model records where it was "
                         f"trained); pass {flag} DIR with images of the model's own domain")
    ds = load_dataset(path, cfg.class_names, split=entry.get("split", "all"), stuff_names=cfg.stuff_names,
                      skip_bad=True)
    hold = entry.get("holdout") or entry.get("holdout_excluded")
    if hold:
        train, val = holdout_split(ds, hold["fraction"], hold["seed"])
        ds = val if "holdout" in entry else train
    return ds


def for_model(model_path: Path, cfg, data_record: dict | None, folder: Path | None = None,
              min_images: int = MIN_IMAGES) -> tuple[CalibrationSet, str]:
    """A model's calibration images and where they came from.

    ``folder`` when given; else images sampled from the dataset the model was trained on (recorded in
    the model); the bundled ``calibration_data/`` only for a model trained on generated scenes. A model
    with other classes is never calibrated on the bundled scenes.

    Raises:
        InputError: Neither a folder nor a usable record of the training data.
    """
    if folder is not None:
        return scan(folder, min_images), f"folder {folder}"
    if trained_on_scenes(cfg, data_record):
        folder = BUNDLED if BUNDLED.is_dir() else Path("calibration_data")
        return scan(folder, min_images), f"folder {folder} (bundled, for generated-scene models)"
    if data_record is None:
        raise InputError(f"{model_path}: no record of the data this model was trained on and its classes are not the "
                         "generated scenes'; pass --calib DIR with images of the model's own domain")
    ds = recorded_dataset(data_record["train"], cfg, "training", model_path, "--calib")
    files = sample_files([r.path for r in ds.records], DATASET_IMAGES, seed=0)
    return CalibrationSet(tuple(files), ()), f"sampled from the training data {data_record['train']['path']}"


def read_manifest(folder: Path) -> list[dict]:
    """The folder's ``manifest.json`` (file, source, licence, sha256 per image), or an empty list."""
    p = Path(folder) / "manifest.json"
    return json.loads(p.read_text()) if p.exists() else []


def write_calibration_folder(out: Path | str, scenes: int = 180, seed: int = 424242) -> Path:
    """Build the repository's ``calibration_data/``: the bundled real photographs and procedural scenes.

    Photographs come from ``runtime/assets/backgrounds`` (their manifest gives source and licence);
    scenes are drawn with a seed that no training, validation or held-out split uses, half square and
    half 4:3 (so calibration also sees the letterbox bars a camera frame gets). Every class appears.
    """
    import hashlib
    import shutil

    from ocrnet_edge.runtime.io.scenes import BACKGROUNDS_DIR, SceneOptions, draw_scene

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for e in json.loads((BACKGROUNDS_DIR / "manifest.json").read_text()):
        dst = out / f"photo_{e['file']}"
        shutil.copyfile(BACKGROUNDS_DIR / e["file"], dst)
        entries.append({"file": dst.name, "source": e["source"], "licence": e["licence"]})
    seen: set[int] = set()
    for i in range(scenes):
        w, h = (320, 320) if i % 2 == 0 else (480, 360)
        scene = draw_scene((seed, i), SceneOptions(width=w, height=h, min_objects=2))
        seen |= {inst.category for inst in scene.instances}
        dst = out / f"scene_{seed}_{i:04d}.jpg"
        cv2.imwrite(str(dst), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        entries.append({"file": dst.name, "source": f"ocrnet-edge procedural scene seed ({seed}, {i}), {w}x{h}",
                        "licence": "CC0-1.0 (generated by this project)",
                        "classes": sorted({int(inst.category) for inst in scene.instances})})
    for e in entries:
        e["sha256"] = hashlib.sha256((out / e["file"]).read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(entries, indent=1) + "\n")
    return out

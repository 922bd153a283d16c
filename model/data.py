"""Datasets on disk in COCO format: writing generated scenes, reading any COCO instances dataset.

Layout::

    DIR/images/<stem>.jpg          RGB photographs or scenes
    DIR/annotations.json           COCO instances (RLE or polygon masks), category names by class
    DIR/semantic/<stem>.png        optional uint8 label maps (0 background, k + 1 for thing k);
                                   derived from the instance masks when the folder is absent
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from ocrnet_edge.runtime.contract import SEMANTIC_CLASSES, THING_CLASSES
from ocrnet_edge.runtime.errors import InputError, OutputError
from ocrnet_edge.runtime.scenes import SceneOptions, draw_scene

ANNOTATIONS = "annotations.json"


@dataclass(frozen=True)
class Record:
    """One image of a dataset with its instances.

    Attributes:
        image_id: COCO image id.
        path: Image file.
        width: Image width.
        height: Image height.
        categories: (I,) int thing class ids.
        boxes: (I, 4) float32 x0, y0, x1, y1 pixels.
        segmentations: COCO segmentation per instance (RLE dict or polygon list).
        semantic_path: Label map file, or None to derive it from the instances.
    """

    image_id: int
    path: Path
    width: int
    height: int
    categories: np.ndarray
    boxes: np.ndarray
    segmentations: tuple = field(repr=False)
    semantic_path: Path | None = None

    def masks(self) -> np.ndarray:
        """(I, H, W) bool instance masks."""
        if not self.segmentations:
            return np.zeros((0, self.height, self.width), bool)
        out = []
        for seg in self.segmentations:
            if isinstance(seg, list):
                rles = mask_utils.frPyObjects(seg, self.height, self.width)
                rle = mask_utils.merge(rles)
            elif isinstance(seg.get("counts"), list):
                rle = mask_utils.frPyObjects(seg, self.height, self.width)
            else:
                rle = seg
            out.append(mask_utils.decode(rle).astype(bool))
        return np.stack(out)

    def image(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB pixels."""
        return read_rgb(self.path)

    def semantic(self) -> np.ndarray:
        """(H, W) uint8 semantic label map."""
        if self.semantic_path is not None:
            sem = cv2.imread(str(self.semantic_path), cv2.IMREAD_UNCHANGED)
            if sem is None or sem.shape[:2] != (self.height, self.width):
                raise InputError(f"{self.semantic_path}: not a {self.width}x{self.height} uint8 label map")
            return sem.astype(np.uint8)
        sem = np.zeros((self.height, self.width), np.uint8)
        for cat, m in zip(self.categories, self.masks()):
            sem[m] = cat + 1
        return sem


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB, or raise :class:`InputError` naming the file."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        if not Path(path).exists():
            raise InputError(f"{path}: image file not found")
        raise InputError(f"{path}: cannot decode this file as an image (corrupt or not an image)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True)
class Dataset:
    """A COCO instances dataset read from disk.

    Attributes:
        root: The dataset folder.
        records: Images with their instances, in annotation order.
        class_names: Thing classes, in id order.
    """

    root: Path
    records: tuple[Record, ...]
    class_names: tuple[str, ...] = THING_CLASSES

    def __len__(self) -> int:
        return len(self.records)

    def coco_dict(self) -> dict:
        """The dataset's ground truth as a COCO dict (category ids 1..C by class order)."""
        return json.loads((self.root / ANNOTATIONS).read_text())


def load_dataset(root: Path | str, class_names: tuple[str, ...] = THING_CLASSES, check_images: bool = True) -> Dataset:
    """Read a COCO dataset folder, refusing what cannot be trained or evaluated on.

    Raises:
        InputError: One line naming the file: a missing folder or annotations file, malformed JSON,
            unknown category names, missing or unreadable images.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: dataset folder not found")
    ann_path = root / ANNOTATIONS
    if not ann_path.is_file():
        raise InputError(f"{ann_path}: no COCO annotations file in the dataset folder (expected {ANNOTATIONS})")
    try:
        coco = json.loads(ann_path.read_text())
        images, anns, cats = coco["images"], coco.get("annotations", []), coco["categories"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise InputError(f"{ann_path}: not a COCO instances file ({type(e).__name__}: {e})") from None
    cat_to_class = {}
    unknown = []
    for c in cats:
        if c.get("name") in class_names:
            cat_to_class[c["id"]] = class_names.index(c["name"])
        else:
            unknown.append(c.get("name"))
    if unknown:
        raise InputError(f"{ann_path}: unknown category names {unknown}; this model knows {list(class_names)}")
    per_image: dict[int, list] = {im["id"]: [] for im in images}
    for a in anns:
        if a.get("image_id") not in per_image:
            raise InputError(f"{ann_path}: annotation {a.get('id')} refers to unknown image_id {a.get('image_id')}")
        if a.get("category_id") not in cat_to_class:
            raise InputError(f"{ann_path}: annotation {a.get('id')} has unknown category_id {a.get('category_id')}")
        per_image[a["image_id"]].append(a)
    sem_dir = root / "semantic"
    records = []
    for im in images:
        path = root / "images" / im["file_name"]
        if check_images and not path.is_file():
            raise InputError(f"{path}: image listed in {ann_path.name} is missing")
        a_list = [a for a in per_image[im["id"]] if not a.get("iscrowd", 0)]
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in a_list], np.float32).reshape(-1, 4)
        sem = sem_dir / (Path(im["file_name"]).stem + ".png")
        records.append(Record(
            image_id=int(im["id"]), path=path, width=int(im["width"]), height=int(im["height"]),
            categories=np.array([cat_to_class[a["category_id"]] for a in a_list], np.int32),
            boxes=boxes, segmentations=tuple(a["segmentation"] for a in a_list),
            semantic_path=sem if sem_dir.is_dir() else None,
        ))
    if not records:
        raise InputError(f"{ann_path}: the dataset has no images")
    return Dataset(root=root, records=tuple(records), class_names=class_names)


def encode_rle(mask: np.ndarray) -> dict:
    """COCO compressed RLE of an (H, W) bool mask, JSON-ready."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def write_scenes(out: Path | str, count: int, seed: int, size: int = 320, progress: bool = True) -> Path:
    """Generate ``count`` scenes with ``seed`` and write them as a COCO dataset folder.

    The folder is built under a temporary name and renamed when complete, so an interrupted run
    leaves no half-written dataset.

    Returns:
        The dataset folder.
    """
    out = Path(out)
    if out.exists():
        raise OutputError(f"{out}: already exists; choose a new folder or remove it first")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "images").mkdir(parents=True)
        (tmp / "semantic").mkdir()
    except OSError as e:
        raise OutputError(f"{out}: cannot create the dataset folder ({e.strerror})") from None
    opts = SceneOptions(width=size, height=size)
    images, anns = [], []
    for i in tqdm(range(count), desc=f"scenes seed={seed}", disable=not progress, unit="img"):
        scene = draw_scene((seed, i), opts)
        stem = f"{seed:04d}_{i:06d}"
        cv2.imwrite(str(tmp / "images" / f"{stem}.jpg"), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(tmp / "semantic" / f"{stem}.png"), scene.semantic)
        images.append({"id": i + 1, "file_name": f"{stem}.jpg", "width": size, "height": size})
        for inst in scene.instances:
            x0, y0, x1, y1 = inst.box
            anns.append({
                "id": len(anns) + 1, "image_id": i + 1, "category_id": inst.category + 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": inst.area, "iscrowd": 0,
                "segmentation": encode_rle(inst.mask),
            })
    coco = {
        "info": {"description": f"ocrnet-edge procedural scenes, seed {seed}", "version": "1"},
        "images": images,
        "annotations": anns,
        "categories": [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(THING_CLASSES)],
        "semantic_classes": list(SEMANTIC_CLASSES),
    }
    (tmp / ANNOTATIONS).write_text(json.dumps(coco))
    tmp.rename(out)
    return out


def write_clip(out: Path | str, frames: int = 90, seed: int = 777, size: tuple[int, int] = (640, 480),
               fps: float = 30.0) -> Path:
    """A short camera-like clip: a window panning across one large procedural scene (MPEG-4, ``.mp4``).

    Objects keep their identity from frame to frame (the camera moves, not the world), so the clip
    shows tracking-like behaviour that independent scenes would not.
    """
    out = Path(out)
    w, h = size
    world = draw_scene(seed, SceneOptions(width=int(w * 1.6), height=int(h * 1.4), min_objects=8, max_objects=14,
                                          max_size_frac=0.3))
    tmp = out.with_name(out.stem + ".partial" + out.suffix)
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise OutputError(f"{out}: OpenCV cannot write MPEG-4 here")
    wh, ww = world.image.shape[:2]
    for i in range(frames):
        t = i / max(1, frames - 1)
        x = int((ww - w) * t)
        y = int((wh - h) * (0.5 - 0.5 * np.cos(np.pi * t)))
        writer.write(cv2.cvtColor(np.ascontiguousarray(world.image[y : y + h, x : x + w]), cv2.COLOR_RGB2BGR))
    writer.release()
    tmp.replace(out)
    return out

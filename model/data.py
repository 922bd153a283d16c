"""Labelled datasets: the records every reader produces, rendering them at the model input, writing scenes.

A dataset is a list of :class:`Record` (one image each) with the classes it knows:

- *thing* classes get boxes, instance masks and pixels in the semantic map;
- *stuff* (region) classes get pixels in the semantic map only (COCO panoptic's ``isthing: 0``,
  every class of a label-map dataset).

Semantic ids: ``0`` background, ``1..T`` thing classes, ``T+1..T+S`` stuff classes, :data:`IGNORE`
for pixels nothing is taught about (crowd regions, unlabelled areas, letterbox bars).

Each record says what its labels support (``supervision``): boxes only teach detection, label maps
only teach the semantic map, instance masks teach all three. The readers for the formats people
export (COCO, Ultralytics YOLO, semantic label maps) live in :mod:`model.formats`;
:func:`load_dataset` picks the reader from what the folder holds.

Our own generated scenes are a COCO dataset::

    DIR/images/<stem>.jpg          scenes
    DIR/annotations.json           COCO instances (RLE masks)
    DIR/semantic/<stem>.png        uint8 label maps (0 background, k + 1 for thing k)
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from ocrnet_edge.runtime.contract import SEMANTIC_CLASSES, THING_CLASSES, InputSize, input_wh
from ocrnet_edge.runtime.errors import InputError, OutputError
from ocrnet_edge.runtime.io.rle import encode as encode_rle  # the one RLE encoder (equal to pycocotools')
from ocrnet_edge.runtime.io.scenes import SceneOptions, draw_scene
from ocrnet_edge.runtime.preprocess import PAD_VALUE

ANNOTATIONS = "annotations.json"
IGNORE = 255
"""Semantic label of pixels that teach nothing (and are not scored)."""

TASK_LABELS = ("boxes", "masks", "semantic")


def norm_name(name: str) -> str:
    """A class name as compared: Unicode NFC (so composed and decomposed accents match), outer spaces removed."""
    return unicodedata.normalize("NFC", str(name)).strip()


@dataclass(frozen=True)
class Supervision:
    """What one image's labels can teach.

    Attributes:
        boxes: Every thing object of the image has a box (detection can learn from it, including
            that there is nothing else).
        masks: Every thing object has an instance mask (instance masks can be learnt and scored).
        semantic: Every pixel has a semantic label or is marked ignored (the semantic map).
    """

    boxes: bool = True
    masks: bool = True
    semantic: bool = True

    def tasks(self) -> tuple[str, ...]:
        """The label kinds present, in :data:`TASK_LABELS` order."""
        return tuple(t for t in TASK_LABELS if getattr(self, t))


@dataclass(frozen=True)
class Record:
    """One image of a dataset with its labels, in the image's own pixels.

    Attributes:
        image_id: Image id (COCO's, or the position in the dataset).
        path: Image file.
        width: Image width (as decoded, EXIF orientation applied).
        height: Image height.
        categories: (I,) int thing class ids.
        boxes: (I, 4) float32 x0, y0, x1, y1 pixels.
        segmentations: Per instance: polygons (list of flat x, y lists), COCO RLE dict, or None (box only).
        crowd: ``(box, segmentation or None)`` regions that are neither taught nor scored (COCO ``iscrowd``),
            or ``(box, segmentation or None, thing class id)`` where the class is known (VOC ``difficult``).
        stuff: ``(semantic id, segmentation)`` regions of stuff classes.
        semantic_path: Label map file, or None to derive the semantic map from the masks.
        semantic_lut: (256,) uint8 map from label-map values to semantic ids (IGNORE for unknown values).
        supervision: What the labels support.
        exif_rotated: The file's EXIF orientation rotates or mirrors its pixels (decoders apply it, but
            OpenCV's reduced-size JPEG decoding does not, so such files are decoded whole).
    """

    image_id: int
    path: Path
    width: int
    height: int
    categories: np.ndarray
    boxes: np.ndarray
    segmentations: tuple = field(default=(), repr=False)
    crowd: tuple = field(default=(), repr=False)
    stuff: tuple = field(default=(), repr=False)
    semantic_path: Path | None = None
    semantic_lut: np.ndarray | None = field(default=None, repr=False, compare=False)
    supervision: Supervision = Supervision()
    exif_rotated: bool = False

    def masks(self) -> np.ndarray:
        """(I, H, W) bool instance masks at the image's resolution (all False for a box-only instance)."""
        out = np.zeros((len(self.segmentations), self.height, self.width), bool)
        for i, seg in enumerate(self.segmentations):
            if seg is not None:
                out[i] = decode_segmentation(seg, self.height, self.width)
        return out

    def has_masks(self) -> np.ndarray:
        """(I,) bool: which instances carry a mask."""
        return np.array([s is not None for s in self.segmentations], bool)

    def image(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB pixels."""
        return read_rgb(self.path)

    def semantic(self) -> np.ndarray:
        """(H, W) uint8 semantic label map at the image's resolution (:data:`IGNORE` where unlabelled)."""
        return render(self, Placement(1.0, 0, 0, self.width, self.height), with_image=False).semantic


def decode_segmentation(seg, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of a COCO segmentation: polygons, uncompressed or compressed RLE."""
    return mask_utils.decode(to_rle(seg, height, width)).astype(bool)


JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe")


def truncated_jpeg(path: Path | str, tail: int = 65536) -> bool:
    """Whether a JPEG file lacks its end-of-image marker (``FF D9``, allowing zero padding after it): a
    cut-off download or copy. OpenCV still decodes it, with the missing rows grey, and libjpeg prints
    "Premature end of JPEG file" each time, so the file trains on grey it was never labelled for."""
    path = Path(path)
    if path.suffix.lower() not in JPEG_SUFFIXES:
        return False
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - tail))
            end = f.read().rstrip(b"\x00")
    except OSError:
        return False  # unreadable files are reported where they are read
    return b"\xff\xd9" not in end[-16:]  # a few stray bytes after the marker are harmless


def truncated_text(paths: list[str]) -> str:
    """The line that names truncated JPEGs (``dataset`` and ``train`` print it)."""
    return (f"truncated JPEGs (no end marker: they decode with grey rows where the file was cut; export them "
            f"again): {len(paths)}: {', '.join(paths[:3])}" + (" ..." if len(paths) > 3 else ""))


@functools.cache
def known_truncated(path: str) -> bool:
    """:func:`truncated_jpeg`, looked at once per file in a process (a training run reads each image hundreds
    of times)."""
    return truncated_jpeg(path)


@contextmanager
def _c_stderr_silenced():
    """File descriptor 2 goes to the null device for the block: libjpeg writes its warnings there directly,
    past Python's ``sys.stderr``."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def read_rgb(path: Path, reduce: int = 1) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB, or raise :class:`InputError` naming the file.

    A truncated JPEG (:func:`truncated_jpeg`) decodes without libjpeg's "Premature end of JPEG file" on the
    terminal: training reads it once a pass, and ``train`` and ``dataset`` say once which files they are.

    Args:
        path: Image file.
        reduce: Decode at 1/2, 1/4 or 1/8 of the size (JPEG decodes that directly, much faster).
    """
    flag = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}[reduce]
    if known_truncated(str(path)):
        with _c_stderr_silenced():
            bgr = cv2.imread(str(path), flag)
    else:
        bgr = cv2.imread(str(path), flag)
    if bgr is None:
        if not Path(path).exists():
            raise InputError(f"{path}: image file not found")
        raise InputError(f"{path}: cannot decode this file as an image (corrupt or not an image)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True)
class Placement:
    """Where an image lands in the model input: ``input = image * scale + (x, y)``, then an optional mirror.

    Attributes:
        scale: Input pixels per image pixel (both axes).
        x: Left offset of the scaled image in input pixels (may be negative: cropped).
        y: Top offset.
        size_w: Output width (the model input's).
        size_h: Output height.
        flip: Mirror left-right after placing.
    """

    scale: float
    x: int
    y: int
    size_w: int
    size_h: int
    flip: bool = False

    @staticmethod
    def letterbox(width: int, height: int, size: InputSize) -> Placement:
        """What the runtime's letterbox does to a ``width`` x ``height`` frame, for an input of ``size``
        (a side, or ``(width, height)``)."""
        from ocrnet_edge.runtime.preprocess import plan

        t = plan(width, height, size)
        return Placement(t.scale_x, int(t.pad_x), int(t.pad_y), *input_wh(size))

    def scaled_size(self, width: int, height: int) -> tuple[int, int]:
        return max(1, round(width * self.scale)), max(1, round(height * self.scale))


@dataclass(frozen=True)
class Rendered:
    """A record rendered at the model input.

    Attributes:
        image: (H, W, 3) uint8 RGB, or None when not asked for.
        boxes: (I, 4) float32 visible boxes in input pixels.
        categories: (I,) int32.
        masks: (I, H, W) bool.
        mask_valid: (I,) bool: the instance's mask is known.
        semantic: (H, W) uint8 semantic ids, :data:`IGNORE` where unlabelled.
        ignore: (H, W) bool crowd regions (no detection target either way).
    """

    image: np.ndarray | None
    boxes: np.ndarray
    categories: np.ndarray
    masks: np.ndarray
    mask_valid: np.ndarray
    semantic: np.ndarray
    ignore: np.ndarray


MIN_VISIBLE = 0.25
"""An object cropped to less than this share of its box area is dropped from the detection targets."""


def _paste(canvas: np.ndarray, small: np.ndarray, p: Placement) -> None:
    """Paste ``small`` (already scaled) into ``canvas`` at the placement's offset, clipping."""
    h, w = small.shape[:2]
    x0, y0 = max(0, p.x), max(0, p.y)
    x1, y1 = min(canvas.shape[1], p.x + w), min(canvas.shape[0], p.y + h)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = small[y0 - p.y : y1 - p.y, x0 - p.x : x1 - p.x]


def _place_mask(seg, rec: Record, p: Placement) -> np.ndarray:
    out = np.zeros((p.size_h, p.size_w), np.uint8)
    if isinstance(seg, list):  # polygons: transform the points and fill at the target resolution
        # COCO's pixel i spans [i, i + 1); OpenCV puts pixel centres on integers: hence the half-pixel shift.
        polys = [np.round((np.asarray(poly, np.float64).reshape(-1, 2) * p.scale + (p.x - 0.5, p.y - 0.5)) * 4)
                 .astype(np.int32) for poly in seg if len(poly) >= 6]
        if polys:
            cv2.fillPoly(out, polys, 1, lineType=cv2.LINE_8, shift=2)
        return out.astype(bool)
    full = decode_segmentation(seg, rec.height, rec.width).astype(np.uint8)
    nw, nh = p.scaled_size(rec.width, rec.height)
    _paste(out, cv2.resize(full, (nw, nh), interpolation=cv2.INTER_NEAREST), p)
    return out.astype(bool)


def _read_label_map(rec: Record) -> np.ndarray:
    lab = cv2.imread(str(rec.semantic_path), cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise InputError(f"{rec.semantic_path}: cannot decode this label map")
    if lab.ndim == 3:
        lab = lab[..., 0]
    if lab.shape[:2] != (rec.height, rec.width):
        raise InputError(f"{rec.semantic_path}: label map is {lab.shape[1]}x{lab.shape[0]}, its image "
                         f"{rec.width}x{rec.height}; label maps must be at the image's resolution")
    if rec.semantic_lut is None:
        return lab.astype(np.uint8)
    lut = rec.semantic_lut
    return lut[np.minimum(lab, len(lut) - 1).astype(np.intp)] if lab.dtype != np.uint8 else cv2.LUT(lab, lut)


def render(rec: Record, p: Placement, with_image: bool = True, image: np.ndarray | None = None) -> Rendered:
    """Render a record's image and every label at a placement, consistently.

    Polygons are transformed and filled at the target resolution; RLE masks and label maps are
    resized with nearest-neighbour sampling; the image is resized as the runtime resizes frames
    (area averaging when shrinking). Outside the image the input is the runtime's pad grey and the
    semantic map is :data:`IGNORE`.

    Args:
        rec: The record.
        p: Where the image lands.
        with_image: Also render the pixels.
        image: The record's pixels already decoded (possibly at a reduced size), else they are read.
    """
    sw, sh = p.size_w, p.size_h
    nw, nh = p.scaled_size(rec.width, rec.height)
    img = None
    if with_image:
        src = image if image is not None else rec.image()
        img = np.full((sh, sw, 3), PAD_VALUE, np.uint8)
        interp = cv2.INTER_AREA if nw < src.shape[1] else cv2.INTER_LINEAR
        _paste(img, cv2.resize(src, (nw, nh), interpolation=interp), p)
    inside = np.zeros((sh, sw), bool)
    _paste(inside, np.ones((nh, nw), bool), p)

    n = len(rec.categories)
    masks = np.zeros((n, sh, sw), bool)
    valid = rec.has_masks() if n else np.zeros(0, bool)
    for i, seg in enumerate(rec.segmentations):
        if seg is not None:
            masks[i] = _place_mask(seg, rec, p)
    boxes = rec.boxes.astype(np.float32).reshape(-1, 4) * p.scale + np.array([p.x, p.y, p.x, p.y], np.float32)
    ignore = np.zeros((sh, sw), bool)
    for box, seg, *_ in rec.crowd:
        if seg is not None:
            ignore |= _place_mask(seg, rec, p)
        else:
            b = np.asarray(box, np.float64) * p.scale + (p.x, p.y, p.x, p.y)
            ignore[max(0, int(b[1])) : max(0, int(np.ceil(b[3]))), max(0, int(b[0])) : max(0, int(np.ceil(b[2])))] = True

    sup = rec.supervision
    if rec.semantic_path is not None:
        sem = np.full((sh, sw), IGNORE, np.uint8)
        lab = _read_label_map(rec)
        _paste(sem, cv2.resize(lab, (nw, nh), interpolation=cv2.INTER_NEAREST), p)
    elif sup.semantic:
        sem = np.where(inside, 0, IGNORE).astype(np.uint8)
        for sid, seg in rec.stuff:
            sem[_place_mask(seg, rec, p) & inside] = sid
        for cat, m in zip(rec.categories, masks):
            sem[m] = cat + 1
        for b, ok in zip(boxes, valid):  # an object without a mask: its box teaches nothing either way
            if not ok:
                sem[max(0, int(b[1])) : max(0, int(np.ceil(b[3]))), max(0, int(b[0])) : max(0, int(np.ceil(b[2])))] = IGNORE
        sem[ignore] = IGNORE
    else:
        sem = np.full((sh, sw), IGNORE, np.uint8)

    # Boxes of cropped objects shrink to what is visible; mostly hidden ones are dropped.
    keep = np.ones(n, bool)
    if n:
        lo = np.array([max(0, p.x), max(0, p.y)] * 2, np.float32)
        hi = np.array([min(sw, p.x + nw), min(sh, p.y + nh)] * 2, np.float32)
        vis = np.clip(boxes, lo, hi)
        area = np.prod(np.maximum(boxes[:, 2:] - boxes[:, :2], 1e-6), axis=1)
        vis_area = np.prod(np.maximum(vis[:, 2:] - vis[:, :2], 0), axis=1)
        keep = (vis_area >= MIN_VISIBLE * area) & ((vis[:, 2:] - vis[:, :2]).min(axis=1) >= 2)
        boxes = vis
    if p.flip:
        if img is not None:
            img = np.ascontiguousarray(img[:, ::-1])
        masks, sem, ignore = masks[:, :, ::-1], np.ascontiguousarray(sem[:, ::-1]), ignore[:, ::-1]
        boxes = boxes.copy()
        boxes[:, [0, 2]] = sw - boxes[:, [2, 0]]
    return Rendered(img, boxes[keep].astype(np.float32), rec.categories[keep].astype(np.int32), masks[keep],
                    valid[keep], sem, np.ascontiguousarray(ignore))


@dataclass(frozen=True)
class Dataset:
    """A labelled dataset read from disk.

    Attributes:
        root: The dataset folder (or the file it was read from).
        records: Images with their labels.
        thing_classes: Thing classes, in id order.
        stuff_classes: Region classes (semantic map only), in order after the thing classes.
        format: ``coco``, ``yolo``, ``labelmap`` or ``voc``.
        split: The split read (``train``, ``val``...) or ``all``.
        notes: Lines worth telling the user (dropped annotations, skipped files).
        problems: Problems found (each naming the file); empty unless read with ``skip_bad`` or for a summary.
        generated: The dataset is this project's procedural scenes (``ocrnet-edge generate``).
    """

    root: Path
    records: tuple[Record, ...]
    thing_classes: tuple[str, ...] = THING_CLASSES
    stuff_classes: tuple[str, ...] = ()
    format: str = "coco"
    split: str = "all"
    notes: tuple[str, ...] = ()
    problems: tuple = ()
    generated: bool = False

    def __len__(self) -> int:
        return len(self.records)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Thing classes (the detection classes), in id order."""
        return self.thing_classes

    @property
    def semantic_classes(self) -> tuple[str, ...]:
        """Semantic classes: background, thing classes, stuff classes."""
        return ("background", *self.thing_classes, *self.stuff_classes)

    def subset(self, records) -> Dataset:
        """The same dataset with other records."""
        return replace(self, records=tuple(records))

    def supports(self, label: str) -> int:
        """How many images carry ``label`` (``boxes``, ``masks`` or ``semantic``)."""
        return sum(1 for r in self.records if getattr(r.supervision, label))

    def coco_dict(self, label: str = "boxes") -> dict:
        """Ground truth as a COCO dict (category ids ``1..T``) over the images that carry ``label``
        (``boxes`` or ``masks``); crowd regions as ``iscrowd`` annotations."""
        images, anns = [], []
        for r in self.records:
            if not getattr(r.supervision, label):
                continue
            images.append({"id": r.image_id, "width": r.width, "height": r.height, "file_name": str(r.path)})
            for cat, box, seg in zip(r.categories.tolist(), r.boxes.tolist(), r.segmentations):
                anns.append(_coco_ann(len(anns) + 1, r, cat, box, seg, crowd=False))
            for box, seg, *cat in r.crowd:  # without a class, COCO's crowd region counts for the first class
                anns.append(_coco_ann(len(anns) + 1, r, cat[0] if cat else 0, list(box), seg, crowd=True))
        return {"images": images, "annotations": anns,
                "categories": [{"id": k + 1, "name": n} for k, n in enumerate(self.thing_classes)]}


def _coco_ann(ann_id: int, r: Record, cat: int, box, seg, crowd: bool) -> dict:
    x0, y0, x1, y1 = (float(v) for v in box)
    a = {"id": ann_id, "image_id": r.image_id, "category_id": cat + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
         "area": (x1 - x0) * (y1 - y0), "iscrowd": int(crowd)}
    if seg is None:
        seg = [[x0, y0, x1, y0, x1, y1, x0, y1]]  # a box-only crowd region is its box
    if crowd and isinstance(seg, list):
        seg = encode_rle(decode_segmentation(seg, r.height, r.width))  # COCO wants crowd regions as RLE
    a["segmentation"] = seg
    if not crowd and seg is not None:
        a["area"] = float(mask_utils.area(to_rle(seg, r.height, r.width)))
    return a


def to_rle(seg, h: int, w: int):
    """A COCO segmentation (polygons, uncompressed or compressed RLE) as pycocotools' RLE object."""
    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    if isinstance(seg.get("counts"), list):
        return mask_utils.frPyObjects(seg, h, w)
    return {"size": seg["size"], "counts": seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"]}


def load_dataset(root: Path | str, class_names: tuple[str, ...] | None = None, check_images: bool = True,
                 split: str = "train", stuff_names: tuple[str, ...] | None = None, skip_bad: bool = False,
                 quiet: bool = True, strict_classes: bool = False) -> Dataset:
    """Read a labelled dataset in any supported format (COCO, Ultralytics YOLO, semantic label maps).

    Args:
        root: Dataset folder, a COCO JSON file, or a YOLO ``data.yaml``.
        class_names: Thing classes to keep, in this order (a model's); None: the dataset's own.
        check_images: Check that every image exists and can be read (header only).
        split: Split to read where the format has splits (YOLO ``train``/``val``, Roboflow folders);
            ``all`` reads every image of a single-split dataset.
        stuff_names: Region classes to keep, in this order; None: the dataset's own.
        skip_bad: Skip files with problems (counted in ``notes``) instead of refusing the dataset.
        quiet: Do not print the notes.
        strict_classes: Refuse ``class_names`` the dataset does not have (see :func:`select_classes`).

    Raises:
        InputError: One line naming the file (and line for text labels) of the first problem.
    """
    from .formats import read_any

    ds = read_any(Path(root), split=split, check_images=check_images)
    ds = select_classes(ds, class_names, stuff_names, strict_classes)
    if ds.problems:
        first = ds.problems[0]
        if not skip_bad:
            more = f" (and {len(ds.problems) - 1} more)" if len(ds.problems) > 1 else ""
            raise InputError(f"{first}{more}; `ocrnet-edge dataset {root}` lists every problem, "
                             "--skip-bad skips the bad files")
        bad = {p.file for p in ds.problems}
        kept = [r for r in ds.records if r.path not in bad and r.semantic_path not in bad]
        ds = replace(ds, records=tuple(kept),
                     notes=(*ds.notes, f"skipped {len(bad)} bad file(s) ({len(ds.problems)} problem(s); first: {first})"))
    if not ds.records:
        raise InputError(f"{root}: the dataset has no usable images")
    if not any(len(r.categories) or r.semantic_path is not None or r.stuff for r in ds.records):
        raise InputError(f"{root}: no labels at all in {len(ds.records)} images ({ds.format} format); "
                         "label some objects or regions first")
    if not quiet:
        for n in ds.notes:
            print(f"{root}: {n}")
    return ds


def select_classes(ds: Dataset, things: tuple[str, ...] | None, stuff: tuple[str, ...] | None,
                   strict: bool = False) -> Dataset:
    """Keep (and order) the named classes; annotations of other classes are dropped and counted.

    Args:
        ds: The dataset as read.
        things: Thing classes to keep, in order; with ``stuff`` None, a list naming classes of either
            kind (``--classes``), split by what they are in the data.
        stuff: Region classes to keep, in order.
        strict: Refuse names the dataset does not have (a user's ``--classes``); otherwise (a model's
            classes against an evaluation set) they simply have no labels here.

    Raises:
        InputError: A named class is not in the dataset (with the dataset's classes), or none is.
    """
    if things is None and stuff is None:
        return ds
    have = {norm_name(n) for n in (*ds.thing_classes, *ds.stuff_classes)}
    if things is not None and stuff is None:  # one list naming any classes: split by what they are in the data
        asked = [norm_name(n) for n in things]
        stuff_set = {norm_name(n) for n in ds.stuff_classes}
        missing = [n for n in asked if n not in have]
        if missing and strict:
            raise InputError(f"{ds.root}: class(es) {missing} not in this dataset; its classes are "
                             f"{[*ds.thing_classes, *ds.stuff_classes]}")
        things = tuple(n for n in asked if n not in stuff_set)
        stuff = tuple(n for n in asked if n in stuff_set)
    things = tuple(norm_name(n) for n in (things if things is not None else ds.thing_classes))
    stuff = tuple(norm_name(n) for n in (stuff if stuff is not None else ds.stuff_classes))
    if have and not have & {*things, *stuff}:
        raise InputError(f"{ds.root}: none of the classes {[*things, *stuff]} is in this dataset; its classes are "
                         f"{[*ds.thing_classes, *ds.stuff_classes]}")
    t_index = {norm_name(n): i for i, n in enumerate(ds.thing_classes)}
    old_stuff = {norm_name(n): len(ds.thing_classes) + 1 + i for i, n in enumerate(ds.stuff_classes)}
    t_map = np.full(len(ds.thing_classes) + 1, -1, np.int64)  # old thing id -> new thing id
    for new, n in enumerate(things):
        if n in t_index:
            t_map[t_index[n]] = new
    # old semantic id -> new: background stays, dropped classes become background
    sem_map = np.zeros(256, np.uint8)
    sem_map[IGNORE] = IGNORE
    for old, new in enumerate(t_map[:-1]):
        if new >= 0:
            sem_map[old + 1] = new + 1
    for n, old in old_stuff.items():
        if n in stuff:
            sem_map[old] = len(things) + 1 + stuff.index(n)
        elif n in things:  # a region class asked for as a thing: it has no boxes to learn from
            raise InputError(f"{ds.root}: {n!r} is a region class (pixels only, no boxes); it cannot be a thing class")
    dropped = 0
    records = []
    for r in ds.records:
        new_ids = t_map[r.categories] if len(r.categories) else np.zeros(0, np.int64)
        keep = new_ids >= 0
        dropped += int((~keep).sum())
        lut = sem_map if r.semantic_lut is None else sem_map[r.semantic_lut]
        records.append(replace(
            r, categories=new_ids[keep].astype(np.int32), boxes=r.boxes[keep],
            segmentations=tuple(s for s, k in zip(r.segmentations, keep) if k),
            crowd=tuple(c if len(c) < 3 else (*c[:2], int(t_map[c[2]])) for c in r.crowd
                        if len(c) < 3 or t_map[c[2]] >= 0),
            stuff=tuple((int(sem_map[sid]), seg) for sid, seg in r.stuff if sem_map[sid] not in (0, IGNORE)),
            semantic_lut=lut if r.semantic_path is not None else None,
        ))
    notes = list(ds.notes)
    if dropped:
        notes.append(f"dropped {dropped} annotation(s) of classes not selected")
    return replace(ds, records=tuple(records), thing_classes=things, stuff_classes=stuff, notes=tuple(notes))


def holdout_split(ds: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split a dataset into (train, validation) by a seeded draw of ``fraction`` of its images."""
    n = len(ds.records)
    k = min(max(1, round(n * fraction)), n - 1) if n >= 2 else 0
    order = np.random.default_rng([seed, n]).permutation(n)
    val_idx = set(order[:k].tolist())
    train = [r for i, r in enumerate(ds.records) if i not in val_idx]
    val = [r for i, r in enumerate(ds.records) if i in val_idx]
    return ds.subset(train), replace(ds.subset(val), split=f"holdout {fraction:g} seed {seed}")


def write_scenes(out: Path | str, count: int, seed: int, size: InputSize = 320, progress: bool = True) -> Path:
    """Generate ``count`` scenes with ``seed`` and write them as a COCO dataset folder, each image of
    ``size`` (a side, or ``(width, height)``).

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
    width, height = input_wh(size)
    opts = SceneOptions(width=width, height=height)
    images, anns = [], []
    for i in tqdm(range(count), desc=f"scenes seed={seed}", disable=not progress, unit="img"):
        scene = draw_scene((seed, i), opts)
        stem = f"{seed:04d}_{i:06d}"
        cv2.imwrite(str(tmp / "images" / f"{stem}.jpg"), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(tmp / "semantic" / f"{stem}.png"), scene.semantic)
        images.append({"id": i + 1, "file_name": f"{stem}.jpg", "width": width, "height": height})
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
        "ocrnet_edge_generated": True,
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

"""Pascal VOC XML, as the VOC devkit and LabelImg write it (box labels: detection only).

Layouts (the first that fits):

- the VOC devkit's: ``DIR/Annotations/*.xml``, ``DIR/JPEGImages/``, ``DIR/ImageSets/Main/{train,val,test,trainval}.txt``;
- LabelImg's with two folders: ``DIR/annotations/`` (or ``annots/``) beside ``DIR/images/``, matched by stem;
- LabelImg's default: an XML beside each image in one folder;
- Roboflow's export: ``DIR/{train,valid,test}/`` each with XMLs beside their images.

Splits come from ``ImageSets/Main/*.txt`` (VOC) or ``DIR/{train,val,test}.txt`` (one stem or file name per
line), else from the split folders; without any, the dataset is one split (``all``) and training holds a
share out. Classes are the ``<name>`` tags in order of first appearance over every file of the dataset
(``--classes`` chooses others). ``<difficult>1`` objects become ignored regions (neither object nor
background, as COCO's ``iscrowd``), as VOC's own evaluation ignores them.

Coordinates are the devkit's 1-based pixel indices, inclusive: ``xmin = 1, xmax = W`` spans the whole
image, so the box is ``[xmin - 1, ymin - 1, xmax, ymax]`` in COCO's pixel-edge coordinates (Detectron2
reads VOC the same way). Boxes that extend past the image are clipped and counted; a box that lies wholly
outside, or whose ``xmax`` is not greater than ``xmin`` (a click without a drag), is a problem.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ocrnet_edge.runtime.errors import InputError

from .data import Dataset, Record, Supervision, norm_name

XML_DIRS = ("Annotations", "annotations", "annots", "Annots")
IMAGE_DIRS = ("JPEGImages", "images", "Images", "JPEGimages")
LIST_SPLITS = ("train", "val", "test", "trainval")
FOLDER_SPLITS = {"train": ("train",), "val": ("valid", "val", "validation"), "test": ("test",)}
_OBJECT_TAG = re.compile(rb"<object[\s>]")


@dataclass(frozen=True)
class VocLayout:
    """Where a VOC dataset keeps its files.

    Attributes:
        root: The dataset folder.
        folders: ``(xml folder, image folder)`` per split folder (``all`` for a single one).
        lists: Split name -> list file (``train.txt``...) naming the stems of that split.
    """

    root: Path
    folders: dict = field(default_factory=dict)
    lists: dict = field(default_factory=dict)


def _xmls(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if p.suffix.lower() == ".xml" and p.is_file())


def _images(folder: Path) -> dict[str, Path]:
    from .formats import IMAGE_SUFFIXES

    return {p.stem: p for p in sorted(folder.glob("*")) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}


def find_voc(root: Path, loose: bool = True) -> VocLayout | None:
    """The VOC layout of ``root``, or None when it holds none.

    Args:
        root: A folder.
        loose: Also accept XMLs beside their images in ``root`` itself or in Roboflow's split folders
            (checked after the other formats, since such a folder could hold something else too).
    """
    xml_dir = next((root / d for d in XML_DIRS if (root / d).is_dir() and _xmls(root / d)), None)
    if xml_dir is not None:
        img_dir = next((root / d for d in IMAGE_DIRS if (root / d).is_dir()), xml_dir)
        lists = {s: root / "ImageSets" / "Main" / f"{s}.txt" for s in LIST_SPLITS
                 if (root / "ImageSets" / "Main" / f"{s}.txt").is_file()}
        if not lists:
            lists = {s: root / f"{s}.txt" for s in LIST_SPLITS if (root / f"{s}.txt").is_file()}
        return VocLayout(root, {"all": (xml_dir, img_dir)}, lists)
    if not loose:
        return None
    if set(p.stem for p in _xmls(root)) & set(_images(root)):
        lists = {s: root / f"{s}.txt" for s in LIST_SPLITS if (root / f"{s}.txt").is_file()}
        return VocLayout(root, {"all": (root, root)}, lists)
    folders = {}
    for split, names in FOLDER_SPLITS.items():
        d = next((root / n for n in names if (root / n).is_dir() and _xmls(root / n)), None)
        if d is not None:
            folders[split] = (d, d)
    return VocLayout(root, folders) if "train" in folders else None


def voc_splits(layout: VocLayout) -> tuple[str, ...]:
    """The splits of a VOC dataset (``train``, ``val``, ``test``), or ``("all",)``."""
    if "all" not in layout.folders:
        return tuple(layout.folders)
    have = set(layout.lists) | ({"train"} if "trainval" in layout.lists else set())
    return tuple(s for s in ("train", "val", "test") if s in have) or ("all",)


# ---------------------------------------------------------------- one XML file

@dataclass(frozen=True)
class VocObject:
    """One ``<object>`` as written: its name, ``difficult`` flag, the four numbers, its line; or what is wrong."""

    name: str
    difficult: bool
    box: tuple[float, float, float, float] | None
    line: int
    error: str | None = None


@dataclass(frozen=True)
class VocFile:
    """One annotation file: the image it names, the ``<size>`` it states (0 when absent), its objects."""

    xml: Path
    filename: str
    width: int
    height: int
    objects: tuple[VocObject, ...]


def parse_voc_xml(path: Path) -> VocFile | str:
    """Read one VOC annotation file; a string saying what is wrong when it cannot be read."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        return f"cannot read ({e.strerror})"
    # Local files are trusted, but entity expansion has no use in an annotation file: refuse it cheaply.
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        return "holds a DOCTYPE or ENTITY declaration; annotation files need neither"
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as e:
        return f"not well-formed XML ({e})"
    if root.tag != "annotation":
        return f"expected a Pascal VOC <annotation> element, found <{root.tag}>"
    lines = [raw.count(b"\n", 0, m.start()) + 1 for m in _OBJECT_TAG.finditer(raw)]
    try:
        w, h = (int(float((root.findtext(f"size/{k}") or "0").strip() or 0)) for k in ("width", "height"))
    except ValueError:
        return f"<size> holds {root.findtext('size/width')!r} x {root.findtext('size/height')!r}; expected numbers"
    objects = []
    for k, obj in enumerate(root.findall("object")):
        line = lines[k] if k < len(lines) else 0
        name = norm_name(obj.findtext("name") or "")
        difficult = (obj.findtext("difficult") or "0").strip().lower() in ("1", "true")
        if not name:
            objects.append(VocObject("", difficult, None, line, f"object {k + 1} has no <name>"))
            continue
        bb = obj.find("bndbox")
        try:
            if bb is None:
                raise ValueError("no <bndbox>")
            box = tuple(float((bb.findtext(t) or "").strip()) for t in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as e:
            why = str(e) if str(e).startswith("no ") else "<bndbox> needs numbers in xmin, ymin, xmax, ymax"
            objects.append(VocObject(name, difficult, None, line, f"object {k + 1} ({name}): {why}"))
            continue
        objects.append(VocObject(name, difficult, box, line))
    return VocFile(path, (root.findtext("filename") or "").strip(), w, h, tuple(objects))


# ---------------------------------------------------------------- the dataset

def _split_xmls(layout: VocLayout, split: str, problems: list) -> list[tuple[Path, Path]]:
    """``(xml, image folder)`` of the split's files, in order; list entries without a file are problems."""
    from .formats import IMAGE_SUFFIXES, Problem

    if "all" not in layout.folders:  # split folders
        keys = list(layout.folders) if split == "all" else [split]
        if any(k not in layout.folders for k in keys):
            raise InputError(f"{layout.root}: no {split} split (splits: {', '.join(layout.folders)})")
        return [(x, layout.folders[k][1]) for k in keys for x in _xmls(layout.folders[k][0])]
    xml_dir, img_dir = layout.folders["all"]
    key = "trainval" if split == "train" and "train" not in layout.lists and "trainval" in layout.lists else split
    if split == "all" or (split == "train" and not layout.lists):
        return [(x, img_dir) for x in _xmls(xml_dir)]
    if key not in layout.lists:
        have = ", ".join(voc_splits(layout))
        raise InputError(f"{layout.root}: no {split} split (splits: {have}; list files: ImageSets/Main/{split}.txt "
                         f"or {split}.txt)")
    lst = layout.lists[key]
    try:
        entries = lst.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{lst}: cannot read this split list ({e})") from None
    out, seen = [], set()
    for ln, line in enumerate(entries, 1):
        # VOC lists stems; other tools list file names or paths; VOC's per-class lists add " 1" / " -1"
        text = line.strip().split()[0] if line.strip() else ""
        if not text:
            continue
        name = Path(text.replace("\\", "/")).name
        stem = Path(name).stem if Path(name).suffix.lower() in (*IMAGE_SUFFIXES, ".xml") else name
        if stem in seen:
            continue
        seen.add(stem)
        xml = xml_dir / f"{stem}.xml"
        if not xml.is_file():
            problems.append(Problem(xml, f"{lst}:{ln}: {stem} has no annotation file (looked for {xml})"))
            continue
        out.append((xml, img_dir))
    return out


def _find_image(doc: VocFile, img_dir: Path) -> Path:
    from .formats import IMAGE_SUFFIXES

    if doc.filename:
        p = img_dir / Path(doc.filename.replace("\\", "/")).name
        if p.is_file():
            return p
    for stem in dict.fromkeys((doc.xml.stem, Path(doc.filename).stem if doc.filename else doc.xml.stem)):
        for suffix in IMAGE_SUFFIXES:
            for s in (suffix, suffix.upper()):
                if (img_dir / (stem + s)).is_file():
                    return img_dir / (stem + s)
    return img_dir / (Path(doc.filename).name if doc.filename else doc.xml.stem + ".jpg")


def read_voc(layout: VocLayout, split: str = "train", check_images: bool = True) -> Dataset:
    """Read one split of a Pascal VOC dataset (see the module docstring for what it accepts).

    Returns:
        A :class:`~model.data.Dataset` of box-only records (detection); ``problems`` name the file (and line)
        of every unreadable XML, missing image, empty box or box outside its image; ``notes`` count the boxes
        clipped to their image and the difficult objects ignored.
    """
    from .formats import Problem, image_info

    problems: list[Problem] = []
    everything = _split_xmls(layout, "all", [])
    parsed: dict[Path, VocFile | str] = {x: parse_voc_xml(x) for x, _ in everything}
    classes: dict[str, None] = {}
    for doc in parsed.values():  # every split knows every class, in order of first appearance
        if isinstance(doc, VocFile):
            classes.update((o.name, None) for o in doc.objects if o.name)
    names = tuple(classes)
    ids = {n: k for k, n in enumerate(names)}
    order = {x: i for i, (x, _) in enumerate(everything)}
    wanted = _split_xmls(layout, split, problems)
    records = []
    seen: dict[Path, Path] = {}
    clipped, clipped_first, difficult = 0, None, 0
    for xml, img_dir in wanted:
        doc = parsed[xml] if xml in parsed else parse_voc_xml(xml)
        if isinstance(doc, str):
            problems.append(Problem(xml, f"{xml}: {doc}"))
            continue
        img = _find_image(doc, img_dir)
        if not img.is_file():
            problems.append(Problem(img, f"{img}: image named in {xml.name} is missing"))
            continue
        if img in seen:
            problems.append(Problem(img, f"{xml}: names the same image as {seen[img].name} ({img.name})"))
            continue
        seen[img] = xml
        w, h, rotated = doc.width, doc.height, False
        if check_images or w <= 0 or h <= 0:
            info = image_info(img)
            if info is None:
                problems.append(Problem(img, f"{img}: image named in {xml.name} cannot be read (corrupt or not an image)"))
                continue
            rotated = info[2] != 1
            if doc.width > 0 and doc.height > 0 and (doc.width, doc.height) != info[:2]:
                hint = " (EXIF orientation: the tool labelled the unrotated image)" \
                    if (doc.height, doc.width) == info[:2] else ""
                problems.append(Problem(img, f"{img}: image is {info[0]}x{info[1]} but {xml.name} says "
                                             f"{doc.width}x{doc.height}{hint}"))
                continue
            w, h = info[:2]
        cats, boxes, crowd = [], [], []
        for k, o in enumerate(doc.objects):
            where = f"{xml}:{o.line}" if o.line else str(xml)
            if o.error is not None:
                problems.append(Problem(img, f"{where}: {o.error}"))
                continue
            xmin, ymin, xmax, ymax = o.box
            if xmax <= xmin or ymax <= ymin:
                why = [f"{lo} = {hi} = {v0:g}" if v0 == v1 else f"{hi} {v1:g} < {lo} {v0:g}"
                       for lo, hi, v0, v1 in (("xmin", "xmax", xmin, xmax), ("ymin", "ymax", ymin, ymax)) if v1 <= v0]
                problems.append(Problem(img, f"{where}: object {k + 1} ({o.name}): box with zero area ({', '.join(why)})"))
                continue
            x0, y0, x1, y1 = xmin - 1, ymin - 1, xmax, ymax
            if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
                problems.append(Problem(img, f"{where}: object {k + 1} ({o.name}): box (xmin {xmin:g}, ymin {ymin:g}, "
                                             f"xmax {xmax:g}, ymax {ymax:g}) lies outside the {w}x{h} image"))
                continue
            box = [max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)]
            if box != [x0, y0, x1, y1]:
                clipped += 1
                clipped_first = clipped_first or xml
            if o.difficult:
                difficult += 1
                crowd.append((tuple(box), None, ids[o.name]))
            else:
                cats.append(ids[o.name])
                boxes.append(box)
        records.append(Record(
            image_id=order.get(xml, len(order)) + 1, path=img, width=w, height=h,
            categories=np.array(cats, np.int32), boxes=np.array(boxes, np.float32).reshape(-1, 4),
            segmentations=(None,) * len(cats), crowd=tuple(crowd), supervision=Supervision(True, False, False),
            exif_rotated=check_images and rotated,
        ))
    notes = []
    if clipped:
        notes.append(f"clipped {clipped} box(es) that extended past their image (first: {clipped_first})")
    if difficult:
        notes.append(f"{difficult} difficult object(s) ignored (neither object nor background), as VOC's evaluation does")
    if split == "all" and "all" in layout.folders:
        xml_dir, img_dir = layout.folders["all"]
        stems = {x.stem for x in _xmls(xml_dir)} | {Path(d.filename).stem for d in parsed.values()
                                                     if isinstance(d, VocFile) and d.filename}
        alone = sorted(p for s, p in _images(img_dir).items() if s not in stems)
        if alone:
            notes.append(f"{len(alone)} image(s) without an annotation file are not used (first: {alone[0]})")
    return Dataset(root=layout.root, records=tuple(records), thing_classes=names, stuff_classes=(), format="voc",
                   split=split, notes=tuple(notes), problems=tuple(problems))

"""Readers for the label formats people export, read directly (no conversion step).

- **COCO instances JSON** as CVAT, Label Studio and Roboflow export it: polygons (several per
  object), RLE (compressed or not), ``iscrowd`` regions, ``file_name`` with sub-paths, annotations
  with a box but no ``segmentation``, categories with ``isthing: 0`` (region classes). Layouts:
  ``DIR/annotations.json`` (ours), ``DIR/annotations/*.json`` (CVAT), ``DIR/result.json`` (Label
  Studio), ``DIR/{train,valid,test}/_annotations.coco.json`` (Roboflow), one ``*.json`` in ``DIR``, or
  the JSON file itself.
- **Ultralytics YOLO**: ``data.yaml`` with ``names`` and ``train``/``val`` (folders, lists of folders
  or ``.txt`` image lists); ``labels/*.txt`` beside ``images/`` with ``class cx cy w h`` (detect) or
  ``class x1 y1 x2 y2 ...`` (segment), normalised to the image. An optional ``regions: [floor, ...]``
  entry (ours; Ultralytics ignores it) names classes whose polygons are regions: pixels in the
  semantic map, no boxes.
- **Semantic label maps** (VOC / Cityscapes style): ``DIR/images/``, ``DIR/labels/`` (single-channel
  PNG class ids at the image's resolution, matched by file stem) and ``DIR/classes.txt`` (line ``k``
  names class id ``k``; ``255`` is ignored). Every class is a region class; a class named
  ``background`` is the background.
- **Pascal VOC XML** (the VOC devkit's layout, LabelImg's, Roboflow's): box labels, read by
  :mod:`model.voc`.

Every reader returns a :class:`~model.data.Dataset` whose ``problems`` name the file (and line) of
each problem found; :func:`model.data.load_dataset` decides whether they are fatal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ocrnet_edge.runtime.errors import InputError

from .data import IGNORE, Dataset, Record, Supervision, norm_name, to_rle
from .voc import VocLayout, find_voc, read_voc, voc_splits

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
EDGE_TOLERANCE = 0.01
"""Coordinates may lie this share of the image outside it (labelling tools round) before it is a problem."""
SPLIT_DIRS = {"train": ("train",), "val": ("valid", "val", "validation"), "test": ("test",)}


@dataclass(frozen=True)
class Problem:
    """A problem found in a dataset.

    Attributes:
        file: The file to skip with ``--skip-bad`` (an image or a label file).
        message: What is wrong, starting with the file (and line) where it was found.
    """

    file: Path
    message: str

    def __str__(self) -> str:
        return self.message


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of an image file as decoders show it (EXIF orientation applied), from its header; None
    when it cannot be read."""
    info = image_info(path)
    return None if info is None else info[:2]


def image_info(path: Path) -> tuple[int, int, int] | None:
    """(width, height, EXIF orientation) of an image file from its header (width and height as decoders
    show the pixels, orientation applied); None when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            try:
                orientation = im.getexif().get(0x0112, 1)
            except Exception:  # a broken EXIF block: the pixels may still decode
                orientation = 1
            im.verify() if im.format not in ("JPEG", "PNG") else None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return None
    return (h, w, orientation) if orientation in (5, 6, 7, 8) else (w, h, orientation)


def available_splits(path: Path) -> tuple[str, ...]:
    """The splits a dataset has (``train``, ``val``, ``test``), or ``("all",)`` for a single-split one."""
    path = Path(path)
    kind, found = _locate(path)
    if kind == "yolo":
        doc = _read_yaml(found)
        return tuple(s for s in ("train", "val", "test") if doc.get(s))
    if kind == "coco":
        return tuple(coco_split_files(found if found is not None else path))
    if kind == "labelmap":
        if segnet_dirs(path) and not (path / "images").is_dir():
            return tuple(segnet_dirs(path))
        splits = tuple(s for s in ("train", "val", "test")
                       if any((path / "images" / d).is_dir() for d in SPLIT_DIRS[s]))
        if not splits and labelmap_lists(path):
            splits = ("train", *(s for s in ("val", "test") if s in labelmap_lists(path)))
        return splits or ("all",)
    if kind == "voc":
        return voc_splits(found)
    return ("all",)


def read_any(path: Path, split: str = "train", check_images: bool = True) -> Dataset:
    """Read a dataset in whichever supported format ``path`` holds.

    Raises:
        InputError: The folder is missing or holds no format this reads; a structural problem
            (malformed JSON or YAML, a missing entry).
    """
    kind, found = _locate(Path(path))
    if kind == "yolo":
        return read_yolo(found, split, check_images)
    if kind == "labelmap":
        return read_labelmaps(Path(path), split, check_images)
    if kind == "voc":
        return read_voc(found, split, check_images)
    return read_coco(_coco_file(Path(path), split) if found is None else found, Path(path), check_images, split)


def _locate(path: Path) -> tuple[str, Path | VocLayout | None]:
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco", path
        if path.suffix.lower() in (".yaml", ".yml"):
            return "yolo", path
        raise InputError(f"{path}: not a dataset; give a folder, a COCO .json file or a YOLO data.yaml")
    if not path.is_dir():
        raise InputError(f"{path}: dataset folder not found")
    for name in ("data.yaml", "data.yml", "dataset.yaml"):
        if (path / name).is_file():
            return "yolo", path / name
    if (path / "classes.txt").is_file() and (path / "labels").is_dir() and (path / "images").is_dir():
        return "labelmap", None
    if (path / "classes.txt").is_file() and segnet_dirs(path):
        return "labelmap", None
    voc = find_voc(path, loose=False)  # Annotations/*.xml: VOC even if a stray .json lies beside it
    if voc is not None:
        return "voc", voc
    if coco_split_files(path):
        return "coco", None
    voc = find_voc(path)  # XMLs beside their images, or in Roboflow's split folders
    if voc is not None:
        return "voc", voc
    yamls = sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml"))
    if len(yamls) == 1:
        return "yolo", yamls[0]
    if segnet_dirs(path):
        folders = ", ".join(d.name + "/" for d, _ in segnet_dirs(path).values())
        raise InputError(f"{path}: label maps in SegNet's layout ({folders} with their *annot/ folders) need a "
                         "classes.txt beside them, line k naming label id k (for "
                         "CamVid's 11 classes: Sky, Building, Pole, Road, Pavement, Tree, SignSymbol, Fence, Car, "
                         "Pedestrian, Bicyclist, then void for its id 11)")
    # The VOC devkit's root (VOCdevkit/ holding VOC2007/, VOC2012/): name the year folders to pass instead.
    years = sorted(d.name for d in path.iterdir() if d.is_dir() and (d / "Annotations").is_dir())
    if years:
        raise InputError(f"{path}: holds Pascal VOC datasets in {', '.join(y + '/' for y in years)}; "
                         f"pass one of them, e.g. --data {path / years[0]}")
    raise InputError(
        f"{path}: no dataset found; expected a COCO annotations JSON (annotations.json, annotations/*.json, "
        "result.json or train/_annotations.coco.json), a YOLO data.yaml, images/ + labels/ + classes.txt (label maps), "
        "or Pascal VOC XML (Annotations/ + JPEGImages/, or an .xml beside each image)"
    )


def coco_split_files(root: Path) -> dict[str, Path]:
    """The COCO annotation file of each split: ``{"all": file}`` for a single-split dataset, else per split
    (Roboflow's ``train/``, ``valid/``, ``test/`` folders, or several files in ``annotations/`` named by split)."""
    if root.is_file():
        return {"all": root}
    found = {}
    for split, dirs in SPLIT_DIRS.items():
        for d in dirs:
            for name in ("_annotations.coco.json", "annotations.json"):
                if split not in found and (root / d / name).is_file():
                    found[split] = root / d / name
    if found:
        return found
    for name in ("annotations.json", "_annotations.coco.json", "result.json"):
        if (root / name).is_file():
            return {"all": root / name}
    candidates = sorted((root / "annotations").glob("*.json")) if (root / "annotations").is_dir() else []
    if not candidates:
        candidates = sorted(root.glob("*.json"))
    if len(candidates) == 1:
        return {"all": candidates[0]}
    for split, keys in SPLIT_DIRS.items():
        hits = [c for c in candidates if any(k in c.stem.lower() for k in keys)]
        if len(hits) == 1:
            found[split] = hits[0]
    if candidates and "train" not in found:
        raise InputError(f"{root}: several annotation files ({', '.join(c.name for c in candidates)}) and none is "
                         "named for the train split; give the one to use as --data FILE.json")
    return found


def _coco_file(root: Path, split: str, required: bool = True) -> Path | None:
    files = coco_split_files(root)
    f = files.get(split) or (files.get("all") if split in ("all", "train") else None)
    if f is None and required:
        if not files:
            raise InputError(f"{root}: no COCO annotations file in the dataset folder (expected annotations.json)")
        raise InputError(f"{root}: no {split} split (splits: {', '.join(files)})")
    return f


# ---------------------------------------------------------------- COCO

def read_coco(ann_path: Path, root: Path, check_images: bool = True, split: str = "all") -> Dataset:
    """Read a COCO instances file (see the module docstring for what it accepts)."""
    try:
        coco = json.loads(ann_path.read_text(encoding="utf-8"))
        images, cats = coco["images"], coco["categories"]
        anns = coco.get("annotations") or []
        if not isinstance(images, list) or not isinstance(cats, list) or not isinstance(anns, list):
            raise TypeError("images, annotations and categories must be lists")
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError, AttributeError) as e:
        raise InputError(f"{ann_path}: not a COCO instances file ({type(e).__name__}: {e})") from None
    except OSError as e:
        raise InputError(f"{ann_path}: cannot read ({e.strerror})") from None
    base = root if root.is_dir() else ann_path.parent
    info = coco.get("info") if isinstance(coco.get("info"), dict) else {}
    generated = bool(coco.get("ocrnet_edge_generated")) or str(info.get("description", "")).startswith(
        "ocrnet-edge procedural scenes")
    try:
        cats = sorted(cats, key=lambda c: c["id"])
        names = [norm_name(c["name"]) for c in cats]
    except (KeyError, TypeError) as e:
        raise InputError(f"{ann_path}: every category needs an 'id' and a 'name' ({e})") from None
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"{ann_path}: category names {dup} appear more than once; give each class one category")
    things = [c for c in cats if c.get("isthing", 1)]
    stuff = [c for c in cats if not c.get("isthing", 1)]
    thing_ids = {c["id"]: k for k, c in enumerate(things)}
    stuff_ids = {c["id"]: len(things) + 1 + k for k, c in enumerate(stuff)}
    problems: list[Problem] = []
    where = ann_path.name

    per_image: dict = {}
    paths: dict = {}
    seen_files: dict = {}
    for im in images:
        try:
            iid, fname = im["id"], str(im["file_name"])
        except (KeyError, TypeError):
            raise InputError(f"{ann_path}: every image needs an 'id' and a 'file_name'") from None
        p = _resolve_image(fname, base, ann_path.parent)
        per_image[iid] = []
        paths[iid] = p
        if p in seen_files:
            problems.append(Problem(p, f"{ann_path}: images {seen_files[p]} and {iid} have the same file {fname}"))
        seen_files[p] = iid
    has_masks = False
    for a in anns:
        iid = a.get("image_id")
        if iid not in per_image:
            problems.append(Problem(ann_path, f"{ann_path}: annotation {a.get('id')} refers to unknown image_id {iid}"))
            continue
        if a.get("category_id") not in thing_ids and a.get("category_id") not in stuff_ids:
            known = sorted(thing_ids) + sorted(stuff_ids)
            problems.append(Problem(paths[iid], f"{ann_path}: annotation {a.get('id')} has unknown category_id "
                                                f"{a.get('category_id')} (categories: {known})"))
            continue
        per_image[iid].append(a)
        seg = a.get("segmentation")
        has_masks |= bool(seg) and a.get("category_id") in thing_ids and not a.get("iscrowd", 0)

    records = []
    for im in images:
        iid, p = im["id"], paths[im["id"]]
        rotated = False
        w, h = im.get("width"), im.get("height")
        if check_images:
            if not p.is_file():
                problems.append(Problem(p, f"{p}: image listed in {where} is missing"))
                continue
            info = image_info(p)
            if info is None:
                problems.append(Problem(p, f"{p}: image listed in {where} cannot be read (corrupt or not an image)"))
                continue
            size, rotated = info[:2], info[2] != 1
            if w is None or h is None:
                w, h = size
            elif (int(w), int(h)) != size:
                hint = " (EXIF orientation: the tool labelled the unrotated image)" if (int(h), int(w)) == size else ""
                problems.append(Problem(p, f"{p}: image is {size[0]}x{size[1]} but {where} says {w}x{h}{hint}"))
                continue
        if w is None or h is None:
            raise InputError(f"{ann_path}: image {iid} has no width/height")
        w, h = int(w), int(h)
        rec, probs = _coco_record(iid, p, w, h, per_image[iid], thing_ids, stuff_ids, has_masks, ann_path)
        problems += probs
        if rec is not None:
            records.append(replace(rec, exif_rotated=check_images and rotated))
    return Dataset(root=root, records=tuple(records), thing_classes=tuple(norm_name(c["name"]) for c in things),
                   stuff_classes=tuple(norm_name(c["name"]) for c in stuff), format="coco", split=split,
                   problems=tuple(problems), generated=generated)


def _resolve_image(fname: str, base: Path, json_dir: Path) -> Path:
    rel = Path(fname.replace("\\", "/"))
    if rel.is_absolute():
        return rel
    candidates = [base / "images" / rel, json_dir / rel, base / rel, json_dir / "images" / rel,
                  json_dir.parent / "images" / rel, base / "images" / rel.name, json_dir / rel.name]
    for c in candidates:
        if c.is_file():
            return c
    return candidates[0]


def _coco_record(iid, path: Path, w: int, h: int, anns: list, thing_ids: dict, stuff_ids: dict, has_masks: bool,
                 ann_path: Path) -> tuple[Record | None, list[Problem]]:
    from pycocotools import mask as mask_utils

    problems: list[Problem] = []
    cats, boxes, segs, crowd, stuff = [], [], [], [], []
    for a in anns:
        aid = a.get("id")
        seg = _clean_segmentation(a.get("segmentation"), w, h, path, ann_path, aid, problems)
        if seg is False:
            continue
        bbox = a.get("bbox")
        if bbox is not None and (not isinstance(bbox, list) or len(bbox) != 4):
            problems.append(Problem(path, f"{ann_path}: annotation {aid} has bbox {bbox!r}; expected [x, y, width, height]"))
            continue
        if bbox is None or (bbox[2] <= 0 or bbox[3] <= 0) and seg is not None:
            if seg is None:
                problems.append(Problem(path, f"{ann_path}: annotation {aid} has neither a bbox nor a segmentation"))
                continue
            rle = to_rle(seg, h, w)
            bbox = [float(v) for v in mask_utils.toBbox(rle)]
        x, y, bw, bh = (float(v) for v in bbox)
        if bw <= 0 or bh <= 0:
            problems.append(Problem(path, f"{ann_path}: annotation {aid} has an empty box {bbox}"))
            continue
        if x < -EDGE_TOLERANCE * w or y < -EDGE_TOLERANCE * h or x + bw > w * (1 + EDGE_TOLERANCE) \
                or y + bh > h * (1 + EDGE_TOLERANCE):
            problems.append(Problem(path, f"{ann_path}: annotation {aid}: box {bbox} lies outside the {w}x{h} image"))
            continue
        box = [max(0.0, x), max(0.0, y), min(float(w), x + bw), min(float(h), y + bh)]
        cid = a["category_id"]
        if cid in stuff_ids:
            if seg is None:
                problems.append(Problem(path, f"{ann_path}: annotation {aid} of a region class has no segmentation"))
                continue
            stuff.append((stuff_ids[cid], seg))
        elif a.get("iscrowd", 0):
            crowd.append((tuple(box), seg))
        else:
            cats.append(thing_ids[cid])
            boxes.append(box)
            segs.append(seg)
    all_masks = has_masks and all(s is not None for s in segs)
    sup = Supervision(boxes=True, masks=all_masks, semantic=all_masks)
    rec = Record(image_id=int(iid) if isinstance(iid, int) else abs(hash(iid)) % (1 << 31), path=path, width=w,
                 height=h, categories=np.array(cats, np.int32), boxes=np.array(boxes, np.float32).reshape(-1, 4),
                 segmentations=tuple(segs), crowd=tuple(crowd), stuff=tuple(stuff), supervision=sup)
    sem_dir = ann_path.parent / "semantic"
    if sem_dir.is_dir() and (sem_dir / (path.stem + ".png")).is_file():  # our generated scenes carry their maps
        rec = replace(rec, semantic_path=sem_dir / (path.stem + ".png"),
                      supervision=Supervision(True, all_masks, True))
    return rec, problems


def _clean_segmentation(seg, w: int, h: int, path: Path, ann_path: Path, aid, problems: list):
    """The segmentation to keep, None for a box-only annotation, False when it is a problem."""
    from pycocotools import mask as mask_utils

    if seg is None or seg == [] or seg == {}:
        return None
    if isinstance(seg, list):
        polys = []
        for poly in seg:
            if not isinstance(poly, list) or len(poly) % 2 or not all(isinstance(v, (int, float)) for v in poly):
                problems.append(Problem(path, f"{ann_path}: annotation {aid}: a polygon must be a flat list "
                                              "[x1, y1, x2, y2, ...] of numbers"))
                return False
            if len(poly) < 6:
                problems.append(Problem(path, f"{ann_path}: annotation {aid}: polygon with fewer than 3 points"))
                return False
            xy = np.asarray(poly, np.float64).reshape(-1, 2)
            if (xy[:, 0] < -EDGE_TOLERANCE * w).any() or (xy[:, 0] > w * (1 + EDGE_TOLERANCE)).any() or \
                    (xy[:, 1] < -EDGE_TOLERANCE * h).any() or (xy[:, 1] > h * (1 + EDGE_TOLERANCE)).any():
                problems.append(Problem(path, f"{ann_path}: annotation {aid}: polygon outside the {w}x{h} image"))
                return False
            polys.append([float(v) for v in poly])
        seg = polys
    elif isinstance(seg, dict):
        if list(seg.get("size", [])) != [h, w] or "counts" not in seg:
            problems.append(Problem(path, f"{ann_path}: annotation {aid}: RLE of size {seg.get('size')} on a "
                                          f"{w}x{h} image (RLE size is [height, width])"))
            return False
    else:
        problems.append(Problem(path, f"{ann_path}: annotation {aid}: segmentation must be polygons or RLE"))
        return False
    try:
        area = float(mask_utils.area(to_rle(seg, h, w)))
    except Exception as e:  # pycocotools raises TypeError/ValueError on malformed counts
        problems.append(Problem(path, f"{ann_path}: annotation {aid}: unreadable segmentation ({e})"))
        return False
    if area <= 0:
        problems.append(Problem(path, f"{ann_path}: annotation {aid}: empty mask"))
        return False
    return seg


# ---------------------------------------------------------------- YOLO

def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a YAML file ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a mapping with 'names' and 'train'/'val'")
    return doc


def yolo_names(path: Path, doc: dict) -> tuple[str, ...]:
    """The class names of a ``data.yaml`` (a list, or a mapping from id to name)."""
    names = doc.get("names")
    if names is None:
        raise InputError(f"{path}: no 'names' entry (the class names, e.g. names: [person, forklift])")
    if isinstance(names, dict):
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise InputError(f"{path}: 'names' keys must be class ids 0, 1, 2...") from None
        if ids != list(range(len(ids))):
            raise InputError(f"{path}: 'names' ids must be 0..{len(ids) - 1} without gaps. Received: {ids}")
        names = [names[k] if k in names else names[str(k)] for k in ids]
    if not isinstance(names, list) or not names:
        raise InputError(f"{path}: 'names' must be a non-empty list of class names")
    out = tuple(norm_name(n) for n in names)
    dup = sorted({n for n in out if out.count(n) > 1})
    if dup:
        raise InputError(f"{path}: class names {dup} appear more than once in 'names'")
    if "nc" in doc and doc["nc"] != len(out):
        raise InputError(f"{path}: nc is {doc['nc']} but 'names' lists {len(out)} classes")
    return out


def _yolo_images(path: Path, base: Path, entry) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    files: list[Path] = []
    for e in entries:
        p = Path(str(e))
        p = p if p.is_absolute() else base / p
        if p.is_file() and p.suffix == ".txt":
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line:
                    q = Path(line)
                    files.append(q if q.is_absolute() else (base / q if not line.startswith("./") else p.parent / q))
        elif p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        else:
            raise InputError(f"{path}: the images folder {e!r} does not exist (looked for {p})")
    return files


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder of the path becomes ``labels``, the suffix ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def read_yolo(yaml_path: Path, split: str = "train", check_images: bool = True) -> Dataset:
    """Read an Ultralytics YOLO dataset (detect or segment labels) for one split of its ``data.yaml``."""
    doc = _read_yaml(yaml_path)
    names = yolo_names(yaml_path, doc)
    regions = doc.get("regions") or []
    if not isinstance(regions, list) or any(norm_name(r) not in names for r in regions):
        raise InputError(f"{yaml_path}: 'regions' must list names from 'names'. Received: {regions!r}")
    region_set = {norm_name(r) for r in regions}
    thing_names = tuple(n for n in names if n not in region_set)
    stuff_names = tuple(n for n in names if n in region_set)
    # file class id -> thing id (>= 0) or -(semantic id) for a region class
    id_map = [thing_names.index(n) if n in thing_names else -(len(thing_names) + 1 + stuff_names.index(n))
              for n in names]
    key = "val" if split in ("val", "valid") else split
    if key == "all":
        key = "train"
    if not doc.get(key):
        raise InputError(f"{yaml_path}: no '{key}' entry (the {key} images folder, e.g. {key}: images/{key})")
    base = Path(str(doc["path"])) if doc.get("path") else yaml_path.parent
    if not base.is_absolute():
        base = (yaml_path.parent / base).resolve()
    files = _yolo_images(yaml_path, base, doc[key])
    problems: list[Problem] = []
    parsed = []
    any_poly = False
    for f in files:
        info = image_info(f)  # read even without check_images: normalised labels need the size
        size = None if info is None else info[:2]
        if size is None:
            problems.append(Problem(f, f"{f}: cannot read this image (corrupt, missing or not an image)"))
            continue
        lp = label_path(f)
        items, probs = _yolo_labels(lp, len(names), *size)
        for c, _, poly in items:
            if id_map[c] < 0 and poly is None:
                probs.append(Problem(lp, f"{lp}: a box for the region class {names[c]!r}; regions need polygons"))
        problems += probs
        if probs:
            continue
        any_poly |= any(poly is not None for c, _, poly in items if id_map[c] >= 0)
        parsed.append((f, size, items, info[2] != 1))
    records = []
    for i, (f, (w, h), items, rotated) in enumerate(parsed):
        objs = [(id_map[c], b, poly) for c, b, poly in items if id_map[c] >= 0]
        segs = tuple(poly for _, _, poly in objs)
        all_masks = any_poly and all(s is not None for s in segs)
        records.append(Record(
            image_id=i + 1, path=f, width=w, height=h, categories=np.array([c for c, _, _ in objs], np.int32),
            boxes=np.array([b for _, b, _ in objs], np.float32).reshape(-1, 4), segmentations=segs,
            stuff=tuple((-id_map[c], poly) for c, _, poly in items if id_map[c] < 0),
            supervision=Supervision(True, all_masks, all_masks), exif_rotated=rotated,
        ))
    return Dataset(root=yaml_path.parent, records=tuple(records), thing_classes=thing_names,
                   stuff_classes=stuff_names, format="yolo", split=key, problems=tuple(problems))


def _yolo_labels(path: Path, n_classes: int, w: int, h: int) -> tuple[list, list[Problem]]:
    """(class, box, polygon or None) per line of a label file (none when it is missing: a background image)."""
    if not path.is_file():
        return [], []
    problems: list[Problem] = []
    items = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        return [], [Problem(path, f"{path}: cannot read this label file ({e})")]
    for ln, line in enumerate(lines, 1):
        vals = line.split()
        if not vals:
            continue
        where = f"{path}:{ln}"
        try:
            nums = [float(v) for v in vals]
        except ValueError:
            problems.append(Problem(path, f"{where}: not numbers: {line.strip()[:60]!r}"))
            continue
        n = len(nums)
        if n != 5 and (n < 7 or n % 2 == 0):
            if n % 2 == 1 and n < 7:
                msg = f"polygon with fewer than 3 points ({(n - 1) // 2})"
            else:
                msg = (f"{n} values; expected 5 (class cx cy w h) or an odd number of at least 7 "
                       "(class x1 y1 x2 y2 x3 y3 ...)")
            problems.append(Problem(path, f"{where}: {msg}"))
            continue
        cls = nums[0]
        if cls != int(cls) or not 0 <= cls < n_classes:
            problems.append(Problem(path, f"{where}: class id {vals[0]} beyond 'names' (0..{n_classes - 1})"))
            continue
        coords = np.asarray(nums[1:], np.float64)
        if n == 5:
            cx, cy, bw, bh = coords
            pts = np.array([[cx - bw / 2, cy - bh / 2], [cx + bw / 2, cy + bh / 2]])
            if bw <= 0 or bh <= 0:
                problems.append(Problem(path, f"{where}: empty box (width or height 0)"))
                continue
        else:
            pts = coords.reshape(-1, 2)
        if (pts < -EDGE_TOLERANCE).any() or (pts > 1 + EDGE_TOLERANCE).any():
            problems.append(Problem(path, f"{where}: coordinates outside the image (YOLO labels are normalised to 0..1)"))
            continue
        pts = np.clip(pts, 0, 1) * (w, h)
        box = [float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())]
        if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
            problems.append(Problem(path, f"{where}: the polygon encloses no area"))
            continue
        poly = None if n == 5 else [[float(v) for v in pts.ravel()]]
        items.append((int(cls), box, poly))
    return items, problems


# ---------------------------------------------------------------- semantic label maps

LABEL_MAP_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")
VOID_NAMES = ("void", "unlabelled", "unlabeled", "ignore")
"""Names of a ``classes.txt`` line whose id teaches nothing, like 255: CamVid's 11-class maps mark their
unlabelled pixels 11 (``void``), not 255."""


def segnet_dirs(root: Path) -> dict[str, tuple[Path, Path]]:
    """The (images, label maps) folders of each split in SegNet's layout, as its CamVid ships: ``train/`` with
    ``trainannot/``, ``val/`` with ``valannot/``, ``test/`` with ``testannot/``."""
    found = {}
    for split, names in SPLIT_DIRS.items():
        d = next((root / n for n in names if (root / n).is_dir() and (root / f"{n}annot").is_dir()), None)
        if d is not None:
            found[split] = (d, d.with_name(d.name + "annot"))
    return found


def labelmap_lists(root: Path) -> dict[str, Path]:
    """The split lists of a label-map dataset: ``train.txt``, ``val.txt`` (or ``valid.txt``,
    ``validation.txt``), ``test.txt`` beside ``classes.txt``, one image per line."""
    found = {}
    for split, names in SPLIT_DIRS.items():
        hit = next((root / f"{n}.txt" for n in names if (root / f"{n}.txt").is_file()), None)
        if hit is not None:
            found[split] = hit
    return found


def _read_split_list(path: Path, images: dict[Path, Path]) -> tuple[list[Path], list[Problem]]:
    """The image keys a split list names, in its order. A line names an image by its stem (``0042``), its file
    name or its path under the root or ``images/`` (``images/a/0042.jpg``); only its first word counts, so the
    ``image label`` pairs of SegNet's CamVid lists read too. Blank lines and ``#`` comments are skipped."""
    by_name: dict[str, list[Path]] = {}
    for key in images:
        by_name.setdefault(key.name, []).append(key)
    keys, problems, seen = [], [], set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read this split list ({e})") from None
    for n, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        p = Path(line.split()[0].replace("\\", "/"))
        if p.suffix.lower() in IMAGE_SUFFIXES + LABEL_MAP_SUFFIXES:
            p = p.with_suffix("")
        parts = p.parts[1:] if p.parts[:1] == ("images",) else p.parts
        key = Path(*parts) if parts else p
        if key not in images:
            named = by_name.get(p.name, [])
            key = named[0] if len(named) == 1 else None
        if key is None:
            problems.append(Problem(path, f"{path}, line {n}: {line.split()[0]!r} names no image in images/ "
                                          "(give its stem, file name or path under images/)"))
        elif key not in seen:
            seen.add(key)
            keys.append(key)
    return keys, problems


def read_labelmaps(root: Path, split: str = "all", check_images: bool = True) -> Dataset:
    """Read ``images/`` + ``labels/`` + ``classes.txt`` (every class a region class). Splits come from
    ``images/{train,val,test}/`` folders (with ``labels/`` alike) or from split lists (``labelmap_lists``); with
    lists, ``train`` is ``train.txt``, or every image that no other list names when there is none."""
    import cv2

    try:
        classes = [norm_name(line) for line in (root / "classes.txt").read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{root / 'classes.txt'}: cannot read ({e})") from None
    while classes and not classes[-1]:
        classes.pop()
    if not classes or any(not c for c in classes):
        raise InputError(f"{root / 'classes.txt'}: one class name per line (line k names label id k), no empty lines")
    if len(classes) > 255:
        raise InputError(f"{root / 'classes.txt'}: at most 255 classes (255 is the ignore id)")
    bg = [i for i, c in enumerate(classes) if c.lower() == "background"]
    void = [i for i, c in enumerate(classes) if c.lower() in VOID_NAMES]
    stuff = tuple(c for i, c in enumerate(classes) if i not in bg and i not in void)
    lut = np.full(256, IGNORE, np.uint8)
    k = 0
    for i in range(len(classes)):
        if i in void:
            continue
        if i in bg:
            lut[i] = 0
        else:
            lut[i] = 1 + k
            k += 1
    img_dir, lab_dir = root / "images", root / "labels"
    sub = next((d for d in SPLIT_DIRS.get(split, ()) if (img_dir / d).is_dir()), None)
    lists = labelmap_lists(root) if sub is None else {}
    segnet = segnet_dirs(root) if not img_dir.is_dir() else {}
    if segnet:
        key = "train" if split == "all" else split
        if key not in segnet:
            raise InputError(f"{root}: no {split} split (no {split}/ folder with its {split}annot/)")
        (img_dir, lab_dir), lists = segnet[key], {}
    elif sub is not None:
        img_dir, lab_dir = img_dir / sub, lab_dir / sub
    elif split not in ("all", "train") and split not in lists:
        raise InputError(f"{root}: no {split} split (neither an images/{split} folder nor a {split}.txt list)")
    images = {p.relative_to(img_dir).with_suffix(""): p for p in sorted(img_dir.rglob("*"))
              if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}
    labels = {p.relative_to(lab_dir).with_suffix(""): p for p in sorted(lab_dir.rglob("*"))
              if p.is_file() and p.suffix.lower() in LABEL_MAP_SUFFIXES}
    problems: list[Problem] = []
    notes = [f"class {classes[i]!r} (id {i}) teaches nothing, as 255" for i in void]
    if lists and split != "all":
        listed = {}
        for name, path in lists.items():
            listed[name], bad = _read_split_list(path, images)
            if name == split:
                problems += bad
        if split in listed:
            keep = set(listed[split])
            notes.append(f"the {split} split is the {len(keep)} image(s) {lists[split].name} names")
        else:
            keep = set(images).difference(*listed.values())
            notes.append(f"the train split is the {len(keep)} image(s) that "
                         f"{' and '.join(p.name for p in lists.values())} do not name")
        others = set().union(*(set(v) for k, v in listed.items() if k != split))
        if keep & others:
            notes.append(f"{len(keep & others)} image(s) of the {split} split are also in another split list "
                         "(figures on them are not held out)")
        images = {k: v for k, v in images.items() if k in keep}
        labels = {k: v for k, v in labels.items() if k in keep}
    for stem in sorted(set(labels) - set(images)):
        problems.append(Problem(labels[stem], f"{labels[stem]}: label map without an image "
                                               f"(no {img_dir.relative_to(root) / stem}.*)"))
    unlabelled = sorted(set(images) - set(labels))
    if unlabelled:
        notes.append(f"{len(unlabelled)} image(s) without a label map are not used (first: {images[unlabelled[0]]})")
    records = []
    for i, stem in enumerate(sorted(set(images) & set(labels))):
        ip, lp = images[stem], labels[stem]
        info = image_info(ip)
        size = None if info is None else info[:2]
        if size is None:
            problems.append(Problem(ip, f"{ip}: cannot read this image (corrupt or not an image)"))
            continue
        lab = cv2.imread(str(lp), cv2.IMREAD_UNCHANGED)
        if lab is None:
            problems.append(Problem(lp, f"{lp}: cannot decode this label map"))
            continue
        if lab.ndim == 3:
            if not (lab[..., :1] == lab).all():
                problems.append(Problem(lp, f"{lp}: a colour label map; expected single-channel class ids "
                                            "(a palette PNG saved as RGB loses them)"))
                continue
            lab = lab[..., 0]
        if (lab.shape[1], lab.shape[0]) != size:
            problems.append(Problem(lp, f"{lp}: label map is {lab.shape[1]}x{lab.shape[0]}, its image {size[0]}x{size[1]}"))
            continue
        vals = np.unique(lab)
        bad = [int(v) for v in vals if v >= len(classes) and v != IGNORE]
        if bad:
            problems.append(Problem(lp, f"{lp}: label values {bad[:8]} outside the {len(classes)} classes of "
                                        "classes.txt (ids 0.." f"{len(classes) - 1}, 255 = ignore; a line named "
                                        "void there makes its id teach nothing)"))
            continue
        records.append(Record(image_id=i + 1, path=ip, width=size[0], height=size[1],
                              categories=np.zeros(0, np.int32), boxes=np.zeros((0, 4), np.float32),
                              semantic_path=lp, semantic_lut=lut, exif_rotated=info[2] != 1,
                              supervision=Supervision(boxes=False, masks=False, semantic=True)))
    return Dataset(root=root, records=tuple(records), thing_classes=(), stuff_classes=stuff, format="labelmap",
                   split=split, notes=tuple(notes), problems=tuple(problems))

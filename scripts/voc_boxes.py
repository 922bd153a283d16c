"""Write a COCO instance set's boxes as a Pascal VOC box set, the way LabelImg writes one (maintainer tooling, not
installed): ``JPEGImages/`` (links to the photos), ``Annotations/STEM.xml`` with integer, 1-based, inclusive
coordinates, and ``ImageSets/Main/SPLIT.txt`` per COCO file. Masks, regions (``isthing: 0``) and crowds are
dropped, so the set teaches boxes alone: the third box set of docs/recipe_runs.md ("A third box set"), made from
Penn-Fudan's pedestrians.

Usage: ``.venv/bin/python scripts/voc_boxes.py ../shared/data/penn-fudan OUT [--splits train val]``; reads
``SRC/annotations/instances_SPLIT.json`` and ``SRC/images/``, and prints images and boxes per split.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from xml.sax.saxutils import escape


def voc_xml(file_name: str, path: Path, width: int, height: int, objects: list[tuple[str, tuple[int, ...]]]) -> str:
    """One LabelImg-style annotation: ``objects`` as ``(name, (xmin, ymin, xmax, ymax))``, 1-based and inclusive."""
    objs = "".join(
        f"\t<object>\n\t\t<name>{escape(name)}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
        f"\t\t<difficult>0</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{x0}</xmin>\n\t\t\t<ymin>{y0}</ymin>\n"
        f"\t\t\t<xmax>{x1}</xmax>\n\t\t\t<ymax>{y1}</ymax>\n\t\t</bndbox>\n\t</object>\n"
        for name, (x0, y0, x1, y1) in objects)
    return (f"<annotation>\n\t<folder>JPEGImages</folder>\n\t<filename>{escape(file_name)}</filename>\n"
            f"\t<path>{escape(str(path))}</path>\n\t<source>\n\t\t<database>Unknown</database>\n\t</source>\n"
            f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
            f"\t<segmented>0</segmented>\n{objs}</annotation>\n")


def coco_box_to_voc(box: list[float], width: int, height: int) -> tuple[int, int, int, int]:
    """COCO's ``[x, y, w, h]`` (pixel edges) as VOC's 1-based inclusive pixel indices, rounded and inside the image."""
    x, y, w, h = box
    return (max(1, round(x) + 1), max(1, round(y) + 1), min(width, round(x + w)), min(height, round(y + h)))


def write_split(src: Path, out: Path, split: str) -> tuple[int, int]:
    """The split's XML files and list; ``(images, boxes)`` written."""
    doc = json.loads((src / "annotations" / f"instances_{split}.json").read_text())
    names = {c["id"]: c["name"] for c in doc["categories"] if c.get("isthing", 1)}
    boxes = defaultdict(list)
    for a in doc["annotations"]:
        if a["category_id"] in names and not a.get("iscrowd", 0):  # VOC has neither regions nor crowds
            boxes[a["image_id"]].append((names[a["category_id"]], a["bbox"]))
    stems, count = [], 0
    for im in doc["images"]:
        name, w, h = Path(im["file_name"]).name, im["width"], im["height"]
        if Path(name).stem in stems:
            raise SystemExit(f"error: two images of {split} are named {Path(name).stem}; VOC keeps one folder of them")
        link = out / "JPEGImages" / name
        if not link.exists():
            link.symlink_to((src / "images" / im["file_name"]).resolve())
        objects = [(n, coco_box_to_voc(b, w, h)) for n, b in boxes[im["id"]]]
        _write_text(out / "Annotations" / f"{Path(name).stem}.xml", voc_xml(name, link, w, h, objects))
        stems.append(Path(name).stem)
        count += len(objects)
    _write_text(out / "ImageSets" / "Main" / f"{split}.txt", "".join(f"{s}\n" for s in sorted(stems)))
    return len(stems), count


def _write_text(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        f.write(text)
    os.replace(f.name, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="COCO export: images/ and annotations/instances_SPLIT.json")
    ap.add_argument("out", type=Path)
    ap.add_argument("--splits", nargs="+", default=["train", "val"])
    args = ap.parse_args()
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (args.out / sub).mkdir(parents=True, exist_ok=True)
    for split in args.splits:
        images, count = write_split(args.src, args.out, split)
        print(f"{split}: {images} images, {count} boxes")


if __name__ == "__main__":
    main()

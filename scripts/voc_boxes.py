"""Write a labelled set's boxes as a Pascal VOC box set, the way LabelImg writes one (maintainer tooling, not
installed): ``JPEGImages/`` (links to the photos), ``Annotations/STEM.xml`` with integer, 1-based, inclusive
coordinates, and ``ImageSets/Main/SPLIT.txt`` per split. The set is read by the project's own reader (any format
``train`` reads); masks, regions and crowds are dropped, so the VOC set teaches boxes alone: the third box set of
docs/recipe_runs.md ("A third box set"), made from Penn-Fudan's pedestrians (a COCO export).

Usage: ``.venv/bin/python scripts/voc_boxes.py ../shared/data/penn-fudan OUT [--splits train val]``; prints images
and boxes per split.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from xml.sax.saxutils import escape

from ocrnet_edge.model.data import load_dataset
from ocrnet_edge.model.formats import available_splits


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


def voc_box(box, width: int, height: int) -> tuple[int, int, int, int]:
    """A box in pixel edges (``x0, y0, x1, y1``, as the readers give it) as VOC's 1-based inclusive pixel indices,
    rounded and inside the image (the reader's inverse: ``[xmin - 1, ymin - 1, xmax, ymax]``). A side that rounds to
    one index or none (a box about a pixel wide or less) is widened to the 2 indices the VOC reader takes (it refuses
    ``xmax <= xmin``, LabelImg's click without a drag)."""
    def side(lo: float, hi: float, size: int) -> tuple[int, int]:
        a, b = max(1, round(lo) + 1), min(size, round(hi))
        if b <= a:
            a, b = (a, a + 1) if a < size else (size - 1, size)
        return a, b

    (xmin, xmax), (ymin, ymax) = side(box[0], box[2], width), side(box[1], box[3], height)
    return xmin, ymin, xmax, ymax


def write_split(src: Path, out: Path, split: str) -> tuple[int, int]:
    """The split's XML files and list, from the project's own reader (so every format ``train`` reads, with its
    thing classes alone: regions and crowds are not boxes); ``(images, boxes)`` written."""
    ds = load_dataset(src, split=split)
    stems, count = set(), 0
    for rec in ds.records:
        name = rec.path.name
        if rec.path.stem in stems:
            raise SystemExit(f"error: two images of {split} are named {rec.path.stem}; VOC keeps one folder of them")
        link = out / "JPEGImages" / name
        if not link.exists():
            link.symlink_to(rec.path.resolve())
        objects = [(ds.thing_classes[c], voc_box(b, rec.width, rec.height)) for b, c in zip(rec.boxes, rec.categories)]
        _write_text(out / "Annotations" / f"{rec.path.stem}.xml", voc_xml(name, link, rec.width, rec.height, objects))
        stems.add(rec.path.stem)
        count += len(objects)
    _write_text(out / "ImageSets" / "Main" / f"{split}.txt", "".join(f"{s}\n" for s in sorted(stems)))
    return len(stems), count


def _write_text(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        f.write(text)
    os.replace(f.name, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="a labelled set in any format train reads")
    ap.add_argument("out", type=Path)
    ap.add_argument("--splits", nargs="+", help="default: every split the set has")
    args = ap.parse_args()
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (args.out / sub).mkdir(parents=True, exist_ok=True)
    for split in args.splits or available_splits(args.src):
        images, count = write_split(args.src, args.out, split)
        print(f"{split}: {images} images, {count} boxes")


if __name__ == "__main__":
    main()

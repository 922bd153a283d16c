"""The Pascal VOC reader on files written the way LabelImg and the VOC devkit write them, in each layout
they come in, and its bad-input rows: one line naming the file (and line), ``--skip-bad`` skips the image."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ocrnet_edge.cli import main
from ocrnet_edge.model.data import load_dataset
from ocrnet_edge.model.formats import available_splits
from ocrnet_edge.runtime.errors import EXIT_INPUT, InputError

W, H = 64, 48
"""Size of every test image."""
SHARED_BCCD = Path(__file__).resolve().parents[2] / "shared" / "data" / "bccd"
BCCD_ZERO_SIZE = ("BloodImage_00338.xml", "BloodImage_00343.xml")
"""The two BCCD files holding a zero-size box (xmin = xmax, ymin = ymax), kept as in the source."""

# Each image: (stem, [(name, (xmin, ymin, xmax, ymax), difficult)]). "dog" appears first, so it is class 0.
IMAGES = {
    "2007_000001": [("dog", (1, 1, 20, 10), False), ("cat", (30, 5, 60, 40), False)],
    "2007_000002": [("cat", (5, 5, 25, 25), False), ("dog", (40, 20, 50, 30), True)],
    "2007_000003": [("cat", (2, 2, 30, 30), False)],
    "2007_000004": [("bird", (10, 10, 40, 40), False)],
}
SPLITS = {"train": ["2007_000001", "2007_000002"], "val": ["2007_000003"], "test": ["2007_000004"]}


def voc_xml(filename: str, objects, folder: str = "JPEGImages", size=(W, H)) -> str:
    """An annotation as LabelImg (and the VOC devkit) write it: tabs, <source>, <size> with depth, <segmented>."""
    objs = "".join(
        f"""
\t<object>
\t\t<name>{name}</name>
\t\t<pose>Unspecified</pose>
\t\t<truncated>0</truncated>
\t\t<difficult>{int(difficult)}</difficult>
\t\t<bndbox>
\t\t\t<xmin>{box[0]}</xmin>
\t\t\t<ymin>{box[1]}</ymin>
\t\t\t<xmax>{box[2]}</xmax>
\t\t\t<ymax>{box[3]}</ymax>
\t\t</bndbox>
\t</object>""" for name, box, difficult in objects)
    return f"""<annotation>
\t<folder>{folder}</folder>
\t<filename>{filename}</filename>
\t<path>/home/labeller/{folder}/{filename}</path>
\t<source>
\t\t<database>Unknown</database>
\t</source>
\t<size>
\t\t<width>{size[0]}</width>
\t\t<height>{size[1]}</height>
\t\t<depth>3</depth>
\t</size>
\t<segmented>0</segmented>{objs}
</annotation>
"""


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((H, W, 3), 120, np.uint8))


def write_devkit(root: Path) -> Path:
    """The VOC devkit's layout: Annotations/, JPEGImages/, ImageSets/Main/{train,val,test,trainval}.txt."""
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for stem, objects in IMAGES.items():
        _image(root / "JPEGImages" / f"{stem}.jpg")
        (root / "Annotations" / f"{stem}.xml").write_text(voc_xml(f"{stem}.jpg", objects))
    for split, stems in SPLITS.items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(stems) + "\n")
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(SPLITS["train"] + SPLITS["val"]) + "\n")
    return root


@pytest.fixture
def devkit(tmp_path):
    return write_devkit(tmp_path / "VOC2007")


def test_devkit_layout(devkit):
    assert available_splits(devkit) == ("train", "val", "test")
    ds = load_dataset(devkit)
    assert ds.format == "voc" and ds.split == "train" and len(ds) == 2
    assert ds.thing_classes == ("dog", "cat", "bird"), "classes in order of first appearance, over every split"
    first, second = ds.records
    # 1-based inclusive pixel indices: xmin 1 .. xmax 20 spans [0, 20) in pixel-edge coordinates
    np.testing.assert_array_equal(first.boxes, [[0, 0, 20, 10], [29, 4, 60, 40]])
    assert first.categories.tolist() == [0, 1] and (first.width, first.height) == (W, H)
    assert first.supervision.tasks() == ("boxes",) and first.has_masks().tolist() == [False, False]
    # the difficult dog is neither object nor background: an ignored region of its class, as COCO's iscrowd
    assert second.categories.tolist() == [1] and len(second.crowd) == 1
    crowd = [a for a in ds.coco_dict("boxes")["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1 and crowd[0]["category_id"] == 1 and crowd[0]["bbox"] == [39.0, 19.0, 11.0, 11.0]
    assert any("1 difficult object(s) ignored" in n for n in ds.notes)
    assert len(load_dataset(devkit, split="val")) == 1 and len(load_dataset(devkit, split="test")) == 1
    assert load_dataset(devkit, split="test").records[0].categories.tolist() == [2]


def test_the_devkit_root_names_the_year_folder_to_pass(tmp_path, capsys):
    write_devkit(tmp_path / "VOCdevkit" / "VOC2007")
    root = tmp_path / "VOCdevkit"
    assert main(["dataset", str(root)]) == EXIT_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"holds Pascal VOC datasets in VOC2007/; pass one of them, e.g. --data {root / 'VOC2007'}" in err[0]


def test_trainval_when_there_is_no_train_list(devkit):
    (devkit / "ImageSets" / "Main" / "train.txt").unlink()
    assert available_splits(devkit) == ("train", "val", "test")
    assert len(load_dataset(devkit)) == 3, "train reads trainval.txt"


def test_classes_option_selects_and_orders(devkit):
    ds = load_dataset(devkit, class_names=("cat",), strict_classes=True)
    assert ds.thing_classes == ("cat",)
    assert [r.categories.tolist() for r in ds.records] == [[0], [0]]
    assert not ds.records[1].crowd, "a difficult object of a class not selected is dropped with its class"
    assert any("dropped 1 annotation(s)" in n for n in ds.notes)
    with pytest.raises(InputError, match=r"class\(es\) \['horse'\] not in this dataset"):
        load_dataset(devkit, class_names=("cat", "horse"), strict_classes=True)


def test_labelimg_one_folder(tmp_path):
    """LabelImg's default: the XML beside its image; no split lists, so one split; an image without XML is not used."""
    root = tmp_path / "shots"
    for stem, objects in IMAGES.items():
        _image(root / f"{stem}.png")
        (root / f"{stem}.xml").write_text(voc_xml(f"{stem}.png", objects, folder="shots"))
    _image(root / "unlabelled.png")
    assert available_splits(root) == ("all",)
    ds = load_dataset(root, split="all")
    assert len(ds) == 4 and ds.thing_classes == ("dog", "cat", "bird")
    assert any("1 image(s) without an annotation file are not used" in n for n in ds.notes)


@pytest.mark.parametrize("xml_dir", ["annotations", "annots"])
def test_labelimg_two_folders_with_split_lists(tmp_path, xml_dir):
    """images/ + annotations/ (or annots/, as the kangaroo set) with train.txt / val.txt naming stems or files."""
    root = tmp_path / "set"
    (root / xml_dir).mkdir(parents=True)
    for stem, objects in IMAGES.items():
        _image(root / "images" / f"{stem}.jpg")
        # a renamed image: <filename> is stale, the stem matches
        (root / xml_dir / f"{stem}.xml").write_text(voc_xml("IMG_1234.JPG", objects, folder="images"))
    (root / "train.txt").write_text("2007_000001\nimages/2007_000002.jpg\n2007_000004\n")
    (root / "val.txt").write_text("2007_000003.jpg\n")
    assert available_splits(root) == ("train", "val")
    assert [r.path.name for r in load_dataset(root).records] == ["2007_000001.jpg", "2007_000002.jpg", "2007_000004.jpg"]
    assert len(load_dataset(root, split="val")) == 1


def test_roboflow_split_folders(tmp_path):
    root = tmp_path / "rf"
    for split, folder in (("train", "train"), ("val", "valid")):
        for stem in SPLITS[split]:
            _image(root / folder / f"{stem}.jpg")
            (root / folder / f"{stem}.xml").write_text(voc_xml(f"{stem}.jpg", IMAGES[stem]))
    assert available_splits(root) == ("train", "val")
    assert len(load_dataset(root)) == 2 and len(load_dataset(root, split="val")) == 1


def test_boxes_past_the_edge_are_clipped_and_counted(devkit):
    xml = devkit / "Annotations" / "2007_000001.xml"
    xml.write_text(voc_xml("2007_000001.jpg", [("dog", (0, 1, 20, 10), False), ("cat", (30, 5, W + 9, H + 2), False)]))
    ds = load_dataset(devkit)
    np.testing.assert_array_equal(ds.records[0].boxes, [[0, 0, 20, 10], [29, 4, W, H]])
    assert any(n.startswith("clipped 2 box(es) that extended past their image (first: ") and "2007_000001.xml" in n
               for n in ds.notes)


def _rewrite(stem, objects=None, text=None):
    def edit(root):
        xml = root / "Annotations" / f"{stem}.xml"
        xml.write_text(text if text is not None else voc_xml(f"{stem}.jpg", objects))
    return edit


def _missing_image(root):
    (root / "JPEGImages" / "2007_000002.jpg").unlink()


BAD_CASES = [
    ("bad XML", _rewrite("2007_000002", text=voc_xml("2007_000002.jpg", [])[:-20]),
     r"2007_000002\.xml: not well-formed XML \(.*line \d+"),
    ("DOCTYPE", _rewrite("2007_000002", text='<!DOCTYPE x [<!ENTITY a "b">]>' + voc_xml("2007_000002.jpg", [])),
     r"2007_000002\.xml: holds a DOCTYPE or ENTITY declaration"),
    ("zero area", _rewrite("2007_000002", [("cat", (5, 5, 25, 25), False), ("cat", (12, 9, 12, 9), False)]),
     r"2007_000002\.xml:26: object 2 \(cat\): box with zero area \(xmin = xmax = 12, ymin = ymax = 9\)"),
    ("xmax below xmin", _rewrite("2007_000002", [("cat", (25, 5, 5, 25), False)]),
     r"2007_000002\.xml:14: object 1 \(cat\): box with zero area \(xmax 5 < xmin 25\)"),
    ("box outside the image", _rewrite("2007_000002", [("dog", (70, 5, 90, 25), False)]),
     rf"2007_000002\.xml:14: object 1 \(dog\): box \(xmin 70, ymin 5, xmax 90, ymax 25\) lies outside the {W}x{H} image"),
    ("no bndbox", _rewrite("2007_000002", text=voc_xml("2007_000002.jpg", [("cat", (5, 5, 25, 25), False)])
                           .replace("<xmax>25</xmax>", "<xmax></xmax>")),
     r"2007_000002\.xml:14: object 1 \(cat\): <bndbox> needs numbers"),
    ("missing image", _missing_image, r"JPEGImages/2007_000002\.jpg: image named in 2007_000002\.xml is missing"),
    ("size disagrees", _rewrite("2007_000002", text=voc_xml("2007_000002.jpg", [], size=(640, 480))),
     rf"2007_000002\.jpg: image is {W}x{H} but 2007_000002\.xml says 640x480"),
]


@pytest.mark.parametrize(("edit", "message"), [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_bad_input(devkit, edit, message):
    edit(devkit)
    with pytest.raises(InputError, match=message):
        load_dataset(devkit)
    ds = load_dataset(devkit, skip_bad=True)
    assert len(ds) == 1 and ds.records[0].path.stem == "2007_000001"
    assert any("skipped 1 bad file(s)" in n for n in ds.notes)


def test_dataset_says_where_the_boxes_go_and_the_head_train_gives_a_set_of_boxes_alone(devkit):
    from ocrnet_edge.model.summary import format_summary, summarize

    # 64x48 photos at 384x288 (320's shape for 4:3), six times their size. Half each box's largest side there: the
    # dog 60 px (stride 16), the large cat 108 (stride 32), the small cat 63 (stride 16); the difficult dog is not
    # counted. More at stride 32 than at stride 8: the decoupled head, and with it the larger input, 512x384.
    doc = summarize(devkit, (384, 288))
    assert doc["splits"]["train"]["boxes_per_level"] == {"8": 0.0, "16": 0.6667, "32": 0.3333}
    text = format_summary(doc)
    assert ("boxes per detection level at that input: stride 8 0%, stride 16 67%, stride 32 33%; boxes alone, so "
            "train gives the decoupled detection head") in text
    assert text.count("train gives the") == 1, "the head is named once, for the training split"
    assert "input train takes without --size: 512x384 (boxes alone, mostly large: the decoupled head at 416; " in text
    doc = summarize(devkit)  # object sizes and levels at the input train takes: every box at stride 32
    assert doc["input_size"] == [512, 384]
    assert doc["splits"]["train"]["boxes_per_level"] == {"8": 0.0, "16": 0.0, "32": 1.0}
    # at 96x96 (1.5 times) every box goes to stride 8: the cheaper shared head
    small = format_summary(summarize(devkit, 96))
    assert ("stride 8 100%, stride 16 0%, stride 32 0%; boxes alone, so train gives the shared detection head with "
            "task-aligned label assignment") in small


def test_bad_input_is_one_line_from_the_cli(devkit, tmp_path, capsys):
    _rewrite("2007_000002", [("cat", (12, 9, 12, 9), False), ("dog", (40, 20, 50, 30), True)])(devkit)
    assert main(["dataset", str(devkit)]) == 0, "the summary lists problems, it does not stop at them"
    out = capsys.readouterr().out
    assert "voc dataset" in out and "problems: 1" in out and "box with zero area" in out
    assert "difficult objects (ignored in training and scoring): 1" in out
    run = tmp_path / "run"
    assert main(["train", "--data", str(devkit), "--out", str(run), "--epochs", "1"]) == EXIT_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "2007_000002.xml:14: object 1 (cat): box with zero area" in err[0]
    assert not run.exists()


def test_list_entry_without_annotation(devkit):
    (devkit / "Annotations" / "2007_000003.xml").unlink()
    with pytest.raises(InputError, match=r"val\.txt:1: 2007_000003 has no annotation file"):
        load_dataset(devkit, split="val")


@pytest.mark.skipif(not SHARED_BCCD.is_dir(), reason="the shared BCCD set is not on this machine")
def test_bccd_zero_size_boxes_are_problems():
    problems = []
    for split in available_splits(SHARED_BCCD):
        from ocrnet_edge.model.formats import read_any

        problems += [str(p) for p in read_any(SHARED_BCCD, split, check_images=False).problems]
    assert len(problems) == len(BCCD_ZERO_SIZE)
    for name, line in zip(sorted(BCCD_ZERO_SIZE), sorted(problems, key=lambda p: Path(p.split(":")[0]).name)):
        assert f"{name}:" in line and "box with zero area" in line
    assert len(load_dataset(SHARED_BCCD, skip_bad=True, check_images=False)) == 205 - 1


def test_convert_gate_data_with_bad_boxes_is_refused_or_skipped(devkit, tmp_path):
    """`convert --val` on a set with a zero-area box: one line naming the file, or `--skip-bad` skips that file
    (the line's own advice, which convert did not take before)."""
    from ocrnet_edge.convert.pipeline import ConvertOptions, _gate_plan
    from ocrnet_edge.model.config import ModelConfig

    _rewrite("2007_000003", [("cat", (2, 2, 30, 30), False), ("cat", (7, 7, 7, 7), False)])(devkit)
    (devkit / "ImageSets" / "Main" / "val.txt").write_text("2007_000003\n2007_000001\n")
    cfg = ModelConfig(input_size=64, class_names=("dog", "cat"))
    with pytest.raises(InputError, match=r"2007_000003\.xml:\d+: object 2 \(cat\): box with zero area"):
        _gate_plan(ConvertOptions(val=devkit), cfg, tmp_path / "model.keras", None)
    what, load = _gate_plan(ConvertOptions(val=devkit, skip_bad=True, progress=False), cfg,
                            tmp_path / "model.keras", None)
    assert what == f"dataset {devkit} (val)" and [r.path.name for r in load(tmp_path).records] == ["2007_000001.jpg"]


def test_the_box_set_script_writes_what_the_reader_reads_back(tmp_path):
    """``scripts/voc_boxes.py`` (the third box set of docs/recipe_runs.md) on a CVAT-style COCO export: every thing
    object's box comes back from the VOC reader as COCO gave it, and the floor region and the crowd are left out."""
    import json
    import subprocess
    import sys

    from .conftest import REPO, USER_CLASSES, USER_REGION, write_coco_export

    src = write_coco_export(tmp_path / "coco", 4)
    (src / "annotations" / "instances_default.json").rename(src / "annotations" / "instances_train.json")
    out = tmp_path / "voc"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "voc_boxes.py"), str(src), str(out),
                           "--splits", "train"], capture_output=True, text=True, check=True)
    doc = json.loads((src / "annotations" / "instances_train.json").read_text())
    things = {c["id"]: c["name"] for c in doc["categories"] if c.get("isthing", 1)}
    kept = [a for a in doc["annotations"] if a["category_id"] in things and not a["iscrowd"]]
    assert done.stdout.strip() == f"train: 4 images, {len(kept)} boxes"
    assert len(kept) < len(doc["annotations"]) - 1, "the export holds floor regions and a crowd to leave out"
    ds = load_dataset(out)
    assert ds.format == "voc" and len(ds) == 4 and USER_REGION not in ds.thing_classes
    assert set(ds.thing_classes) <= set(USER_CLASSES) and not ds.stuff_classes
    assert sum(len(rec.boxes) for rec in ds.records) == len(kept) > 0
    stem_of = {im["id"]: Path(im["file_name"]).stem for im in doc["images"]}
    for rec in ds.records:
        want = [a for a in kept if stem_of[a["image_id"]] == Path(rec.path).stem]
        x, y, w, h = np.array([a["bbox"] for a in want], np.float32).reshape(-1, 4).T
        np.testing.assert_array_equal(rec.boxes, np.stack([x, y, x + w, y + h], axis=1))
        assert [ds.thing_classes[c] for c in rec.categories] == [things[a["category_id"]] for a in want]
        assert not rec.crowd


def test_the_box_set_script_keeps_a_box_under_a_pixel_as_one_the_reader_takes():
    import importlib.util

    from .conftest import REPO

    spec = importlib.util.spec_from_file_location("voc_boxes", REPO / "scripts" / "voc_boxes.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.voc_box([3.0, 4.0, 13.0, 9.0], 20, 10) == (4, 5, 13, 9), "pixel edges to 1-based inclusive"
    assert script.voc_box([10.2, -2.0, 10.6, 12.0], 20, 10) == (11, 1, 12, 10), "widened to 2 indices; clipped"
    assert script.voc_box([19.6, 0.0, 20.0, 10.0], 20, 10) == (19, 1, 20, 10), "widened inward at the border"

"""Bad input in every label format: one line naming the file (and line), exit 3, nothing written;
``--skip-bad`` skips the bad files and counts them."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from ocrnet_edge.cli import main
from ocrnet_edge.model.data import load_dataset
from ocrnet_edge.runtime.errors import EXIT_INPUT, InputError


@pytest.fixture
def yolo_src(yolo_seg_dir):
    return yolo_seg_dir


@pytest.fixture
def coco_src(coco_export_dir):
    return coco_export_dir


def _copy(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def _first_label(root):
    return sorted((root / "labels" / "train").glob("*.txt"))[0]


def _yaml_without(key):
    def edit(root):
        import yaml

        doc = yaml.safe_load((root / "data.yaml").read_text())
        doc.pop(key)
        (root / "data.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
    return edit


def _append_line(text):
    def edit(root):
        p = _first_label(root)
        p.write_text(p.read_text() + text + "\n")
    return edit


def _corrupt_image(root):
    p = sorted((root / "images" / "train").glob("*.jpg"))[0]
    p.write_bytes(b"not a jpeg at all")


def _no_labels(root):
    for p in (root / "labels").rglob("*.txt"):
        p.unlink()


YOLO_CASES = [
    ("no names", _yaml_without("names"), r"data\.yaml: no 'names' entry", None),
    ("no train entry", _yaml_without("train"), r"data\.yaml: no 'train' entry", None),
    ("wrong value count", _append_line("0 0.5 0.5 0.2"), r"train_0000\.txt:\d+: 4 values; expected 5", 1),
    ("one-point polygon", _append_line("1 0.1 0.1"), r"train_0000\.txt:\d+: polygon with fewer than 3 points", 1),
    ("class beyond names", _append_line("7 0.5 0.5 0.1 0.1"),
     r"train_0000\.txt:\d+: class id 7 beyond 'names' \(0\.\.3\)", 1),
    ("outside the image", _append_line("0 1.5 0.5 0.1 0.1"), r"train_0000\.txt:\d+: coordinates outside the image", 1),
    ("unreadable image", _corrupt_image, r"train_0000\.jpg: cannot read this image", 1),
    ("no labels at all", _no_labels, r"no labels at all in 8 images", None),
]


@pytest.mark.parametrize(("edit", "message", "skippable"), [c[1:] for c in YOLO_CASES], ids=[c[0] for c in YOLO_CASES])
def test_yolo_bad_input(yolo_src, tmp_path, capsys, edit, message, skippable):
    root = _copy(yolo_src, tmp_path)
    edit(root)
    with pytest.raises(InputError, match=message):
        load_dataset(root)
    out = tmp_path / "run"
    assert main(["train", "--data", str(root), "--out", str(out), "--epochs", "1"]) == EXIT_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert not out.exists(), "nothing is written for a refused dataset"
    if skippable:
        ds = load_dataset(root, skip_bad=True)
        assert len(ds) == 8 - skippable and any("skipped 1 bad file" in n for n in ds.notes)


def _coco_edit(fn):
    def edit(root):
        p = root / "annotations" / "instances_default.json"
        doc = json.loads(p.read_text())
        fn(doc)
        p.write_text(json.dumps(doc))
    return edit


def _first_polygon_ann(doc):
    return next(a for a in doc["annotations"] if isinstance(a["segmentation"], list) and a["segmentation"]
                and not a["iscrowd"] and a["category_id"] <= 3)


def _poly_outside(doc):
    a = _first_polygon_ann(doc)
    a["segmentation"][0][0] = 5000.0


def _poly_short(doc):
    _first_polygon_ann(doc)["segmentation"] = [[1, 1, 5, 5]]


def _empty_rle(doc):
    a = _first_polygon_ann(doc)
    im = next(i for i in doc["images"] if i["id"] == a["image_id"])
    a["segmentation"] = {"size": [im["height"], im["width"]], "counts": [im["height"] * im["width"]]}


def _unknown_cat(doc):
    doc["annotations"][0]["category_id"] = 99


def _duplicate_file(doc):
    doc["images"][1]["file_name"] = doc["images"][0]["file_name"]


def _missing_image(root):
    sorted((root / "images" / "batch_1").glob("*.jpg"))[2].unlink()


COCO_CASES = [
    ("polygon outside the image", _coco_edit(_poly_outside), r"annotation \d+: polygon outside the \d+x\d+ image"),
    ("polygon under 3 points", _coco_edit(_poly_short), r"annotation \d+: polygon with fewer than 3 points"),
    ("empty mask", _coco_edit(_empty_rle), r"annotation \d+: empty mask"),
    ("unknown category", _coco_edit(_unknown_cat), r"annotation 1 has unknown category_id 99"),
    ("duplicate file names", _coco_edit(_duplicate_file), r"images 1 and 2 have the same file batch_1/frame_0000\.jpg"),
    ("missing image", _missing_image, r"frame_0002\.jpg: image listed in instances_default\.json is missing"),
]


@pytest.mark.parametrize(("edit", "message"), [c[1:] for c in COCO_CASES], ids=[c[0] for c in COCO_CASES])
def test_coco_bad_input(coco_src, tmp_path, capsys, edit, message):
    root = _copy(coco_src, tmp_path)
    edit(root)
    with pytest.raises(InputError, match=message):
        load_dataset(root)
    assert main(["dataset", str(root)]) == 0, "the summary lists problems, it does not stop at them"
    assert "problems: " in capsys.readouterr().out
    ds = load_dataset(root, skip_bad=True)
    assert 0 < len(ds) < 8 and any("skipped" in n for n in ds.notes)


def test_label_map_values_outside_the_class_list(tmp_path):
    root = tmp_path / "maps"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("road\nsky\n")
    for i, top in enumerate((1, 7)):
        cv2.imwrite(str(root / "images" / f"{i}.png"), np.zeros((20, 30, 3), np.uint8))
        lab = np.zeros((20, 30), np.uint8)
        lab[:5] = top
        lab[6] = 255
        cv2.imwrite(str(root / "labels" / f"{i}.png"), lab)
    with pytest.raises(InputError, match=r"labels/1\.png: label values \[7\] outside the 2 classes of classes\.txt"):
        load_dataset(root)
    assert len(load_dataset(root, skip_bad=True)) == 1


def test_classes_the_data_does_not_have(yolo_src, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(yolo_src), "--out", str(out), "--classes", "palette,helmet"]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "class(es) ['helmet'] not in this dataset" in err and "Gabelstapler" in err
    assert not out.exists()
    with pytest.raises(SystemExit) as e:  # a usage error: argparse's own line and code
        main(["train", "--data", str(yolo_src), "--out", str(out), "--classes", "palette,,x"])
    assert e.value.code == 2 and "expected comma-separated class names" in capsys.readouterr().err


def test_not_a_dataset(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["dataset", str(tmp_path)]) == EXIT_INPUT
    assert "no dataset found" in capsys.readouterr().err

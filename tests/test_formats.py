"""Readers of the label formats people export, on files written the way those tools write them.

COCO files are checked against pycocotools itself; YOLO and label-map files against the masks the
fixtures drew them from.
"""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from ocrnet_edge.model.data import IGNORE, Placement, load_dataset, render
from ocrnet_edge.model.formats import available_splits, label_path
from ocrnet_edge.runtime.errors import InputError

from .conftest import USER_CLASSES, USER_REGION, user_scene, write_label_maps

POLYGON_IOU = 0.75
"""A mask read back from its traced polygon (through boundary pixel centres) agrees with it at least this
well, for objects of :data:`POLYGON_MIN_PX` pixels or more (small objects lose more of their edge)."""
POLYGON_MIN_PX = 100


@pytest.fixture
def yolo_dir(yolo_seg_dir):
    return yolo_seg_dir


@pytest.fixture
def coco_dir(coco_export_dir):
    return coco_export_dir


def _iou(a, b):
    return (a & b).sum() / max(1, (a | b).sum())


def test_yolo_segment_dataset(yolo_dir):
    assert available_splits(yolo_dir) == ("train", "val")
    ds = load_dataset(yolo_dir)
    assert ds.format == "yolo" and ds.thing_classes == USER_CLASSES and ds.stuff_classes == (USER_REGION,)
    assert len(ds) == 8 and len(load_dataset(yolo_dir, split="val")) == 3
    assert ds.semantic_classes == ("background", *USER_CLASSES, USER_REGION)
    for i, rec in enumerate(ds.records):
        img, objects, _ = user_scene(11, i)
        assert (rec.width, rec.height) == (img.shape[1], img.shape[0])
        assert rec.supervision.tasks() == ("boxes", "masks", "semantic")
        assert list(rec.categories) == [c for c, _ in objects]
        for m, (_, want) in zip(rec.masks(), objects):
            assert _iou(m, want) > POLYGON_IOU or want.sum() < POLYGON_MIN_PX
        sem = rec.semantic()
        assert (sem == len(USER_CLASSES) + 1).any(), "the floor region is in the semantic map"
        assert set(np.unique(sem)) <= set(range(len(ds.semantic_classes)))


def test_yolo_detect_labels_and_layouts(tmp_path):
    """Box labels, a data.yaml with names as a list, a .txt image list, images of any size."""
    root = tmp_path / "det"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i, (w, h) in enumerate(((640, 480), (300, 500))):
        cv2.imwrite(str(root / "images" / f"im{i}.jpg"), np.full((h, w, 3), 90, np.uint8))
    (root / "labels" / "im0.txt").write_text("0 0.5 0.5 0.25 0.5\n1 0.1 0.1 0.1 0.1\n")
    # im1 has no label file: a background image
    (root / "train.txt").write_text("./images/im0.jpg\n./images/im1.jpg\n")
    (root / "data.yaml").write_text("path: .\ntrain: train.txt\nval: train.txt\nnames: [person, 'fork lift']\n")
    ds = load_dataset(root)
    assert ds.thing_classes == ("person", "fork lift") and len(ds) == 2
    np.testing.assert_allclose(ds.records[0].boxes, [[240, 120, 400, 360], [32, 24, 96, 72]])
    assert ds.records[0].supervision.tasks() == ("boxes",)
    assert len(ds.records[1].categories) == 0 and ds.records[1].supervision.boxes
    assert ds.supports("masks") == 0
    assert label_path(root / "images" / "a" / "b.jpg") == root / "labels" / "a" / "b.txt"


def test_coco_export_round_trips_against_pycocotools(coco_dir):
    ann = coco_dir / "annotations" / "instances_default.json"
    ds = load_dataset(coco_dir)
    assert ds.thing_classes == USER_CLASSES and ds.stuff_classes == (USER_REGION,)
    ref = COCO(str(ann))
    for rec in ds.records:
        anns = [a for a in ref.loadAnns(ref.getAnnIds(imgIds=[rec.image_id]))
                if not a["iscrowd"] and a["category_id"] <= len(USER_CLASSES)]
        assert list(rec.categories) == [a["category_id"] - 1 for a in anns]
        for box, a in zip(rec.boxes, anns):
            x, y, w, h = a["bbox"]
            np.testing.assert_allclose(box, [x, y, x + w, y + h], atol=1e-4)
        has = rec.has_masks()
        assert has.tolist() == [bool(a["segmentation"]) for a in anns]
        for m, a, ok in zip(rec.masks(), anns, has):
            if ok:  # our decoding is pycocotools' own
                np.testing.assert_array_equal(m, ref.annToMask(a).astype(bool))
        assert rec.supervision.masks == all(has) and rec.supervision.semantic == all(has)
    # Half the images carry boxes only; the ground truth we score against keeps only the others for masks.
    boxes_only = {a["image_id"] for a in ref.dataset["annotations"] if a["segmentation"] == []}
    assert len(boxes_only) >= 3
    assert ds.supports("boxes") == 8 and ds.supports("masks") == 8 - len(boxes_only)
    gt = ds.coco_dict("masks")
    assert len(gt["images"]) == 8 - len(boxes_only)
    cocogt = COCO()
    cocogt.dataset = gt
    cocogt.createIndex()
    crowd = [a for a in gt["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1 and isinstance(crowd[0]["segmentation"], dict)
    for a in gt["annotations"]:
        if not a["iscrowd"]:
            assert cocogt.annToMask(a).sum() == pytest.approx(a["area"], abs=1)


def test_coco_crowd_and_region_reach_the_semantic_map(coco_dir):
    rec = load_dataset(coco_dir).records[0]
    assert len(rec.crowd) == 1 and len(rec.stuff) == 1
    sem = rec.semantic()
    assert (sem[2:30, 2:40] == IGNORE).all(), "a crowd region is ignored, not background"
    assert (sem == len(USER_CLASSES) + 1).sum() > 0.1 * sem.size, "the floor is a region class"


def test_coco_layouts_label_studio_roboflow_and_nested_paths(coco_dir, tmp_path):
    doc = json.loads((coco_dir / "annotations" / "instances_default.json").read_text())
    # Label Studio: result.json beside images/, file_name with a sub-path.
    ls = tmp_path / "ls"
    shutil.copytree(coco_dir / "images", ls / "images")
    (ls / "result.json").write_text(json.dumps(doc))
    assert len(load_dataset(ls)) == 8
    # Roboflow: train/ and valid/ with _annotations.coco.json and the images beside it.
    rf = tmp_path / "rf"
    for split in ("train", "valid"):
        shutil.copytree(coco_dir / "images" / "batch_1", rf / split)
        d = json.loads(json.dumps(doc))
        for im in d["images"]:
            im["file_name"] = im["file_name"].split("/")[-1]
        (rf / split / "_annotations.coco.json").write_text(json.dumps(d))
    assert available_splits(rf) == ("train", "val")
    assert len(load_dataset(rf, split="val")) == 8
    # The JSON file itself.
    assert len(load_dataset(coco_dir / "annotations" / "instances_default.json")) == 8


def test_label_map_dataset(tmp_path):
    root = tmp_path / "voc"
    (root / "images" / "a").mkdir(parents=True)
    (root / "labels" / "a").mkdir(parents=True)
    (root / "classes.txt").write_text("background\nroad\nsky\n")
    lab = np.zeros((60, 80), np.uint8)
    lab[:20] = 2
    lab[40:] = 1
    lab[30, :] = 255
    cv2.imwrite(str(root / "images" / "a" / "x.jpg"), np.full((60, 80, 3), 100, np.uint8))
    cv2.imwrite(str(root / "labels" / "a" / "x.png"), lab)
    cv2.imwrite(str(root / "images" / "unlabelled.jpg"), np.full((60, 80, 3), 100, np.uint8))
    ds = load_dataset(root)
    assert ds.format == "labelmap" and ds.thing_classes == () and ds.stuff_classes == ("road", "sky")
    assert len(ds) == 1 and any("without a label map" in n for n in ds.notes)
    rec = ds.records[0]
    assert rec.supervision.tasks() == ("semantic",)
    sem = rec.semantic()
    assert (sem[:20] == 2).all() and (sem[40:] == 1).all() and (sem[30] == IGNORE).all() and (sem[25] == 0).all()
    # At the input the map is letterboxed with the image; the bars teach nothing.
    r = render(rec, Placement.letterbox(80, 60, 64), with_image=False)
    assert (r.semantic[:8] == IGNORE).all() and (r.semantic[10:20] == 2).all()


def _label_map_set(root, stems):
    maps = {}
    for i, stem in enumerate(stems):
        maps[stem] = np.zeros((40, 60), np.uint8)
        maps[stem][: 4 + i] = 1
    write_label_maps(root, ("background", "person"), maps)


def test_label_maps_split_by_lists_beside_classes_txt(tmp_path):
    # The layout of shared/data/human-seg and of many label-map sets: flat images/ and labels/ with train.txt and
    # val.txt naming the images; lines by stem, file name, path under images/, SegNet's "image label" pairs.
    root = tmp_path / "seg"
    _label_map_set(root, ["1", "2", "3", "10", "11", "12"])
    (root / "train.txt").write_text("1\n2.jpg\n# a comment\n\nimages/3.jpg\n")
    (root / "val.txt").write_text("/data/images/10.jpg /data/labels/10.png\n11\n")
    assert available_splits(root) == ("train", "val")
    train, val = load_dataset(root, split="train"), load_dataset(root, split="val")
    assert sorted(r.path.stem for r in train.records) == ["1", "2", "3"]
    assert sorted(r.path.stem for r in val.records) == ["10", "11"]
    assert all(r.semantic_path.stem == r.path.stem for r in train.records + val.records)
    assert any("val.txt names" in n for n in val.notes)
    # Without train.txt the train split is every image that no other list names.
    (root / "train.txt").unlink()
    assert available_splits(root) == ("train", "val")
    assert sorted(r.path.stem for r in load_dataset(root, split="train").records) == ["1", "12", "2", "3"]
    # An image in two lists is said, since its validation figures are not held out.
    (root / "train.txt").write_text("1\n10\n")
    assert any("also in another split list" in n for n in load_dataset(root, split="train").notes)
    # No test list: one line, not an empty split.
    with pytest.raises(InputError, match="no test split"):
        load_dataset(root, split="test")


def test_a_split_list_line_naming_no_image_is_one_line_with_file_and_line(tmp_path):
    root = tmp_path / "seg"
    _label_map_set(root, ["a", "b"])
    (root / "val.txt").write_text("a\nmissing_photo\n")
    with pytest.raises(InputError, match=r"val\.txt, line 2: 'missing_photo' names no image in images/"):
        load_dataset(root, split="val")
    assert len(load_dataset(root, split="val", skip_bad=True)) == 1


def test_a_void_line_in_classes_txt_teaches_nothing_like_255(tmp_path):
    # CamVid's 11-class maps mark unlabelled pixels 11, not 255: a 12th line "void" must not become a class.
    root = tmp_path / "camvid"
    lab = np.zeros((40, 60), np.uint8)
    lab[20:] = 1
    lab[:, :10] = 2
    write_label_maps(root, ("sky", "road", "void"), {"f": lab}, image_ext=".png")
    ds = load_dataset(root)
    assert ds.stuff_classes == ("sky", "road") and any("'void' (id 2) teaches nothing" in n for n in ds.notes)
    sem = ds.records[0].semantic()
    assert (sem[:, :10] == IGNORE).all() and (sem[:20, 10:] == 1).all() and (sem[20:, 10:] == 2).all()
    # Without the line, id 2 is outside the classes: one line that says how to mark it.
    (root / "classes.txt").write_text("sky\nroad\n")
    with pytest.raises(InputError, match="a line named void"):
        load_dataset(root)


def test_segnet_camvid_layout_reads_with_a_classes_txt(tmp_path):
    # SegNet's CamVid: train/ + trainannot/, val/ + valannot/, same file names, void as id 11.
    root = tmp_path / "CamVid"
    for split, n in (("train", 3), ("val", 2)):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for i in range(n):
            lab = np.full((36, 48), 3, np.uint8)
            lab[:10] = 0
            lab[:, :4] = 11
            cv2.imwrite(str(root / split / f"{split}_{i}.png"), np.full((36, 48, 3), 70, np.uint8))
            cv2.imwrite(str(root / f"{split}annot" / f"{split}_{i}.png"), lab)
    with pytest.raises(InputError, match=r"SegNet's layout \(train/, val/ .*need a classes.txt"):
        load_dataset(root)
    names = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
             "Bicyclist", "void"]
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    assert available_splits(root) == ("train", "val")
    train, val = load_dataset(root, split="train"), load_dataset(root, split="val")
    assert len(train) == 3 and len(val) == 2 and train.stuff_classes == tuple(names[:11])
    sem = val.records[0].semantic()
    assert (sem[:, :4] == IGNORE).all() and (sem[:10, 4:] == 1).all() and (sem[10:, 4:] == 4).all()
    with pytest.raises(InputError, match="no test split"):
        load_dataset(root, split="test")


def test_dataset_names_rare_and_absent_region_classes_of_label_maps(tmp_path):
    # Thin classes (a pole) are the first a semantic map loses: `dataset` gives each class's share of the labelled
    # pixels, leaving out 255 and void, and names the rare ones and those in no image.
    from ocrnet_edge.model.summary import format_summary, summarize

    root = tmp_path / "street"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("sky\nroad\npole\ncar\nvoid\n")
    for i in range(2):
        lab = np.zeros((50, 100), np.uint8)
        lab[25:] = 1
        lab[10:30, 50] = 2  # 20 of 5,000 pixels: 0.4%
        lab[:, :10] = 4 if i else 255
        cv2.imwrite(str(root / "images" / f"{i}.jpg"), np.full((50, 100, 3), 90, np.uint8))
        cv2.imwrite(str(root / "labels" / f"{i}.png"), lab)
    doc = summarize(root)
    px = doc["splits"]["all"]["region_pixels"]
    assert px["pole"] == {"share": round(40 / 9000, 5), "images": 2} and px["car"]["images"] == 0
    assert abs(sum(v["share"] for v in px.values()) - 1) < 1e-3
    text = format_summary(doc)
    assert "rare classes (under 1% of the pixels): pole;" in text and "classes in no image of this split: car" in text


def test_class_selection_orders_and_drops(yolo_dir, capsys):
    ds = load_dataset(yolo_dir, ("palette", USER_REGION, "Gabelstapler"), strict_classes=True, quiet=False)
    assert ds.thing_classes == ("palette", "Gabelstapler") and ds.stuff_classes == (USER_REGION,)
    full = load_dataset(yolo_dir)
    dropped = sum(int((r.categories == 1).sum()) for r in full.records)
    assert f"dropped {dropped} annotation(s)" in capsys.readouterr().out
    for a, b in zip(full.records, ds.records):
        want = [{2: 0, 0: 1}[c] for c in a.categories if c != 1]
        assert list(b.categories) == want
        sem = b.semantic()
        assert set(np.unique(sem)) <= {0, 1, 2, 3, IGNORE}
    with pytest.raises(InputError, match=r"class\(es\) \['helmet'\] not in this dataset"):
        load_dataset(yolo_dir, ("helmet",), strict_classes=True)


def test_the_one_rle_encoder_equals_pycocotools():
    from pycocotools import mask as mask_utils

    from ocrnet_edge.model.data import encode_rle
    from ocrnet_edge.runtime.io import rle

    assert encode_rle is rle.encode
    rng = np.random.default_rng(0)
    for shape in ((1, 1), (7, 5), (64, 48), (31, 100)):
        for density in (0.0, 0.05, 0.5, 1.0):
            m = rng.random(shape) < density
            want = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            got = rle.encode(m)
            assert got["counts"] == want["counts"].decode() and got["size"] == list(want["size"])

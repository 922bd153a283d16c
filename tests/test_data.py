"""COCO datasets on disk: round trip, derived semantic maps, bad input named by file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ocrnet_edge.model.data import load_dataset, write_scenes
from ocrnet_edge.runtime.errors import InputError, OutputError
from ocrnet_edge.runtime.io.scenes import SceneOptions, draw_scene

from .conftest import SMALL


def test_coco_round_trip(small_dataset):
    ds = load_dataset(small_dataset)
    assert len(ds) == 12
    opts = SceneOptions(width=SMALL, height=SMALL)
    for i, rec in enumerate(ds.records):
        scene = draw_scene((3, i), opts)
        assert list(rec.categories) == [inst.category for inst in scene.instances]
        np.testing.assert_array_equal(rec.boxes, np.array([inst.box for inst in scene.instances], np.float32).reshape(-1, 4))
        masks = rec.masks()
        for m, inst in zip(masks, scene.instances):
            np.testing.assert_array_equal(m, inst.mask)
        np.testing.assert_array_equal(rec.semantic(), scene.semantic)
        assert rec.image().shape == (SMALL, SMALL, 3)


def test_semantic_derived_when_folder_absent(small_dataset, tmp_path):
    copy = tmp_path / "nosem"
    shutil.copytree(small_dataset, copy)
    shutil.rmtree(copy / "semantic")
    with_sem, without = load_dataset(small_dataset), load_dataset(copy)
    for a, b in zip(with_sem.records, without.records):
        assert b.semantic_path is None
        np.testing.assert_array_equal(a.semantic(), b.semantic())


def test_polygon_segmentations_are_read(small_dataset, tmp_path):
    copy = tmp_path / "poly"
    shutil.copytree(small_dataset, copy)
    coco = json.loads((copy / "annotations.json").read_text())
    ann = coco["annotations"][0]
    x, y, w, h = ann["bbox"]
    ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    (copy / "annotations.json").write_text(json.dumps(coco))
    rec = next(r for r in load_dataset(copy).records if r.image_id == ann["image_id"])
    assert rec.masks()[0].sum() > 0


def test_folder_without_annotations(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(InputError, match=r"no dataset found; expected a COCO annotations JSON"):
        load_dataset(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(InputError, match="dataset folder not found"):
        load_dataset(tmp_path / "nope")


def test_classes_come_from_the_data(small_dataset, tmp_path):
    copy = tmp_path / "cats"
    shutil.copytree(small_dataset, copy)
    coco = json.loads((copy / "annotations.json").read_text())
    coco["categories"][0]["name"] = "hexagon"
    (copy / "annotations.json").write_text(json.dumps(coco))
    assert load_dataset(copy).thing_classes == ("hexagon", "triangle", "rectangle", "star")
    with pytest.raises(InputError, match=r"class\(es\) \['circle'\] not in this dataset"):
        load_dataset(copy, ("circle",), strict_classes=True)
    with pytest.raises(InputError, match=r"none of the classes \['circle'\] is in this dataset"):
        load_dataset(copy, ("circle",))


def test_missing_image(small_dataset, tmp_path):
    copy = tmp_path / "missing"
    shutil.copytree(small_dataset, copy)
    victim = sorted((copy / "images").iterdir())[0]
    victim.unlink()
    with pytest.raises(InputError, match=f"{victim.name}: image listed in annotations.json is missing"):
        load_dataset(copy)


def test_corrupt_image(small_dataset, tmp_path):
    copy = tmp_path / "corrupt"
    shutil.copytree(small_dataset, copy)
    victim = sorted((copy / "images").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:40])
    with pytest.raises(InputError, match=f"{victim.name}: image listed in annotations.json cannot be read"):
        load_dataset(copy)
    ds = load_dataset(copy, skip_bad=True)
    assert len(ds) == 11 and victim not in {r.path for r in ds.records}
    assert any("skipped 1 bad file" in n for n in ds.notes)


def test_malformed_json(tmp_path):
    (tmp_path / "annotations.json").write_text("{not json")
    with pytest.raises(InputError, match="not a COCO instances file"):
        load_dataset(tmp_path)


def test_writer_refuses_existing_folder_and_leaves_no_partial(tmp_path):
    out = write_scenes(tmp_path / "d", 2, seed=1, size=64, progress=False)
    with pytest.raises(OutputError, match="already exists"):
        write_scenes(out, 2, seed=1, size=64, progress=False)
    assert not (tmp_path / "d.partial").exists()


def test_truncated_jpegs_are_found_and_named_by_dataset(tmp_path):
    import cv2

    from ocrnet_edge.model.data import truncated_jpeg
    from ocrnet_edge.model.summary import format_summary, summarize

    path = write_scenes(tmp_path / "d", 3, seed=2, size=SMALL, progress=False)
    images = sorted((path / "images").glob("*.jpg"))
    whole = images[0].read_bytes()
    images[0].write_bytes(whole[: len(whole) // 2])  # a download cut in the middle
    images[1].write_bytes(images[1].read_bytes() + b"\0" * 3000)  # zero padding after the end marker: fine
    assert cv2.imread(str(images[0])) is not None, "OpenCV decodes it anyway, with grey rows"
    assert [truncated_jpeg(p) for p in images] == [True, False, False]
    png = tmp_path / "x.png"
    cv2.imwrite(str(png), np.zeros((8, 8, 3), np.uint8))
    assert not truncated_jpeg(png) and not truncated_jpeg(tmp_path / "missing.jpg")
    doc = summarize(path)
    assert doc["splits"]["all"]["truncated_jpegs"] == [str(images[0])]
    assert "truncated JPEGs (no end marker" in format_summary(doc) and images[0].name in format_summary(doc)


DECODE_TWICE = """
import sys
import cv2
from ocrnet_edge.model.data import read_rgb
path = sys.argv[1]
sys.stderr.write("[opencv]\\n"); sys.stderr.flush()
cv2.imread(path)
sys.stderr.write("[read_rgb]\\n"); sys.stderr.flush()
image = read_rgb(path)
sys.stderr.write("[after]\\n"); sys.stderr.flush()
print(image.shape)
"""


def test_truncated_jpeg_decodes_without_libjpeg_warning_each_time(tmp_path):
    """Training reads each image once a pass; libjpeg's "Premature end of JPEG file" for a cut-off file
    would fill the terminal (kangaroo's 00090.jpg: 21 lines in 300 steps). read_rgb keeps it quiet and the
    stream works again after it."""
    import subprocess
    import sys

    path = write_scenes(tmp_path / "d", 1, seed=2, size=SMALL, progress=False)
    image = next((path / "images").glob("*.jpg"))
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    r = subprocess.run([sys.executable, "-c", DECODE_TWICE, str(image)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    err = r.stderr
    opencv, ours = err[err.index("[opencv]"):err.index("[read_rgb]")], err[err.index("[read_rgb]"):err.index("[after]")]
    assert "Premature end of JPEG file" in opencv, "control: OpenCV alone prints libjpeg's warning"
    assert "JPEG" not in ours
    assert "[after]" in err and r.stdout.strip() == f"({SMALL}, {SMALL}, 3)"

"""Where the loss comes from: the error breakdown on hand-built predictions whose answer is known, and
``eval --preview`` writing the worst images."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from ocrnet_edge.model.breakdown import breakdown_table
from ocrnet_edge.model.data import Dataset, Record, Supervision, decode_segmentation
from ocrnet_edge.model.evaluate import evaluate_results

NAMES = ("a", "b")
W, H = 240, 200
SCORE = 0.3
"""The operating score the breakdown counts at (the runtime's default)."""

# Objects of the one test image (class, x0, y0, x1, y1).
OBJ_A = (0, 10, 10, 60, 60)  # found, and found again (a duplicate)
OBJ_B = (0, 100, 100, 150, 150)  # a detection off by 20 px (IoU 0.43): poorly localised, so missed
OBJ_C = (0, 10, 100, 60, 150)  # only a detection under the operating score: missed, but detected
OBJ_D = (1, 150, 10, 190, 50)  # detected as class a: a wrong class, so missed
OBJ_E = (1, 200, 160, 220, 180)  # 20x20 = 400 px: COCO-small, never detected
OBJECTS = (OBJ_A, OBJ_B, OBJ_C, OBJ_D, OBJ_E)
# Expected counts per class.
EXPECTED = {
    "a": {"objects": 3, "found": 1, "missed": 2, "never_detected": 1, "false_positives": 4, "duplicate": 1,
          "poorly_localised": 1, "wrong_class": 1, "background": 1},
    "b": {"objects": 2, "found": 0, "missed": 2, "never_detected": 2, "false_positives": 0, "duplicate": 0,
          "poorly_localised": 0, "wrong_class": 0, "background": 0},
}
EXPECTED_SIZES_B = {"small": 1, "medium": 1, "large": 0}


@dataclass
class FakeDet:
    label: str
    score: float
    box: tuple
    m: np.ndarray | None = None
    class_score: float | None = None

    @property
    def class_probability(self) -> float:
        return self.score if self.class_score is None else self.class_score

    @property
    def has_mask(self) -> bool:
        return self.m is not None

    def mask(self):
        return self.m


@dataclass
class FakeResult:
    detections: tuple

    def semantic_frame(self):
        return None


def _record(path: Path, objects, masks: bool = False, image_id: int = 1) -> Record:
    segs = tuple([[x0, y0, x1, y0, x1, y1, x0, y1]] if masks else None for _, x0, y0, x1, y1 in objects)
    return Record(image_id=image_id, path=path, width=W, height=H,
                  categories=np.array([o[0] for o in objects], np.int32),
                  boxes=np.array([o[1:] for o in objects], np.float32).reshape(-1, 4),
                  segmentations=segs, supervision=Supervision(True, masks, False))


def _dataset(tmp_path, records) -> Dataset:
    for r in records:
        cv2.imwrite(str(r.path), np.full((H, W, 3), 90, np.uint8))
    return Dataset(root=tmp_path, records=tuple(records), thing_classes=NAMES, format="voc")


def _det(cls, score, x0, y0, x1, y1, mask=None):
    return FakeDet(NAMES[cls], score, (float(x0), float(y0), float(x1), float(y1)), mask)


def test_known_errors_are_counted(tmp_path):
    rec = _record(tmp_path / "scene.jpg", OBJECTS)
    ds = _dataset(tmp_path, [rec])
    dets = (
        _det(0, 0.9, 10, 10, 60, 60),  # finds A
        _det(0, 0.8, 12, 10, 62, 60),  # A again: duplicate
        _det(0, 0.7, 120, 100, 170, 150),  # B off by 20 px: IoU 30*50 / (2*2500 - 1500) = 0.43
        _det(0, 0.6, 150, 10, 190, 50),  # D with the wrong class
        _det(0, 0.5, 80, 160, 95, 190),  # on nothing
        _det(0, 0.1, 10, 100, 60, 150),  # finds C, under the operating score
    )
    m = evaluate_results(ds, [(rec, FakeResult(dets))], heads={"detect"}, score_threshold=SCORE,
                         preview=tmp_path / "preview", preview_count=4)
    errors = m["errors"]
    assert errors["score_threshold"] == SCORE and errors["iou_threshold"] == 0.5
    for name, want in EXPECTED.items():
        got = errors["per_class"][name]
        assert {k: got[k] for k in want} == want, name
    assert errors["per_class"]["b"]["objects_by_size"] == EXPECTED_SIZES_B
    assert errors["per_class"]["b"]["missed_by_size"] == EXPECTED_SIZES_B
    assert errors["total"]["missed"] == 4 and errors["total"]["false_positives"] == 4
    assert errors["per_class"]["b"]["box_ap50"] == 0.0 and errors["per_class"]["b"]["box_ap_large"] is None
    assert errors["worst_images"] == [{"image": str(rec.path), "missed": 4, "false_positives": 4}]
    json.dumps(m)  # all of it goes into --json
    table = breakdown_table(errors)
    assert "dup  loc  cls  bkg" in table and table.splitlines()[2].split()[:3] == ["a", "3", "0/3/0"]
    # the preview: one image with errors, drawn as a JPEG
    assert [Path(f).name for f in m["preview"]] == ["01_scene.jpg"]
    img = cv2.imread(m["preview"][0])
    assert img is not None and img.shape[1] == W and img.shape[0] > H


def test_the_breakdown_counts_what_the_runtime_keeps(tmp_path):
    """The runtime's threshold cuts the class probability; a mask model's score is lower (times the mask's
    confidence). A detection of class probability 0.5 and score 0.2 is kept by the runtime, so it is a find."""
    rec = _record(tmp_path / "scene.jpg", OBJECTS)
    ds = _dataset(tmp_path, [rec])
    kept = FakeDet(NAMES[0], 0.2, (10.0, 10.0, 60.0, 60.0), class_score=0.5)  # finds A
    dropped = FakeDet(NAMES[0], 0.2, (10.0, 100.0, 60.0, 150.0), class_score=0.25)  # finds C, under the cut
    errors = evaluate_results(ds, [(rec, FakeResult((kept, dropped)))], heads={"detect"}, score_threshold=SCORE)["errors"]
    assert errors["per_class"]["a"]["found"] == 1 and errors["per_class"]["a"]["missed"] == 2
    assert errors["per_class"]["a"]["false_positives"] == 0


LOOSE_IOU = 0.6
"""Every detection overlaps its object at this IoU: found at 0.5, not at 0.75."""


def test_localisation_and_masks(tmp_path):
    """Boxes found at IoU 0.5 but not 0.75 give AP50 1 and AP75 0; masks covering half their object give
    a mean mask IoU of one half among the objects found."""
    objects = ((0, 20, 20, 120, 120), (1, 140, 40, 200, 100))
    recs, results = [], []
    for i in range(2):
        rec = _record(tmp_path / f"im{i}.jpg", objects, masks=True, image_id=i + 1)
        dets = []
        for (c, x0, y0, x1, y1), seg in zip(objects, rec.segmentations):
            m = decode_segmentation(seg, H, W)
            rows = np.nonzero(m.any(axis=1))[0]
            m[rows[len(rows) // 2]:] = False  # the lower half missing
            h = y1 - y0  # taller by h * (1 / IoU - 1): IoU exactly LOOSE_IOU
            dets.append(_det(c, 0.9, x0, y0, x1, y1 + h * (1 / LOOSE_IOU - 1), m))
        recs.append(rec)
        results.append((rec, FakeResult(tuple(dets))))
    ds = _dataset(tmp_path, recs)
    m = evaluate_results(ds, results, heads={"detect", "instance"})
    for name in NAMES:
        row = m["errors"]["per_class"][name]
        assert row["box_ap50"] == pytest.approx(1.0) and row["box_ap75"] == pytest.approx(0.0), name
        assert row["missed"] == 0 and row["false_positives"] == 0
        assert row["mask_iou_found"] == pytest.approx(0.5, abs=0.02)
    assert m["errors"]["total"]["mask_iou_found"] == pytest.approx(0.5, abs=0.02)
    assert m["preview"] == [], "no preview unless asked for"


def test_no_detection_at_all(tmp_path):
    rec = _record(tmp_path / "empty.jpg", OBJECTS)
    m = evaluate_results(_dataset(tmp_path, [rec]), [(rec, FakeResult(()))], heads={"detect"})
    total = m["errors"]["total"]
    assert total["missed"] == len(OBJECTS) and total["false_positives"] == 0 and total["box_ap50"] == 0.0


def test_eval_preview_from_the_cli(tiny_model, small_dataset, tmp_path, capsys):
    from ocrnet_edge.cli import main

    out, js = tmp_path / "worst", tmp_path / "m.json"
    assert main(["eval", str(tiny_model), "--data", str(small_dataset), "--limit", "3", "--quiet",
                 "--preview", str(out), "--preview-count", "2", "--json", str(js)]) == 0
    files = sorted(out.glob("*.jpg"))
    assert [f.name[:3] for f in files] == ["01_", "02_"], "an untrained model misses objects on every scene"
    doc = json.loads(js.read_text())
    assert doc["errors"]["total"]["objects"] > 0 and len(doc["preview"]) == 2
    assert "preview: the 2 images with the most errors" in capsys.readouterr().out

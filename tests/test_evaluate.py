"""The evaluator: AP 1.0 and mIoU 1.0 for a perfect prediction, lower for a perturbed one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from ocrnet_edge.model.data import load_dataset
from ocrnet_edge.model.evaluate import METRIC_KEYS, evaluate_results
from ocrnet_edge.runtime.contract import THING_CLASSES


@dataclass
class FakeDet:
    label: str
    score: float
    box: tuple
    m: np.ndarray

    has_mask = True

    def mask(self):
        return self.m


@dataclass
class FakeResult:
    detections: tuple
    sem: np.ndarray

    def semantic_frame(self):
        return self.sem


def _perfect(rec, shift=0):
    dets = []
    for k, (c, b, m) in enumerate(zip(rec.categories, rec.boxes, rec.masks())):
        box = tuple(float(v) + shift for v in b)
        dets.append(FakeDet(THING_CLASSES[c], 0.9 - 0.01 * k, box, np.roll(m, shift, axis=(0, 1))))
    return FakeResult(tuple(dets), np.roll(rec.semantic(), shift, axis=(0, 1)))


def test_perfect_prediction_scores_one(small_dataset):
    ds = load_dataset(small_dataset)
    m = evaluate_results(ds, ((r, _perfect(r)) for r in ds.records))
    assert set(METRIC_KEYS) <= set(m)
    for key in METRIC_KEYS:
        assert m[key] == pytest.approx(1.0), key


def test_perturbed_prediction_scores_lower(small_dataset):
    ds = load_dataset(small_dataset)
    m = evaluate_results(ds, ((r, _perfect(r, shift=3)) for r in ds.records))
    assert m["box_ap"] < 0.9 and m["mask_ap"] < 0.9 and m["miou"] < 0.95


def test_no_detections_scores_zero(small_dataset):
    ds = load_dataset(small_dataset)
    m = evaluate_results(ds, ((r, FakeResult((), np.zeros((r.height, r.width), np.uint8))) for r in ds.records))
    assert m["box_ap"] == 0.0 and m["mask_ap"] == 0.0 and m["precision_at_recall50"] == 0.0
    assert m["per_class_iou"]["background"] < 1.0


class _OneClassGT:
    def getCatIds(self):  # noqa: N802 (pycocotools' names)
        return [1]

    def getAnnIds(self, catIds):  # noqa: N802
        return [1]


def test_best_f1_finds_the_score_where_precision_and_recall_balance():
    """COCOeval's arrays by hand: precision 1 up to recall 0.6 (scores 0.9 to 0.5), then 0.5 up to recall 0.8
    (scores 0.4 to 0.2), nothing beyond: cutting at 0.5 gives F1 0.75, at 0.2 only 0.62."""
    from ocrnet_edge.model.evaluate import best_f1

    rec = np.linspace(0, 1, 101)
    prec = np.where(rec <= 0.6 + 1e-9, 1.0, np.where(rec <= 0.8 + 1e-9, 0.5, 0.0))
    scores = np.where(rec <= 0.6 + 1e-9, 0.9 - 0.4 * rec / 0.6, np.where(rec <= 0.8 + 1e-9, 0.4 - (rec - 0.6),
                                                                             0.0))
    shape = (10, 101, 1, 4, 3)
    ev = {"precision": np.broadcast_to(prec[None, :, None, None, None], shape),
          "scores": np.broadcast_to(scores[None, :, None, None, None], shape)}
    f = best_f1(ev, _OneClassGT())
    assert f["f1"] == pytest.approx(0.75, abs=1e-6)
    assert f["precision"] == 1.0 and f["recall"] == pytest.approx(0.6)
    assert 0.39 < f["score_threshold"] <= 0.5, "the lowest cut that still keeps precision 1"
    assert best_f1({}, _OneClassGT()) is None


def test_eval_reports_the_operating_point(small_dataset):
    ds = load_dataset(small_dataset)
    m = evaluate_results(ds, ((r, _perfect(r)) for r in ds.records))
    assert m["best_f1"]["f1"] == pytest.approx(1.0) and m["best_f1"]["recall"] == pytest.approx(1.0)

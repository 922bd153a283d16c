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

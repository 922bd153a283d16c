"""The evaluator: AP 1.0 and mIoU 1.0 for a perfect prediction, lower for a perturbed one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from ocrnet_edge.model.data import load_dataset
from ocrnet_edge.model.evaluate import METRIC_KEYS, Resampler, Scored, evaluate_results
from ocrnet_edge.runtime.contract import THING_CLASSES


@dataclass
class FakeDet:
    label: str
    score: float
    box: tuple
    m: np.ndarray

    has_mask = True

    @property
    def class_probability(self) -> float:
        return self.score

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


def _scored(ds, shift_ids=()):
    """The perfect prediction, shifted by 3 px on the images ``shift_ids``, scored with its material kept."""
    kept = Scored()
    m = evaluate_results(ds, ((r, _perfect(r, shift=3 if r.image_id in shift_ids else 0)) for r in ds.records),
                         keep=kept)
    return m, kept


def test_resampling_every_image_once_gives_the_evaluators_figures(small_dataset):
    ds = load_dataset(small_dataset)
    ids = [r.image_id for r in ds.records]
    m, kept = _scored(ds, shift_ids=ids[::2])
    assert kept.box_dets and kept.mask_dets and set(kept.confusion) == set(ids)
    keys = ("box_ap", "box_ap50", "mask_ap", "mask_ap50", "miou")
    (again,) = Resampler(ds, [kept]).metrics(ids, keys)
    for k in keys:
        assert again[k] == pytest.approx(m[k], abs=1e-12), k


def test_an_image_drawn_twice_counts_twice(small_dataset):
    ds = load_dataset(small_dataset)
    ids = [r.image_id for r in ds.records]
    _, kept = _scored(ds, shift_ids=ids[:1])
    r = Resampler(ds, [kept])
    (one_bad,) = r.metrics([ids[0], ids[1]])
    (bad_twice,) = r.metrics([ids[0], ids[0], ids[1]])
    (alone,) = r.metrics([ids[0]])
    # the shifted image weighs more when drawn twice; alone, drawn any number of times, it scores the same
    assert bad_twice["box_ap"] < one_bad["box_ap"] and bad_twice["miou"] < one_bad["miou"]
    (alone_twice,) = r.metrics([ids[0], ids[0]])
    for k in ("box_ap", "mask_ap", "miou"):
        assert alone_twice[k] == pytest.approx(alone[k], abs=1e-12), k
    assert set(r.metrics(ids, keys=("miou",))[0]) == {"miou"}


def test_a_failed_gate_drop_gets_an_interval_over_resampled_gate_images(small_dataset):
    """convert's gate. One image of twelve worse in the int8 file: a failed drop that the resampled gate images cannot
    tell from one within the limit (the draws without that image show no drop). Every image worse: a drop whose
    interval stays above the limit."""
    from ocrnet_edge.convert.fidelity import chance_hint, gate, suggestions, with_intervals

    ds = load_dataset(small_dataset)
    ids = [r.image_id for r in ds.records]
    f_m, f_kept = _scored(ds)
    for shifted, chance in ((ids[:1], True), (ids, False)):
        i_m, i_kept = _scored(ds, shift_ids=shifted)
        r = with_intervals(gate(f_m, i_m, 1.0), ds, f_kept, i_kept, draws=60)
        assert r.failed and set(r.intervals) == set(r.failed)
        for k, (lo, hi) in r.intervals.items():
            assert lo <= hi and (lo <= 1e-9) == chance, (k, lo, hi)
            assert lo <= r.drops[k] <= hi or not chance  # the observed drop lies inside where one image decides
        assert bool(r.within_chance()) == chance and "over resampled gate images" in r.failures()
        advice = suggestions(r, len(ds), 24)
        assert ("--val DIR" in advice[0]) == chance and any("--calib DIR; 24 used here" in a for a in advice)
        assert ("12 gate images cannot tell" in chance_hint([r], len(ds))) == chance
    same = with_intervals(gate(f_m, f_m, 1.0), ds, f_kept, f_kept)
    assert same.ok and same.intervals == {}


class _Ev:
    """What best_f1 reads of a COCOeval: the detections and COCOeval's matches at IoU 0.5 ("dt_gt" keys)."""

    def __init__(self, dets, matches, class_scores=None):
        self.cocoDt = type("Dt", (), {"anns": {i: {"id": i, "category_id": 1, "score": s}
                                               for i, s in enumerate(dets, 1)}})()
        for i, c in enumerate(class_scores or (), 1):
            self.cocoDt.anns[i]["class_score"] = c
        self.eval = {"matched": {f"{d}_{g}": 1 for d, g in matches.items()}}


class _GT:
    """Five objects of class 1 (ids 1-5) and a crowd region (id 9)."""

    anns = {**{g: {"id": g, "iscrowd": 0} for g in range(1, 6)}, 9: {"id": 9, "iscrowd": 1}}

    def getCatIds(self):  # noqa: N802 (pycocotools' names)
        return [1]

    def getAnnIds(self, catIds, iscrowd=None):  # noqa: N802
        return [g for g, a in self.anns.items() if iscrowd is None or a["iscrowd"] == iscrowd]


def test_best_f1_counts_every_false_positive_above_the_cut():
    """Detections scoring 0.95 (on a crowd region: neither way), 0.9, 0.8, 0.7 (found), 0.6 (false), 0.5 (found),
    0.2, 0.1 (false), 5 objects: a cut in (0.2, 0.5] gives P = R = F1 = 0.8; 0.7 gives 0.75; all of them 0.67."""
    from ocrnet_edge.model.evaluate import best_f1

    ev = _Ev([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.2, 0.1], {1: 9, 2: 1, 3: 2, 4: 3, 6: 4})
    f = best_f1(ev, _GT())
    assert f["f1"] == pytest.approx(0.8) and f["precision"] == pytest.approx(0.8) and f["recall"] == pytest.approx(0.8)
    assert 0.2 < f["score_threshold"] <= 0.5, "the lowest cut with the best F1"
    assert best_f1(None, _GT()) is None


def test_best_f1_is_a_cut_on_the_class_probability():
    """With masks, a detection's score is its class probability times its mask's confidence, but run --score cuts
    the class probability: the advice is in those units. Class probabilities 0.9 (found), 0.8 (found), 0.6
    (false), 0.55 (found), 0.5 (false), 3 objects, scores halved: the best cut keeps the first four (P 0.75,
    R 1.0), so it lies in (0.5, 0.55] of class probability (it would be in (0.25, 0.275] of score)."""
    from ocrnet_edge.model.evaluate import best_f1

    cls = [0.9, 0.8, 0.6, 0.55, 0.5]
    gt = type("GT3", (_GT,), {"anns": {g: {"id": g, "iscrowd": 0} for g in range(1, 4)}})()
    f = best_f1(_Ev([c / 2 for c in cls], {1: 1, 2: 2, 4: 3}, class_scores=cls), gt)
    assert f["recall"] == pytest.approx(1.0) and f["precision"] == pytest.approx(0.75)
    assert 0.5 < f["score_threshold"] <= 0.55


def test_eval_reports_the_operating_point(small_dataset):
    ds = load_dataset(small_dataset)
    m = evaluate_results(ds, ((r, _perfect(r)) for r in ds.records))
    assert m["best_f1"]["f1"] == pytest.approx(1.0) and m["best_f1"]["recall"] == pytest.approx(1.0)

"""What training sees: letterboxed and augmented inputs with consistent labels, partial supervision in the
targets and losses, --init across class sets, metrics only where the labels support them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ocrnet_edge.model.augment import AugmentOptions, placement
from ocrnet_edge.model.data import IGNORE, Placement, load_dataset, render
from ocrnet_edge.model.targets import image_targets
from ocrnet_edge.model.train import prepare_record
from ocrnet_edge.runtime.preprocess import preprocess_into

from .conftest import SMALL, TINY, USER_CLASSES, write_coco_export, write_yolo_seg

SEEDS = 12
BOX_SLACK = 1.5
"""Pixels a box may exceed its mask's extent after resampling (nearest-neighbour edges)."""


@pytest.fixture(scope="module")
def yolo(tmp_path_factory):
    return load_dataset(write_yolo_seg(tmp_path_factory.mktemp("y") / "ds", train=6, val=1))


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return load_dataset(write_coco_export(tmp_path_factory.mktemp("c") / "ds", 6))


REDUCED_DECODE_MEAN_ERROR = 1.5
"""Mean grey-level difference allowed when a large photo is decoded at a reduced size first."""


def test_without_augmentation_training_sees_the_runtime_letterbox(yolo):
    rec = yolo.records[1]  # 360x480: letterboxed with bars left and right
    want = np.empty((2 * SMALL, 2 * SMALL, 3), np.uint8)
    preprocess_into(rec.image(), want)
    np.testing.assert_array_equal(prepare_record(rec, 2 * SMALL).image, want)  # decoded whole: identical
    want = np.empty((SMALL, SMALL, 3), np.uint8)
    preprocess_into(rec.image(), want)
    got = prepare_record(rec, SMALL).image  # decoded at half size first (JPEG's own scaling)
    assert np.abs(got.astype(int) - want).mean() < REDUCED_DECODE_MEAN_ERROR
    np.testing.assert_array_equal(got[:, :8], want[:, :8])  # the bars


def test_augmented_labels_stay_with_the_image(yolo):
    opts = AugmentOptions()
    for rec in yolo.records:
        for s in range(SEEDS):
            r = prepare_record(rec, SMALL, np.random.default_rng(s), opts)
            assert r.image.shape == (SMALL, SMALL, 3)
            for b, m, c in zip(r.boxes, r.masks, r.categories):
                ys, xs = np.nonzero(m)
                if len(xs):  # the visible mask lies inside its (clipped) box
                    assert xs.min() >= b[0] - BOX_SLACK and xs.max() + 1 <= b[2] + BOX_SLACK
                    assert ys.min() >= b[1] - BOX_SLACK and ys.max() + 1 <= b[3] + BOX_SLACK
                    assert (r.semantic[m] == c + 1).mean() > 0.9, "the semantic map carries the same object"
            assert set(np.unique(r.semantic)) <= {0, 1, 2, 3, 4, IGNORE}


def test_augmentation_is_deterministic_by_seed(yolo):
    rec = yolo.records[0]
    a = prepare_record(rec, SMALL, np.random.default_rng(3), AugmentOptions())
    b = prepare_record(rec, SMALL, np.random.default_rng(3), AugmentOptions())
    c = prepare_record(rec, SMALL, np.random.default_rng(4), AugmentOptions())
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.semantic, b.semantic)
    assert not np.array_equal(a.image, c.image)


def test_flip_mirrors_image_and_labels(yolo):
    rec = yolo.records[2]
    base = Placement.letterbox(rec.width, rec.height, SMALL)
    plain = render(rec, base)
    flipped = render(rec, dataclasses.replace(base, flip=True))
    np.testing.assert_array_equal(flipped.image, plain.image[:, ::-1])
    np.testing.assert_array_equal(flipped.semantic, plain.semantic[:, ::-1])
    np.testing.assert_allclose(flipped.boxes[:, [0, 2]], SMALL - plain.boxes[:, [2, 0]])
    assert not placement(rec, SMALL, np.random.default_rng(0), AugmentOptions(enabled=False, flip=False)).flip


def test_partial_supervision_reaches_the_targets(coco, tmp_path):
    rng = np.random.default_rng(0)
    boxes_only = next(r for r in coco.records if not r.supervision.masks and len(r.categories))
    r = prepare_record(boxes_only, SMALL)
    t = image_targets(r.boxes, r.categories, r.masks, r.semantic, SMALL, (8, 16, 32), 8, rng, r.mask_valid, r.ignore,
                      boxes_only.supervision.boxes)
    assert (t["cls_label"] >= 0).any() and (t["cls_weight"] == 1).all()
    assert t["mask_weight"].sum() == 0, "boxes only: no mask loss"
    assert (t["semantic"] == IGNORE).all(), "boxes only: no semantic loss"

    crowd = coco.records[0]  # holds the crowd region at (2, 2)-(40, 30)
    r = prepare_record(crowd, SMALL)
    assert r.ignore.any()
    t = image_targets(r.boxes, r.categories, r.masks, r.semantic, SMALL, (8, 16, 32), 8, rng, r.mask_valid, r.ignore)
    assert (t["cls_weight"] == 0).any() and (t["cls_weight"][t["cls_label"] >= 0] == 1).all()

    # A label-map image teaches the semantic map only.
    t = image_targets(np.zeros((0, 4), np.float32), np.zeros(0, np.int32), np.zeros((0, SMALL, SMALL), bool),
                      np.ones((SMALL, SMALL), np.uint8), SMALL, (8, 16, 32), 8, rng, has_boxes=False)
    assert (t["cls_weight"] == 0).all() and t["mask_weight"].sum() == 0


def test_semantic_loss_ignores_unlabelled_pixels():
    from ocrnet_edge.model.losses import semantic_loss

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 4, 4, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (1, 8, 8)).astype(np.int32)
    masked = labels.copy()
    masked[0, :4] = IGNORE
    full = float(semantic_loss(logits, labels))
    part = float(semantic_loss(logits, masked))
    import keras

    up = np.asarray(keras.ops.image.resize(logits, (8, 8), interpolation="bilinear"))
    p = np.exp(up - up.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ce = -np.log(np.take_along_axis(p, labels[..., None], -1)[..., 0])
    assert full == pytest.approx(ce.mean(), rel=1e-4)
    assert part == pytest.approx(ce[0, 4:].mean(), rel=1e-4)
    assert float(semantic_loss(logits, np.full_like(labels, IGNORE))) == 0.0


def test_init_across_class_sets(tiny_model):
    from ocrnet_edge.model.config import TrainConfig, to_dict
    from ocrnet_edge.model.io import load_model
    from ocrnet_edge.model.train import OCRNetTrainer, _load_init

    # The source knows ellipse..star; the new run: the user's classes plus a region, and "triangle" kept.
    other = dataclasses.replace(TINY, class_names=("triangle", *USER_CLASSES), stuff_names=("floor",))
    trainer = OCRNetTrainer(to_dict(other))
    fresh = {layer.name: [w.copy() for w in layer.get_weights()] for layer in trainer.net.layers}
    line = _load_init(trainer, TrainConfig(model=other, init=str(tiny_model)))
    src = {layer.name: layer.get_weights() for layer in load_model(tiny_model).layers}
    class_layers = {"det_cls", "seg_logits", "seg_coarse"}
    total = sum(len(layer.get_weights()) for layer in trainer.net.layers)
    n_class = sum(len(fresh[n]) for n in class_layers)
    assert line.startswith(f"--init {tiny_model}: loaded {total - n_class} of {total} tensors")
    assert "det_cls (1 of 4 classes)" in line and "seg_logits (2 of 6 classes)" in line
    for layer in trainer.net.layers:
        got = layer.get_weights()
        if layer.name not in class_layers:
            for g, w in zip(got, src[layer.name], strict=True):
                np.testing.assert_array_equal(g, w)
            continue
        # matched channels come from the source (triangle: source 1 -> new 0, +1 in the semantic map), others fresh
        pairs = [(0, 1)] if layer.name == "det_cls" else [(0, 0), (1, 2)]
        for g, w, f in zip(got, src[layer.name], fresh[layer.name]):
            for i, j in pairs:
                np.testing.assert_array_equal(g[..., i], w[..., j])
            rest = [k for k in range(g.shape[-1]) if k not in {i for i, _ in pairs}]
            np.testing.assert_array_equal(g[..., rest], f[..., rest])


def test_metrics_only_where_labels_support_them(tiny_model, small_dataset):
    from ocrnet_edge.model.data import Supervision
    from ocrnet_edge.model.evaluate import evaluate_keras
    from ocrnet_edge.model.io import load_model

    full = load_dataset(small_dataset)
    boxes_only = full.subset([dataclasses.replace(r, supervision=Supervision(True, False, False), semantic_path=None)
                              for r in full.records])
    m = evaluate_keras(load_model(tiny_model), boxes_only, progress=False)
    assert m["mask_ap"] is None and "no image of this dataset has instance masks" in m["skipped"]["mask_ap"]
    assert m["miou"] is None and "semantic map" in m["skipped"]["miou"]
    assert m["box_ap"] is not None and m["box_ap"] >= 0 and m["images_scored"]["boxes"] == len(full)
    assert set(m["per_class_ap"]) == set(TINY.class_names)

"""The training recipe for small real datasets: model sizes, the step schedule (warm-up, cosine),
the moving average of the weights, early stopping, mosaic, copy-paste and multi-scale batches."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from ocrnet_edge.model.augment import AugmentOptions, copy_paste, mosaic
from ocrnet_edge.model.config import SIZE_PRESETS, ModelConfig, TrainConfig, plan_schedule
from ocrnet_edge.model.data import IGNORE, Rendered, load_dataset
from ocrnet_edge.model.train import prepare_record
from ocrnet_edge.runtime.errors import InputError

from .conftest import SMALL, TINY

SEEDS = 10
BOX_SLACK = 1.5
"""Pixels a mask may pass its box's edge after resampling (nearest-neighbour edges)."""
SMALL_SET, LARGE_SET = 60, 6000


@pytest.fixture(scope="module")
def yolo(yolo_seg_dir):
    return load_dataset(yolo_seg_dir)


# ---------------------------------------------------------------- sizes


def test_size_presets_widen_detection_and_keep_the_quarter_split():
    det = []
    for name in ("n", "s", "m"):
        cfg = ModelConfig().with_preset(name)
        assert cfg.neck_channels == SIZE_PRESETS[name]["neck_channels"]
        assert cfg.det_channels * 4 == cfg.neck_channels and cfg.det_fraction == 0.25
        det.append(cfg.det_channels)
    assert det == sorted(det) and det[0] == ModelConfig().det_channels, "n is the reference model's neck"
    with pytest.raises(InputError, match="size preset must be one of"):
        ModelConfig().with_preset("xl")


# ---------------------------------------------------------------- schedule


def test_step_schedule_gives_a_small_set_more_epochs():
    small, large = plan_schedule(SMALL_SET, TrainConfig()), plan_schedule(LARGE_SET, TrainConfig())
    assert small.passes > 10 * large.passes
    assert large.total_steps > small.total_steps
    assert small.rounds <= 20 and small.round_steps >= small.steps_per_pass
    # Counted in epochs, a run is what it always was: a pass between validations.
    by_epochs = plan_schedule(SMALL_SET, TrainConfig(epochs=30))
    assert (by_epochs.rounds, by_epochs.round_steps, by_epochs.total_steps) == (30, 3, 90)
    explicit = plan_schedule(SMALL_SET, TrainConfig(steps=200, val_every=40))
    assert (explicit.total_steps, explicit.rounds) == (200, 5)
    with pytest.raises(InputError, match="choose one"):
        TrainConfig(epochs=3, steps=100)


def test_warmup_then_cosine_values():
    from ocrnet_edge.model.train import lr_schedule

    peak, total, warm = 1e-3, 100, 10
    lr = lr_schedule(peak, total, warm)
    at = [float(lr(s)) for s in range(total + 1)]
    assert at[0] == pytest.approx(0.01 * peak)
    assert at[warm] == pytest.approx(peak)
    assert at[warm + (total - warm) // 2] == pytest.approx(peak * (0.01 + 0.99 * 0.5), rel=1e-3)
    assert at[total] == pytest.approx(0.01 * peak)
    assert all(a < b for a, b in zip(at[:warm], at[1 : warm + 1])), "linear warm-up rises"
    assert all(a > b for a, b in zip(at[warm:total], at[warm + 1 :])), "cosine decay falls"


# ---------------------------------------------------------------- mosaic and copy-paste


def _mask_inside_box(m: np.ndarray, b: np.ndarray) -> bool:
    ys, xs = np.nonzero(m)
    return bool(len(xs)) and (xs.min() >= b[0] - BOX_SLACK and xs.max() + 1 <= b[2] + BOX_SLACK
                              and ys.min() >= b[1] - BOX_SLACK and ys.max() + 1 <= b[3] + BOX_SLACK)


def test_mosaic_keeps_every_box_inside_and_every_mask_with_its_box(yolo):
    seen = 0
    for s in range(SEEDS):
        rng = np.random.default_rng(s)
        recs = [yolo.records[int(i)] for i in rng.choice(len(yolo.records), 4, replace=False)]
        r = mosaic(recs, SMALL, rng, AugmentOptions())
        assert r.image.shape == (SMALL, SMALL, 3) and r.semantic.shape == (SMALL, SMALL)
        assert len(r.boxes) == len(r.masks) == len(r.categories) == len(r.mask_valid)
        assert (r.boxes >= 0).all() and (r.boxes <= SMALL).all(), "every box inside the input"
        assert ((r.boxes[:, 2:] - r.boxes[:, :2]) >= 2).all()
        for b, m, c in zip(r.boxes, r.masks, r.categories):
            assert _mask_inside_box(m, b), "every mask inside its box, none empty"
            assert (r.semantic[m] == c + 1).mean() > 0.9, "the semantic map carries the same object"
        seen += len(r.boxes)
    assert seen > SEEDS, "mosaics hold objects of several images"


def _square(size: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[y0:y1, x0:x1] = True
    return m


def _rendered(masks: list[np.ndarray], cats: list[int], colour: int) -> Rendered:
    size = masks[0].shape[0]
    image = np.full((size, size, 3), colour, np.uint8)
    sem = np.zeros((size, size), np.uint8)
    boxes = []
    for m, c in zip(masks, cats):
        image[m] = colour + 10 * (c + 1)
        sem[m] = c + 1
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return Rendered(image, np.array(boxes, np.float32), np.array(cats, np.int32), np.stack(masks),
                    np.ones(len(masks), bool), sem, np.zeros((size, size), bool))


def test_copy_paste_keeps_the_label_of_each_pixel():
    s = 64
    # Two class-0 objects; the pasted class-1 object hides nearly all of the first and the left half of the second.
    dst = _rendered([_square(s, 4, 4, 20, 20), _square(s, 30, 30, 50, 50)], [0, 0], colour=100)
    src = _rendered([_square(s, 2, 2, 40, 60)], [1], colour=20)
    out = copy_paste(dst, src, np.random.default_rng(0))
    pasted = src.masks[0]
    np.testing.assert_array_equal(out.image[pasted], src.image[pasted])
    np.testing.assert_array_equal(out.image[~pasted], dst.image[~pasted])
    assert (out.semantic[pasted] == 2).all() and (out.semantic[~pasted] == dst.semantic[~pasted]).all()
    # The hidden object is dropped, the half-hidden one shrinks to what stays visible, the pasted one is added.
    assert out.categories.tolist() == [0, 1]
    np.testing.assert_array_equal(out.boxes, [[40, 30, 50, 50], [2, 2, 40, 60]])
    for b, m, c in zip(out.boxes, out.masks, out.categories):
        assert (out.semantic[m] == c + 1).all(), "each pixel keeps the label of the object it shows"
        assert _mask_inside_box(m, b)
    assert not (out.masks[0] & out.masks[1]).any()


def test_copy_paste_on_real_renders(yolo):
    kept_pixels = 0
    for s in range(SEEDS):
        rng = np.random.default_rng(s)
        dst = prepare_record(yolo.records[s % len(yolo.records)], SMALL, rng, AugmentOptions())
        src = prepare_record(yolo.records[(s + 3) % len(yolo.records)], SMALL, rng, AugmentOptions())
        out = copy_paste(dst, src, rng)
        n_new = len(out.categories) - len(dst.categories)
        assert n_new >= -len(dst.categories)
        for b, m, c in zip(out.boxes, out.masks, out.categories):
            assert _mask_inside_box(m, b)
            assert (out.semantic[m] == c + 1).mean() > 0.9
            kept_pixels += int(m.sum())
        changed = np.any(out.image != dst.image, axis=2)
        assert (out.semantic[changed] != IGNORE).all(), "pasted pixels are labelled"
        pasted = np.any(out.masks[len(out.categories) - max(n_new, 0):], axis=0) if n_new > 0 else None
        if pasted is not None:  # what stays of the image's own objects lies outside the pasted ones
            assert not (np.any(out.masks[: len(out.categories) - n_new], axis=0) & pasted).any()
    assert kept_pixels > 0


def test_batches_with_the_whole_recipe_are_deterministic(yolo):
    import dataclasses

    from ocrnet_edge.model.train import Batches

    cfg = TrainConfig(batch_size=4, seed=5, mosaic=1.0, copy_paste=1.0, multi_scale=0.5,
                      model=dataclasses.replace(TINY, class_names=yolo.thing_classes,
                                                stuff_names=yolo.stuff_classes))
    a = Batches(yolo, cfg, AugmentOptions(), round_steps=3)
    b = Batches(yolo, cfg, AugmentOptions(), round_steps=3)
    xa, ya = a[2]  # the third step of the stream: the second pass of 8 images at batch 4
    xb, yb = b[2]
    assert xa.shape == (4, SMALL, SMALL, 3)
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya["cls_label"], yb["cls_label"])
    assert (ya["cls_label"] >= 0).any()


# ---------------------------------------------------------------- EMA and early stopping
# Driven through the optimizer and the per-round callback directly: tracing a training step of even the
# tiny model takes minutes on a loaded 2-core machine, and train() only wires these two together.

EMA_DECAY = 0.9
STEPS = 5
PATIENCE = 2
CONSTANT_METRICS = {"box_ap": 0.25, "mask_ap": 0.25, "miou": 0.5}


def _trainer(ema_decay: float):
    from ocrnet_edge.model.config import to_dict
    from ocrnet_edge.model.train import OCRNetTrainer, ScaledAdamW

    trainer = OCRNetTrainer(to_dict(TINY))
    trainer.compile(optimizer=ScaledAdamW(learning_rate=1e-2, ema_decay=ema_decay))
    trainer.build((None, SMALL, SMALL, 3))
    trainer.optimizer.build(trainer.trainable_variables)
    return trainer


def test_ema_follows_the_weights_with_a_ramped_decay():
    import keras

    from ocrnet_edge.model.train import ScaledAdamW

    w = keras.Variable(np.zeros(3, np.float32))
    opt = ScaledAdamW(learning_rate=0.1, ema_decay=EMA_DECAY)
    opt.build([w])
    want = np.zeros(3)
    for t in range(STEPS):
        opt.apply([np.ones(3, np.float32)], [w])
        m = min(EMA_DECAY, (1 + t) / (10 + t))
        want = m * want + (1 - m) * np.asarray(w.value)
    (var, avg), = opt.ema_pairs()
    assert var is w
    np.testing.assert_allclose(np.asarray(avg.value), want, rtol=1e-5)
    assert np.abs(np.asarray(avg.value) - np.asarray(w.value)).min() > 0.02, "the average lags the weights"
    assert ScaledAdamW(learning_rate=0.1).ema_pairs() == [], "no average unless asked for"


def test_ema_weights_are_what_is_validated_and_saved(tmp_path):
    from ocrnet_edge.model.io import load_model
    from ocrnet_edge.model.train import _History

    trainer = _trainer(EMA_DECAY)
    pairs = trainer.optimizer.ema_pairs()
    assert len(pairs) == len(trainer.trainable_variables)
    raw = [np.asarray(v.value).copy() for v, _ in pairs]
    for v, avg in pairs:  # an average that differs from the raw weights
        avg.assign(np.asarray(v.value) + 0.5)
    cb = _History(tmp_path, None, TrainConfig(model=TINY, ema_decay=EMA_DECAY), trainer, {})
    cb.set_model(trainer)
    cb.on_epoch_end(0, {})
    saved = load_model(tmp_path / "model.keras")
    by_path = {v.path: np.asarray(avg.value) for v, avg in pairs}
    for s, v in zip(saved.trainable_weights, trainer.net.trainable_weights, strict=True):
        np.testing.assert_allclose(np.asarray(s), by_path[v.path], atol=1e-6)
    for (v, _), r in zip(pairs, raw):  # training goes on from the raw weights
        np.testing.assert_array_equal(np.asarray(v.value), r)


def test_patience_stops_the_run_and_says_so(tmp_path, monkeypatch, capsys):
    import ocrnet_edge.model.evaluate as evaluate
    from ocrnet_edge.model.train import _History

    monkeypatch.setattr(evaluate, "evaluate_keras", lambda *a, **k: dict(CONSTANT_METRICS))
    monkeypatch.setattr(evaluate, "per_class_table", lambda *a, **k: "")
    monkeypatch.setattr("ocrnet_edge.model.train.save_model", lambda *a, **k: None)
    trainer = _trainer(EMA_DECAY)
    cb = _History(tmp_path, ["one validation image"], TrainConfig(model=TINY, patience=PATIENCE), trainer, {})
    cb.set_model(trainer)
    rounds = 0
    trainer.stop_training = False  # what fit() sets before the first round
    while not trainer.stop_training and rounds < 10:
        cb.on_epoch_end(rounds, {})
        rounds += 1
    assert rounds == 1 + PATIENCE, "the first validation sets the best, then PATIENCE without gain"
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert json.loads((tmp_path / "state.json").read_text())["stopped_early"] is True
    printed = capsys.readouterr().out
    assert "stopping early at step 3" in printed and "EMA weights" in printed

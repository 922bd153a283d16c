"""The training recipe for small real datasets: model sizes, the step schedule (warm-up, cosine),
the moving average of the weights, early stopping, mosaic, copy-paste and multi-scale batches, and the
weights of rare semantic classes."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from ocrnet_edge.model.augment import AugmentOptions, copy_paste, mosaic
from ocrnet_edge.model.config import SIZE_PRESETS, ModelConfig, TrainConfig, plan_schedule
from ocrnet_edge.model.data import IGNORE, Rendered, load_dataset
from ocrnet_edge.model.train import prepare_record
from ocrnet_edge.runtime.errors import InputError

from .conftest import SMALL, TINY, write_label_maps

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
    # A run that learns boxes alone (its steps cost about half) gets twice the steps; a large set still 20 passes.
    boxes = ModelConfig(tasks=("detect",))
    assert plan_schedule(SMALL_SET, TrainConfig(model=boxes)).total_steps == 2 * small.total_steps == 2000
    assert plan_schedule(LARGE_SET, TrainConfig(model=boxes)).total_steps == large.total_steps
    # Counted in epochs, a run is what it always was: a pass between validations.
    by_epochs = plan_schedule(SMALL_SET, TrainConfig(epochs=30))
    assert (by_epochs.rounds, by_epochs.round_steps, by_epochs.total_steps) == (30, 3, 90)
    explicit = plan_schedule(SMALL_SET, TrainConfig(steps=200, val_every=40))
    assert (explicit.total_steps, explicit.rounds) == (200, 5)
    with pytest.raises(InputError, match="choose one"):
        TrainConfig(epochs=3, steps=100)


def test_a_run_with_masks_plans_twice_the_steps_within_a_time_budget_and_never_under_the_old_length():
    from ocrnet_edge.model.config import AUTO_STEPS_MASKS, AUTO_TIME_HOURS, auto_length

    cfg, line = auto_length(TrainConfig(), SMALL_SET)
    assert (cfg.steps, cfg.time_hours, cfg.min_steps) == (AUTO_STEPS_MASKS, AUTO_TIME_HOURS, 1000) == (2000, 0.8, 1000)
    assert plan_schedule(SMALL_SET, cfg).total_steps == 2000
    assert line.startswith("length: 2000 steps within 48 min and never under 1000") and "--time" in line
    # The user's length, boxes alone, label maps alone and a large set (20 passes) keep what they had.
    for given in (TrainConfig(steps=300), TrainConfig(epochs=5), TrainConfig(time_hours=0.5),
                  TrainConfig(model=ModelConfig(tasks=("detect",))), TrainConfig(model=ModelConfig(tasks=("semantic",)))):
        assert auto_length(given, SMALL_SET) == (given, "")
    assert auto_length(TrainConfig(), LARGE_SET) == (TrainConfig(), "")
    # A resumed run keeps the budget it began with; its length comes back from its state (resumed_rounds).
    began, _ = auto_length(TrainConfig(), SMALL_SET)
    resumed, line = auto_length(TrainConfig(), SMALL_SET, resumed=began)
    assert (resumed.steps, resumed.time_hours, resumed.min_steps, line) == (0, 0.8, 1000, "")
    assert auto_length(TrainConfig(), SMALL_SET, resumed=TrainConfig()) == (TrainConfig(), ""), "a run begun before"
    with pytest.raises(InputError, match="min_steps"):
        TrainConfig(min_steps=-1)


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


def test_batches_from_loader_threads_are_the_batches_of_the_step(yolo):
    """Loader threads (--workers) fetch steps of several passes at once and in any order; each batch is still
    the one its step would get alone. On this CPU machine the default is no loader thread."""
    import dataclasses
    from concurrent.futures import ThreadPoolExecutor

    from ocrnet_edge.model.train import Batches, loader_workers

    cfg = TrainConfig(batch_size=4, seed=5, mosaic=0.5, model=dataclasses.replace(
        TINY, class_names=yolo.thing_classes, stuff_names=yolo.stuff_classes))
    alone = Batches(yolo, cfg, AugmentOptions(), round_steps=6)
    threaded = Batches(yolo, cfg, AugmentOptions(), round_steps=6, workers=4)
    steps = [5, 0, 4, 1, 3, 2, 5, 0]  # three passes of two steps each, interleaved
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(threaded.__getitem__, steps))
    for step, (x, y) in zip(steps, got):
        xa, ya = alone[step]
        np.testing.assert_array_equal(x, xa)
        np.testing.assert_array_equal(y["cls_label"], ya["cls_label"])
    assert threaded.workers == 4
    assert loader_workers() == 1


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


# ---------------------------------------------------------------- a time limit (train --time)

PEAK, PLANNED_ROUNDS, ROUND_STEPS, WARM = 1e-2, 10, 10, 5
FIRST_ROUND_S, ROUND_S, LIMIT_S = 300.0, 100.0, 1000.0
"""A run planned for 10 rounds of 10 steps whose first round (tracing) takes 300 s and the others 100 s, under
a limit of 1,000 s: after the first round the run fits 3 rounds, from the second on 8, and round 8 is its last."""


def _time_limited(tmp_path, monkeypatch, capsys, limit_s: float = LIMIT_S, min_steps: int = 0):
    from ocrnet_edge.model.config import Schedule, to_dict
    from ocrnet_edge.model.train import OCRNetTrainer, ScaledAdamW, _History, lr_schedule

    monkeypatch.setattr("ocrnet_edge.model.train.save_model", lambda *a, **k: None)
    total = PLANNED_ROUNDS * ROUND_STEPS
    trainer = OCRNetTrainer(to_dict(TINY))
    trainer.compile(optimizer=ScaledAdamW(learning_rate=lr_schedule(PEAK, total, WARM)))
    trainer.build((None, SMALL, SMALL, 3))
    trainer.optimizer.build(trainer.trainable_variables)
    schedule = Schedule(total, ROUND_STEPS, ROUND_STEPS, PLANNED_ROUNDS, WARM)
    now = [0.0]
    cfg = TrainConfig(model=TINY, time_hours=limit_s / 3600, min_steps=min_steps)
    cb = _History(tmp_path, None, cfg, trainer, {}, schedule, started=0.0, clock=lambda: now[0])
    cb.set_model(trainer)
    trainer.stop_training = False
    ends, rounds = [], 0
    while not trainer.stop_training and rounds < PLANNED_ROUNDS:
        now[0] += FIRST_ROUND_S if rounds == 0 else ROUND_S
        cb.on_epoch_end(rounds, {})
        ends.append(int(float(trainer.optimizer._learning_rate.end.value)))
        rounds += 1
    return trainer, rounds, ends, capsys.readouterr().out


def test_a_time_limit_ends_the_run_where_its_decay_ends(tmp_path, monkeypatch, capsys):
    trainer, rounds, ends, printed = _time_limited(tmp_path, monkeypatch, capsys)
    assert rounds == 8, "the rounds after the first set the pace: 300 s + 7 x 100 s fill the 1,000 s"
    assert ends == [30] + [80] * 7, "the decay's end follows the rounds that fit"
    lr = trainer.optimizer._learning_rate
    assert float(lr(80)) == pytest.approx(0.01 * PEAK) and float(lr(79)) > float(lr(80)), "decayed at the stop"
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["stopped_by_time"] is True and state["stopped_early"] is False
    assert (state["seconds_spent"], state["end_step"], state["steps_done"]) == (LIMIT_S, 80, 80)
    assert "the run ends at step 30 of 100" in printed and "the run ends at step 80 of 100" in printed
    assert ("stopping at step 80 of 100: the time limit is spent (16 min 40 s of --time 0.277778 h), its learning "
            "rate decayed to this step") in printed


def test_a_time_limit_that_holds_the_run_changes_nothing(tmp_path, monkeypatch, capsys):
    trainer, rounds, ends, printed = _time_limited(tmp_path, monkeypatch, capsys, limit_s=1e6)
    assert rounds == PLANNED_ROUNDS and set(ends) == {PLANNED_ROUNDS * ROUND_STEPS}
    assert "time:" not in printed and "stopping" not in printed
    assert json.loads((tmp_path / "state.json").read_text())["stopped_by_time"] is False


def test_a_time_limit_spent_in_the_first_round_says_the_decay_was_cut(tmp_path, monkeypatch, capsys):
    trainer, rounds, ends, printed = _time_limited(tmp_path, monkeypatch, capsys, limit_s=FIRST_ROUND_S / 2)
    assert rounds == 1 and ends == [ROUND_STEPS]
    assert ("stopping at step 10 of 100: the time limit is spent (5 min 00 s of --time 0.0416667 h), sooner than "
            "the rounds before said, so its learning rate had not finished decaying (it was to end at step 100)"
            ) in printed


def test_the_default_time_budget_never_ends_a_run_before_its_floor(tmp_path, monkeypatch, capsys):
    trainer, rounds, ends, printed = _time_limited(tmp_path, monkeypatch, capsys, limit_s=FIRST_ROUND_S / 2,
                                                   min_steps=5 * ROUND_STEPS)
    assert rounds == 5 and ends == [50] * 5, "spent in the first round, the run still goes to min_steps, decayed there"
    assert float(trainer.optimizer._learning_rate(50)) == pytest.approx(0.01 * PEAK)
    assert ("stopping at step 50 of 100: the time limit is spent (11 min 40 s of the default budget of 2 min 30 s), "
            "its learning rate decayed to this step") in printed


def test_a_run_says_its_pace_once_after_the_round_that_traced_the_step(tmp_path, monkeypatch, capsys):
    _, rounds, _, printed = _time_limited(tmp_path, monkeypatch, capsys, limit_s=0.0)
    assert rounds == PLANNED_ROUNDS
    lines = [line for line in printed.splitlines() if line.startswith("pace:")]
    assert len(lines) == 1, printed
    # The second round's 100 s, not the first's 300 s of tracing: 8 rounds left take 800 s.
    assert lines[0].startswith("pace: 1 min 40 s a round of 10 steps: the run's 100 steps take about 13 min 20 s more")


def test_a_time_limited_run_leaves_the_pace_to_its_time_line(tmp_path, monkeypatch, capsys):
    *_, printed = _time_limited(tmp_path, monkeypatch, capsys)
    assert "pace:" not in printed


def test_a_time_limit_that_holds_the_run_says_its_pace_and_limit_once(tmp_path, monkeypatch, capsys):
    *_, printed = _time_limited(tmp_path, monkeypatch, capsys, limit_s=1e4, min_steps=50)
    lines = [line for line in printed.splitlines() if line.startswith("pace:")]
    assert len(lines) == 1 and "time:" not in printed, printed
    assert lines[0].startswith("pace: 1 min 40 s a round of 10 steps: the run's 100 steps take about 13 min 20 s more")
    assert lines[0].endswith("(within the default budget of 2 h 46 min)")


def test_the_traced_step_follows_a_moved_end():
    """The end is read by the compiled step, not fixed into it: with a constant gradient Adam moves a weight by
    exactly the learning rate, so the step after the end moves shows which end the step used."""
    import keras

    from ocrnet_edge.model.train import ScaledAdamW, lr_schedule

    peak, total, warm, moved, done = 0.1, 20, 2, 12, 10
    net = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    net.compile(optimizer=ScaledAdamW(learning_rate=lr_schedule(peak, total, warm)),
                loss=lambda y, p: keras.ops.mean(p))
    x = np.ones((done, 1), np.float32)
    net.fit(x, x, batch_size=1, epochs=1, verbose=0)
    net.optimizer.set_run_end(moved)
    before = float(net.get_weights()[0][0, 0])
    net.fit(x[:1], x[:1], batch_size=1, epochs=1, verbose=0)
    step = before - float(net.get_weights()[0][0, 0])
    want = peak * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * (done - warm) / (moved - warm))))
    assert step == pytest.approx(want, rel=1e-3)
    assert abs(step - float(lr_schedule(peak, total, warm)(done))) > 0.01, "the planned end would step otherwise"


def test_train_time_reaches_the_run_in_hours(monkeypatch, tmp_path):
    import ocrnet_edge.model.train as train_module
    from ocrnet_edge.cli import main

    seen = {}
    monkeypatch.setattr(train_module, "train", lambda data, out, cfg, **kw: seen.update(cfg=cfg) or out / "model.keras")
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--time", "0.5"]) == 0
    assert seen["cfg"].time_hours == 0.5
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 0
    assert seen["cfg"].time_hours == 0, "no limit unless asked for"


def test_rounds_in_time_and_bad_limits():
    from ocrnet_edge.model.train import duration_text, rounds_in_time

    assert rounds_in_time(2, 20, 450.0, 100.0) == 6
    assert rounds_in_time(2, 5, 1e9, 100.0) == 5, "never past the planned end"
    assert rounds_in_time(4, 20, -30.0, 100.0) == 4, "spent: this round is the last"
    assert rounds_in_time(4, 20, -30.0, 100.0, floor=10) == 10, "spent, but not before the floor"
    assert rounds_in_time(1, 5, 0.0, 100.0, floor=8) == 5, "the floor never goes past the planned end"
    assert [duration_text(s) for s in (45, 450, 3900)] == ["45 s", "7 min 30 s", "1 h 05 min"]
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(InputError, match="--time"):
            TrainConfig(time_hours=bad)


# ---------------------------------------------------------------- task-aligned assignment

TAL_SIZE, TAL_STRIDES = 64, (8, 16, 32)
BOX_A, BOX_B = (8, 8, 36, 40), (26, 8, 56, 40)
"""Two touching objects (classes 0 and 1) whose boxes share the stride-8 column at x = 28."""
GOOD_A = (10, 8, 32, 40)
"""What the good location inside A predicts: IoU 22/28 with A, better than any other prediction of A."""
GOOD_A_IOU = 22 / 28
SCORE, SHARED_SCORE, DEFAULT_DIST = 0.1, 0.9, 0.5
"""Every location scores 0.1 and predicts a box reaching half a stride each way; the shared location,
which predicts B exactly, scores 0.9 for both classes (so both objects choose it)."""
FCOS_LOSSES = (0.3146372, 0.8659722)
"""(cls, box) of the static assignment's loss on this case, pinned: the fcos path must not change."""


def _tal_case():
    from ocrnet_edge.runtime.decode.detect import anchor_points

    centres, strides = anchor_points(TAL_SIZE, TAL_STRIDES)
    n = len(centres)

    def at(x, y, s):
        return int(np.nonzero((centres[:, 0] == x) & (centres[:, 1] == y) & (strides == s))[0][0])

    def towards(box, i):
        (x, y), s = centres[i], strides[i]
        return np.array([x - box[0], y - box[1], box[2] - x, box[3] - y], np.float32) / s

    good, bad, shared = at(20, 20, 8), at(12, 20, 8), at(28, 20, 8)
    scores = np.full((1, n, 2), SCORE, np.float32)
    dist = np.full((1, n, 4), DEFAULT_DIST, np.float32)
    dist[0, good] = towards(GOOD_A, good)
    dist[0, bad] = 0.0  # a collapsed box: no overlap with A at all
    dist[0, shared], scores[0, shared] = towards(BOX_B, shared), SHARED_SCORE
    # Two padding objects: one whose box covers the whole input, one of zeros.
    gt_boxes = np.array([[BOX_A, BOX_B, (0, 0, TAL_SIZE, TAL_SIZE), (0, 0, 0, 0)]], np.float32)
    gt_labels = np.array([[0, 1, -1, -1]], np.int32)
    return centres, strides, scores, dist, gt_boxes, gt_labels, (good, bad, shared)


def _two_objects():
    boxes = np.array([BOX_A, BOX_B], np.float32)
    masks = np.stack([_square(TAL_SIZE, *b) for b in (BOX_A, BOX_B)])
    return boxes, np.array([0, 1], np.int32), masks, np.zeros((TAL_SIZE, TAL_SIZE), np.uint8)


def test_task_aligned_assignment_picks_the_well_predicting_locations():
    from ocrnet_edge.model import losses
    from ocrnet_edge.model.targets import MAX_OBJECTS, candidates, image_targets

    centres, strides, scores, dist, gt_boxes, gt_labels, (good, bad, shared) = _tal_case()
    pred = losses.decode_boxes(dist, centres, strides)
    t = {k: np.asarray(v) for k, v in losses.task_aligned_targets(scores, pred, gt_boxes, gt_labels, centres,
                                                                   strides, num_classes=2).items()}
    pos, iou = t["positive"][0], t["iou"][0]
    assert pos[0, good] == 1 and pos[0, bad] == 0, "the location that predicts A well learns A, the collapsed one not"
    assert pos[1, shared] == 1 and pos[0, shared] == 0, "chosen by both, the shared location goes to B (IoU 1)"
    assert pos.sum(axis=0).max() == 1, "no location learns two objects"
    assert 0 < pos[0].sum() <= losses.TAL_TOPK and 0 < pos[1].sum() <= losses.TAL_TOPK
    assert pos[2:].sum() == 0 and iou[2:].max() == 0, "padding objects assign nothing"
    np.testing.assert_array_equal(t["fg"][0], pos.sum(axis=0))
    np.testing.assert_array_equal(t["box_target"][0, good], BOX_A)
    np.testing.assert_array_equal(t["box_target"][0, shared], BOX_B)
    for g in (0, 1):  # each object's best location is taught the best IoU of its positives, the others less
        best_iou = (iou[g] * pos[g]).max()
        target = t["cls_target"][0, :, g] * pos[g]
        assert target.max() == pytest.approx(best_iou, rel=1e-6)
        assert (t["cls_target"][0, pos[g] == 1, 1 - g] == 0).all()
    assert t["cls_target"][0, good, 0] == pytest.approx(GOOD_A_IOU, rel=1e-6)
    assert t["cls_target"][0, t["fg"][0] == 0].max() == 0

    # The mask samples of a tal run come from a static superset of where the detector may be taught to fire.
    boxes, cats, masks, sem = _two_objects()
    everywhere = len(centres)  # enough samples for every candidate
    fcos = image_targets(boxes, cats, masks, sem, TAL_SIZE, TAL_STRIDES, everywhere, np.random.default_rng(0))
    same = image_targets(boxes, cats, masks, sem, TAL_SIZE, TAL_STRIDES, everywhere, np.random.default_rng(0),
                         assigner="fcos")
    tal = image_targets(boxes, cats, masks, sem, TAL_SIZE, TAL_STRIDES, everywhere, np.random.default_rng(0),
                        assigner="tal")
    assert set(same) == set(fcos) and "gt_boxes" not in fcos
    for k in fcos:
        np.testing.assert_array_equal(same[k], fcos[k])
    for k in ("cls_label", "cls_weight", "box_target", "semantic"):
        np.testing.assert_array_equal(tal[k], fcos[k])
    assert tal["gt_boxes"].shape == (MAX_OBJECTS, 4) and tal["gt_labels"].tolist() == [0, 1] + [-1] * (MAX_OBJECTS - 2)
    np.testing.assert_array_equal(tal["gt_boxes"][:2], boxes)
    sampled = set(tal["mask_loc"][tal["mask_weight"] > 0].tolist())
    assert sampled == set(np.nonzero(candidates(boxes, TAL_SIZE, TAL_STRIDES) >= 0)[0].tolist())
    assert set(np.nonzero(t["fg"][0])[0].tolist()) <= sampled
    assert set(np.nonzero(fcos["cls_label"] >= 0)[0].tolist()) < sampled
    assert len(set(strides[sorted(sampled)].tolist())) > 1, "on every level"
    # The static assignment's loss is what it was.
    cls_l, box_l = losses.detection_losses(scores, dist, fcos["cls_label"][None], fcos["box_target"][None],
                                           centres, strides, 2, fcos["cls_weight"][None])
    np.testing.assert_allclose([float(cls_l), float(box_l)], FCOS_LOSSES, rtol=1e-5)


TAL_STEPS = 2


@pytest.mark.slow
def test_a_tiny_run_trains_with_the_task_aligned_assigner(small_dataset, tmp_path):
    import dataclasses

    from ocrnet_edge.model.config import LossConfig
    from ocrnet_edge.model.train import train

    cfg = TrainConfig(steps=TAL_STEPS, val_every=TAL_STEPS, batch_size=2, val_images=0, augment="off",
                      model=dataclasses.replace(TINY, input_size=TAL_SIZE), loss=LossConfig(assigner="tal"))
    train(small_dataset, tmp_path, cfg, verbose=0)
    (row,) = list(csv.DictReader((tmp_path / "history.csv").open()))
    for term in ("loss", "cls", "box", "mask"):
        assert np.isfinite(float(row[term])), (term, row[term])
    assert float(row["box"]) > 0, "the assigner found positives"
    assert json.loads((tmp_path / "config.json").read_text())["loss"]["assigner"] == "tal"

    # The trainer's detection terms are the task-aligned ones, on the objects the batches carry.
    from ocrnet_edge.model import losses
    from ocrnet_edge.model.config import to_dict
    from ocrnet_edge.model.train import Batches, OCRNetTrainer

    ds = load_dataset(small_dataset)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, class_names=ds.thing_classes,
                                                             stuff_names=ds.stuff_classes))
    trainer = OCRNetTrainer(to_dict(cfg.model), to_dict(cfg.loss))
    x, y = Batches(ds, cfg, shuffle=False)[0]
    out = trainer(x)
    trainer.compute_loss(y=y, y_pred=out)
    want = losses.task_aligned_losses(out["det_scores"], out["det_boxes"], y["gt_boxes"], y["gt_labels"],
                                      trainer._centres, trainer._strides, cfg.model.num_classes, y["cls_weight"])
    got = (trainer.trackers["cls"].result(), trainer.trackers["box"].result())
    np.testing.assert_allclose([float(v) for v in got], [float(v) for v in want], rtol=1e-6)


def test_an_unknown_assigner_is_refused_in_one_line():
    from ocrnet_edge.model.config import LossConfig, train_config_from_dict

    with pytest.raises(InputError, match=r"^assigner \(--assigner\) must be fcos or tal. Received: 'atss'$"):
        LossConfig(assigner="atss")
    with pytest.raises(InputError, match="must be fcos or tal"):
        train_config_from_dict({"loss": {"assigner": "TAL"}})


def test_objects_past_the_limit_are_ignored_not_taught_as_background():
    from ocrnet_edge.model.targets import padded_objects
    from ocrnet_edge.runtime.decode.detect import anchor_points

    centres, _ = anchor_points(TAL_SIZE, TAL_STRIDES)
    big, small = (0, 0, 40, 40), (44, 44, 60, 60)
    boxes = np.array([small, big], np.float32)
    gt_boxes, gt_labels, dropped = padded_objects(boxes, np.array([1, 0], np.int32), centres, limit=1)
    np.testing.assert_array_equal(gt_boxes, [big])
    assert gt_labels.tolist() == [0], "the largest objects are kept"
    x, y = centres[:, 0], centres[:, 1]
    in_small = (x > small[0]) & (x < small[2]) & (y > small[1]) & (y < small[3])
    np.testing.assert_array_equal(dropped, in_small)


def test_mask_dice_adds_the_overlap_the_bce_does_not_see():
    from keras import ops

    from ocrnet_edge.model.config import LossConfig
    from ocrnet_edge.model.losses import mask_loss

    h = w = 8
    target = np.zeros((1, 1, h, w), np.float32)
    target[..., 2:6, 2:6] = 1.0  # the object: 16 of the 64 cells, its box the whole map
    box = np.array([[[0, 0, w, h]]], np.float32)
    protos = target[0, 0][None, :, :, None] * 2.0 - 1.0  # one prototype: +1 on the object, -1 around it
    args = (np.zeros((1, 1), np.int32), target, box, np.ones((1, 1), np.float32))

    def loss(scale, dice):
        coeffs = np.full((1, 1, 1), scale, np.float32)
        return float(ops.convert_to_numpy(mask_loss(coeffs, protos, *args, dice=dice)))

    assert loss(20.0, 1.0) == pytest.approx(loss(20.0, 0.0), abs=1e-3)  # a perfect mask: no dice to add
    wrong = loss(-20.0, 1.0) - loss(-20.0, 0.0)  # the mask inverted: no overlap at all
    assert wrong == pytest.approx(1.0, abs=0.02)
    half = loss(0.0, 1.0) - loss(0.0, 0.0)  # p = 0.5 everywhere: 1 - 16 / (16 + 16), with the smoothing
    assert half == pytest.approx(1 - 17 / 33, abs=1e-3)
    with pytest.raises(InputError, match="mask_dice"):
        LossConfig(mask_dice=-1.0)


def test_class_weights_give_a_rare_class_its_say_in_the_pixel_loss():
    from keras import ops

    from ocrnet_edge.model.losses import semantic_loss

    # Two classes: 60 of 64 pixels are class 0 and predicted well, 4 are class 1 (a pole) and predicted wrong.
    labels = np.zeros((1, 8, 8), np.int32)
    labels[0, :4, 3] = 1
    logits = np.zeros((1, 8, 8, 2), np.float32)
    logits[..., 0] = 4.0
    labels_ignored = labels.copy()
    labels_ignored[0, 6:] = IGNORE

    def loss(weights, lab=labels):
        return float(ops.convert_to_numpy(semantic_loss(logits, lab, weights)))

    ce_good, ce_bad = np.log1p(np.exp(-4.0)), np.log1p(np.exp(4.0))
    assert loss(None) == pytest.approx((60 * ce_good + 4 * ce_bad) / 64, rel=1e-4)
    assert loss((3.0, 3.0)) == pytest.approx(loss(None), rel=1e-5), "equal weights: the plain mean"
    w0, w1 = 1.5, 30.0  # the weighted mean, as PyTorch's weighted cross-entropy takes it
    assert loss((w0, w1)) == pytest.approx((60 * w0 * ce_good + 4 * w1 * ce_bad) / (60 * w0 + 4 * w1), rel=1e-4)
    assert loss((w0, w1)) > 5 * loss(None), "the pole's errors dominate once it is weighted"
    assert loss((w0, w1), labels_ignored) == pytest.approx(
        (44 * w0 * ce_good + 4 * w1 * ce_bad) / (44 * w0 + 4 * w1), rel=1e-4), "ignored pixels weigh nothing"


def test_enet_weights_come_from_the_training_sets_pixels_when_asked(tmp_path):
    import math

    from ocrnet_edge.model.config import LossConfig, enet_class_weights
    from ocrnet_edge.model.train import balanced_classes

    assert enet_class_weights([98, 2]) == pytest.approx((1 / math.log(1.02 + 0.98), 1 / math.log(1.02 + 0.02)),
                                                        abs=1e-4)
    root = tmp_path / "streets"
    lab = np.zeros((40, 60), np.uint8)
    lab[20:] = 1
    lab[:, 30] = 2  # a one-pixel pole: 40 of 2,400 pixels
    lab[0] = IGNORE
    write_label_maps(root, ("sky", "road", "pole"), {"a": lab})
    ds = load_dataset(root)
    streets = ModelConfig(class_names=(), stuff_names=ds.stuff_classes, tasks=("semantic",))
    assert balanced_classes(LossConfig(), ds, streets) == (LossConfig(), ""), "not the default"
    loss, line = balanced_classes(LossConfig(class_balance="enet"), ds, streets)
    counts = [0, (lab == 0).sum(), (lab == 1).sum(), (lab == 2).sum()]  # background first, then sky, road, pole
    assert loss.class_balance == "enet" and loss.class_weights == enet_class_weights(counts)
    assert loss.class_weights[3] > 10 * loss.class_weights[1], "the pole weighs far more than the sky"
    assert "road 2.4 to pole 27.8" in line
    # A model without a semantic map says the option did nothing.
    boxes = ModelConfig(class_names=("car",), tasks=("detect",))
    loss_b, line_b = balanced_classes(LossConfig(class_balance="enet"), ds, boxes)
    assert loss_b.class_weights == () and "no semantic map" in line_b
    # A resumed run keeps what it began with.
    assert balanced_classes(LossConfig(), ds, streets, resumed=loss) == (loss, "")
    # The weights survive the configuration's JSON (a list there).
    assert LossConfig(**json.loads(json.dumps(dataclasses.asdict(loss)))) == loss
    with pytest.raises(InputError, match="--class-weights"):
        LossConfig(class_balance="median")


def test_train_class_weights_reaches_the_loss(monkeypatch, tmp_path):
    import ocrnet_edge.model.train as train_module
    from ocrnet_edge.cli import main

    seen = []
    monkeypatch.setattr(train_module, "train", lambda data, out, cfg, **kw: seen.append(cfg) or tmp_path / "model.keras")
    for extra in ([], ["--class-weights", "enet"]):
        assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), *extra]) == 0
    assert [c.loss.class_balance for c in seen] == ["none", "enet"]


def test_photometric_is_the_colour_jitter_it_says():
    from ocrnet_edge.model.augment import photometric

    img = np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    same = AugmentOptions(brightness=0.0, contrast=0.0, saturation=0.0, noise_p=0.0, blur_p=0.0)
    assert np.array_equal(photometric(img, np.random.default_rng(0), same), img)
    jitter = AugmentOptions(noise_p=0.0, blur_p=0.0)
    for seed in range(4):
        out = photometric(img, np.random.default_rng(seed), jitter)
        rng = np.random.default_rng(seed)  # the same draws, in the same order, through the plain formula
        a = 1.0 + rng.uniform(-jitter.contrast, jitter.contrast)
        b = rng.uniform(-jitter.brightness, jitter.brightness)
        sat = 1.0 + rng.uniform(-jitter.saturation, jitter.saturation)
        f = img.astype(np.float64)
        grey = f.mean(axis=2, keepdims=True)
        want = np.clip((grey + (f - grey) * sat - 128.0) * a + 128.0 + b, 0, 255)
        assert out.dtype == np.uint8 and out.shape == img.shape
        assert np.abs(out - want).max() < 1.0  # within a grey level (OpenCV rounds in float32), saturated
    noisy = photometric(img, np.random.default_rng(0), AugmentOptions(noise_p=1.0, blur_p=1.0))
    assert noisy.dtype == np.uint8 and noisy.shape == img.shape

"""Training: a Keras trainer around the shared-feature model, resumable, backend-agnostic.

The trainer holds the inference model (``trainer.net``) and computes every loss term from the
targets of :mod:`model.targets` with ``keras.ops`` only, so the same code trains on the TensorFlow
backend (CPU here) and on the JAX backend (a GPU machine); weights move between them unchanged.

An output folder holds::

    config.json           the full training configuration
    model.keras           the inference model with its configuration (best validation score so far,
                          else the last epoch)
    last.weights.h5       trainer and optimizer state of the last finished epoch (resume)
    state.json            rounds and steps finished, the round length, the best validation score, and
                          under a time limit (``--time``) the seconds spent and the fitted end
    history.csv           loss terms and validation metrics per epoch
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np
from keras import ops

from ocrnet_edge.runtime.contract import InputSize, size_text
from ocrnet_edge.runtime.decode.detect import anchor_points
from ocrnet_edge.runtime.errors import InputError, OutputError

from . import losses
from .augment import AugmentOptions, copy_paste, mosaic, photometric, placement, reduce_factor
from .config import (
    LossConfig,
    ModelConfig,
    Schedule,
    TrainConfig,
    aspect_input_size,
    auto_length,
    enet_class_weights,
    model_config_from_dict,
    plan_schedule,
    save_json,
    shaped_input,
    to_dict,
    train_config_from_dict,
)
from .data import Dataset, Record, Rendered, holdout_split, known_truncated, load_dataset, read_rgb, render, truncated_text
from .io import cache_keras_skipsets, save_model
from .network import AUX_COARSE, build_ocrnet
from .pretrained import backbone_variables
from .targets import box_set_assigner, box_set_det_head, box_set_side, image_targets, level_shares

TERMS = ("cls", "box", "sem", "aux", "mask")


@keras.saving.register_keras_serializable(package="ocrnet_edge")
class OCRNetTrainer(keras.Model):
    """Wraps the inference model and computes the multi-task loss.

    Args:
        model_config: A :class:`ModelConfig` as a dict.
        loss_config: A :class:`LossConfig` as a dict.
    """

    def __init__(self, model_config: dict, loss_config: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.model_config = model_config
        self.loss_config = loss_config or asdict(LossConfig())
        self.cfg = model_config_from_dict(model_config)
        self.weights_cfg = LossConfig(**self.loss_config)
        self.net = build_ocrnet(self.cfg, training_outputs=True)
        centres, strides = anchor_points(self.cfg.input_size, tuple(self.cfg.strides))
        self._centres = np.asarray(centres)
        self._strides = np.asarray(strides)
        self.trackers = {t: keras.metrics.Mean(name=t) for t in TERMS}

    def call(self, x, training=False):
        return self.net(x, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        w = self.weights_cfg
        terms = {}
        out = y_pred
        total = 0.0
        if "det_scores" in out:
            centres = ops.convert_to_tensor(self._centres)
            strides = ops.convert_to_tensor(self._strides)
            if w.assigner == "tal":
                cls_l, box_l = losses.task_aligned_losses(
                    out["det_scores"], out["det_boxes"], y["gt_boxes"], y["gt_labels"], centres, strides,
                    self.cfg.num_classes, y["cls_weight"],
                )
            else:
                cls_l, box_l = losses.detection_losses(
                    out["det_scores"], out["det_boxes"], y["cls_label"], y["box_target"], centres, strides,
                    self.cfg.num_classes, y["cls_weight"],
                )
            terms["cls"], terms["box"] = cls_l, box_l
            total = total + w.cls * cls_l + w.box * box_l
        class_weights = w.class_weights or None
        if "seg_logits" in out:
            terms["sem"] = losses.semantic_loss(out["seg_logits"], y["semantic"], class_weights)
            total = total + w.semantic * terms["sem"]
        if AUX_COARSE in out:
            terms["aux"] = losses.semantic_loss(out[AUX_COARSE], y["semantic"], class_weights)
            total = total + w.semantic_aux * terms["aux"]
        if "mask_protos" in out:
            terms["mask"] = losses.mask_loss(
                out["det_coeffs"], out["mask_protos"], y["mask_loc"], y["mask_target"], y["mask_box"], y["mask_weight"],
                w.mask_dice,
            )
            total = total + w.mask * terms["mask"]
        for name, value in terms.items():
            self.trackers[name].update_state(value)
        return total

    def get_config(self):
        return {**super().get_config(), "model_config": self.model_config, "loss_config": self.loss_config}


class Batches(keras.utils.PyDataset):
    """Batches of (pixels, targets) from a dataset, augmented on the fly (see :mod:`model.augment`).

    The stream of steps runs pass after pass over the dataset, each pass in its own seeded order; a
    Keras epoch (a *round*, after which the run validates) is ``round_steps`` steps of that stream,
    one pass unless told otherwise. Each image's augmentation draws from its own generator seeded by
    (seed, pass, image), so a run is reproducible whatever the order or the number of workers.

    Args:
        dataset: Training images.
        cfg: The run (batch size, seed, mosaic, copy-paste and multi-scale shares).
        augment: Geometry and colour options (off: the runtime's letterbox).
        shuffle: A new order for every pass.
        round_steps: Steps per Keras epoch (default: one pass).
    """

    def __init__(self, dataset: Dataset, cfg: TrainConfig, augment: AugmentOptions | None = None,
                 shuffle: bool = True, round_steps: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.dataset = dataset
        self.cfg = cfg
        self.shuffle = shuffle
        self.augment = augment or AugmentOptions(enabled=False, flip=False)
        self.steps_per_pass = max(1, len(dataset) // cfg.batch_size)
        self.round_steps = round_steps or self.steps_per_pass
        self.epoch = 0
        self._orders: dict[int, np.ndarray] = {}
        sup = [r.supervision for r in dataset.records]
        # Mosaic partners share the image's supervision, so each tile teaches what the whole does.
        self._alike = {s: np.array([i for i, t in enumerate(sup) if t == s]) for s in set(sup)}
        self._donors = np.array([i for i, t in enumerate(sup) if t.masks])

    def _order(self, pass_: int) -> np.ndarray:
        # Read once and kept in a local: with loader threads, another thread may replace the cache meanwhile.
        order = self._orders.get(pass_)
        if order is None:
            n = len(self.dataset)
            order = np.random.default_rng([self.cfg.seed, pass_]).permutation(n) if self.shuffle else np.arange(n)
            self._orders = {pass_: order}
        return order

    def __len__(self) -> int:
        return self.round_steps

    def on_epoch_end(self) -> None:
        self.epoch += 1

    def __getitem__(self, index: int):
        bs, m = self.cfg.batch_size, self.cfg.model
        step = self.epoch * self.round_steps + index
        pass_, k = divmod(step, self.steps_per_pass)
        order = self._order(pass_)
        idx = order[k * bs : (k + 1) * bs]
        if len(idx) < bs:  # fewer images than a batch: repeat them
            idx = np.resize(order, bs)
        augment = self.augment
        if augment.enabled and self.cfg.multi_scale:
            # One zoom factor for the whole batch, as multi-scale training changes the input size per batch.
            lim = np.log1p(self.cfg.multi_scale)
            f = float(np.exp(np.random.default_rng([self.cfg.seed, pass_, k, 1]).uniform(-lim, lim)))
            augment = dataclasses.replace(augment, scale=(augment.scale[0] * f, augment.scale[1] * f))
        xs, ys = [], []
        for i in idx:
            rec = self.dataset.records[int(i)]
            rng = np.random.default_rng([self.cfg.seed, pass_, int(i)])
            r = self._render(rec, m.input_size, rng, augment)
            xs.append(r.image)
            ys.append(image_targets(r.boxes, r.categories, r.masks, r.semantic, m.input_size, tuple(m.strides),
                                    self.cfg.max_mask_samples, rng, r.mask_valid, r.ignore, rec.supervision.boxes,
                                    assigner=self.cfg.loss.assigner))
        x = np.stack(xs).astype(np.float32)
        y = {k: np.stack([t[k] for t in ys]) for k in ys[0]}
        return x, y

    def _render(self, rec: Record, size: InputSize, rng: np.random.Generator, augment: AugmentOptions) -> Rendered:
        """One training image: mosaic and copy-paste with their shares (augmentation on), else placed alone."""
        cfg = self.cfg
        if augment.enabled and cfg.mosaic and rng.random() < cfg.mosaic:
            partners = rng.choice(self._alike[rec.supervision], 3)
            r = mosaic([rec, *(self.dataset.records[int(j)] for j in partners)], size, rng, augment)
        else:
            r = prepare_record(rec, size, rng, augment)
        if (augment.enabled and cfg.copy_paste and rec.supervision.masks and len(self._donors)
                and rng.random() < cfg.copy_paste):
            donor = self.dataset.records[int(rng.choice(self._donors))]
            r = copy_paste(r, prepare_record(donor, size, rng, augment), rng)
        return r


def prepare_record(record: Record, size: InputSize, rng: np.random.Generator | None = None,
                   augment: AugmentOptions | None = None) -> Rendered:
    """A record rendered at the model input: the runtime's letterbox, or an augmented placement.

    Returns:
        A :class:`~model.data.Rendered` with the image (H, W, 3) uint8 and every label at the input.
    """
    augment = augment or AugmentOptions(enabled=False, flip=False)
    rng = rng if rng is not None else np.random.default_rng(0)
    p = placement(record, size, rng, augment)
    image = read_rgb(record.path, reduce_factor(record, p))
    if augment.enabled:
        image = photometric(image, rng, augment)
    return render(record, p, image=image)


@contextmanager
def ema_weights(trainer: OCRNetTrainer):
    """Inside the block the trainer's weights are the optimizer's moving average (yields True), or
    unchanged when the run keeps none (yields False); the raw weights come back after it."""
    opt = getattr(trainer, "optimizer", None)
    pairs = opt.ema_pairs() if isinstance(opt, ScaledAdamW) else []
    if not pairs:
        yield False
        return
    raw = [ops.convert_to_numpy(v.value) for v, _ in pairs]
    for v, avg in pairs:
        v.assign(avg.value)
    try:
        yield True
    finally:
        for (v, _), r in zip(pairs, raw):
            v.assign(r)


class _History(keras.callbacks.Callback):
    """After each round: validation metrics of the EMA weights (per class too), history.csv, resumable
    state, best model (the EMA weights), and the early stop after ``cfg.patience`` rounds without gain."""

    def __init__(self, out: Path, val: Dataset | None, cfg: TrainConfig, trainer: OCRNetTrainer, data: dict,
                 schedule: Schedule | None = None, started: float | None = None, clock=time.monotonic):
        super().__init__()
        self.out, self.val, self.cfg, self.trainer, self.data = out, val, cfg, trainer, data
        self.schedule = schedule
        state = _read_state(out)
        self.best = state.get("best_score", -1.0)
        self.best_step = state.get("best_step", 0)
        self.since_best = state.get("since_best", 0)
        self.t0 = time.time()
        # The run's time (--time): this process's from ``started`` (the start of train()), and what the
        # processes before it spent on a resumed run; each round's duration, validation and saving included.
        self.clock = clock
        self.started = clock() if started is None else started
        self.spent_before = float(state.get("seconds_spent", 0.0))
        self.spent = self.spent_before
        self.round_times: list[float] = []
        self._round_start = self.started
        self.end_step = state.get("end_step")
        self.decay_end_before = self.end_step

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        score = None
        step = (epoch + 1) * (self.schedule.round_steps if self.schedule else 1)
        with ema_weights(self.trainer) as ema:
            if self.val is not None:
                from .evaluate import evaluate_keras, per_class_table, validation_score

                metrics = evaluate_keras(self.trainer.net, self.val, progress=False)
                for k in ("box_ap", "mask_ap", "miou"):
                    logs[f"val_{k}"] = metrics[k] if metrics[k] is not None else ""
                score = validation_score(metrics)
                shown = " ".join(f"{k}={metrics[k]:.3f}" for k in ("box_ap", "mask_ap", "miou")
                                 if metrics[k] is not None)
                print(f"  val ({'EMA weights, ' if ema else ''}{len(self.val)} images, step {step}): {shown}")
                print(per_class_table(metrics, indent="    "))
                _atomic(self.out / "val_metrics.json", lambda p: Path(p).write_text(json.dumps(
                    {"epoch": epoch + 1, "step": step, "ema": ema, **metrics}, indent=1)), suffix=".json")
            logs["epoch"] = epoch + 1
            logs["step"] = step
            logs["seconds"] = round(time.time() - self.t0, 1)
            _append_csv(self.out / "history.csv", logs)
            improved = score is not None and score > self.best
            if score is None or score >= self.best:
                self.best = score if score is not None else self.best
                self.best_step = step
                save_model(self.trainer.net, self.cfg.model, self.out / "model.keras", data=self.data)
        self.since_best = 0 if improved or score is None else self.since_best + 1
        stop = bool(self.cfg.patience and self.since_best >= self.cfg.patience)
        out_of_time = self._fit_to_time(epoch + 1) and not stop
        cache_keras_skipsets()
        _atomic(self.out / "last.weights.h5", self.trainer.save_weights, suffix=".weights.h5")
        _atomic(self.out / "state.json", lambda p: Path(p).write_text(json.dumps(
            {"epochs_done": epoch + 1, "steps_done": step,
             "round_steps": self.schedule.round_steps if self.schedule else None,
             "total_steps": self.schedule.total_steps if self.schedule else None,
             "best_score": self.best, "best_step": self.best_step, "since_best": self.since_best,
             "stopped_early": stop, "seconds_spent": round(self.spent, 1), "end_step": self.end_step,
             "stopped_by_time": out_of_time})), suffix=".json")
        if stop:
            print(f"stopping early at step {step}: validation has not improved for {self.since_best} validations "
                  f"(--patience {self.cfg.patience}); model.keras holds the best, score {self.best:.3f} "
                  f"at step {self.best_step}")
            self.model.stop_training = True
        elif out_of_time:
            held = (f"the best validation, score {self.best:.3f} at step {self.best_step}" if score is not None
                    else f"the weights of step {step}")
            decay = ("its learning rate decayed to this step" if self.decay_end_before == step else
                     f"sooner than the rounds before said, so its learning rate had not finished decaying (it was "
                     f"to end at step {self.decay_end_before or self.schedule.total_steps})")
            print(f"stopping at step {step} of {self.schedule.total_steps}: the time limit is spent "
                  f"({duration_text(self.spent)} of {_limit_text(self.cfg)}), {decay}; model.keras "
                  f"holds {held}")
            self.model.stop_training = True

    def _fit_to_time(self, rounds_done: int) -> bool:
        """Count the round's time and, in a time-limited run, fit the run's end to what is left: the decay's end
        moves to the last round that fits at the pace measured so far (the median round after the first, whose
        tracing makes it long), never past the planned end. True when this round is the last that fits and the
        run was planned longer."""
        now = self.clock()
        self.round_times.append(now - self._round_start)
        self._round_start = now
        self.spent = self.spent_before + (now - self.started)
        times = self.round_times
        pace = float(np.median(times[1:])) if len(times) > 1 else times[0]
        if len(times) == 2 and self.schedule and not self.cfg.time_hours and rounds_done < self.schedule.rounds:
            self._say_pace(rounds_done, pace)  # a time-limited run says where it ends instead
        if not (self.cfg.time_hours and self.schedule):
            return False
        left = self.cfg.time_hours * 3600.0 - self.spent
        planned = self.schedule.rounds
        floor = -(-self.cfg.min_steps // self.schedule.round_steps)
        rounds = rounds_in_time(rounds_done, planned, left, pace, floor)
        end = rounds * self.schedule.round_steps
        if len(times) == 2 and rounds == planned > rounds_done and self.end_step in (None, self.schedule.total_steps):
            self._say_pace(rounds_done, pace, f"within {_limit_text(self.cfg)}")  # the limit holds the run: when it ends
        self.decay_end_before = self.end_step
        last = rounds_done >= rounds and rounds < planned
        if end != self.end_step:
            opt = getattr(self.trainer, "optimizer", None)
            if isinstance(opt, ScaledAdamW):
                opt.set_run_end(end)
            if not last and (rounds < planned or self.end_step is not None):
                print(f"time: {duration_text(self.spent)} spent, {duration_text(max(0.0, left))} left of "
                      f"{_limit_text(self.cfg)} at {duration_text(pace)} a round: the run ends at step {end} of "
                      f"{self.schedule.total_steps}, its learning rate decaying to that step")
            self.end_step = end
        return last

    def _say_pace(self, rounds_done: int, pace: float, limit: str = "train --time HOURS caps a run") -> None:
        """Once, after this process's second round (the first traces the step, so it is long): how long the rest of the
        planned run takes at the pace of that round, and when it ends, so that a slow machine shows early."""
        sch = self.schedule
        left = (sch.rounds - rounds_done) * pace
        ends = time.strftime("%H:%M", time.localtime(time.time() + left))
        print(f"pace: {duration_text(pace)} a round of {sch.round_steps} steps: the run's {sch.total_steps} steps take "
              f"about {duration_text(left)} more, to about {ends} ({limit})")


def _limit_text(cfg: TrainConfig) -> str:
    """The run's time limit as the user knows it: ``--time 0.5 h``, or the default budget of a run with masks."""
    if cfg.min_steps:
        return f"the default budget of {duration_text(cfg.time_hours * 3600.0)}"
    return f"--time {cfg.time_hours:g} h"


def rounds_in_time(done: int, planned: int, left_s: float, pace_s: float, floor: int = 0) -> int:
    """Rounds of a time-limited run: the ``done`` ones and as many more as ``left_s`` seconds hold at ``pace_s``
    seconds a round, at most ``planned`` and at least ``floor`` (the rounds of ``min_steps``)."""
    if pace_s <= 0:
        return planned
    return min(planned, max(floor, done + max(0, int(left_s // pace_s))))


def duration_text(seconds: float) -> str:
    """``45 s``, ``7 min 30 s``, ``1 h 05 min``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _atomic(path: Path, write, suffix: str) -> None:
    tmp = path.with_name(path.stem + ".tmp" + suffix)
    write(str(tmp))
    Path(tmp).replace(path)


def _trim_history(path: Path, rounds: int) -> None:
    """Keep the rows of ``path`` (history.csv) for the first ``rounds`` rounds, the ones a run resumes after:
    none when it starts afresh (``--no-resume`` in a folder that holds a run, whose rows were kept before), and
    none past its state (a run stopped between writing its history row and its state)."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if rounds <= 0 or not rows or "epoch" not in rows[0]:
        path.unlink()
        return
    col = rows[0].index("epoch")
    keep = [rows[0]] + [r for r in rows[1:] if len(r) > col and r[col].isdigit() and int(r[col]) <= rounds]
    if len(keep) < len(rows):
        def write(p):
            with open(p, "w", newline="") as f:
                csv.writer(f).writerows(keep)

        _atomic(path, write, suffix=".csv")


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(row))
        if new:
            wr.writeheader()
        wr.writerow({k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in row.items()})


CLASS_LAYERS = {"det_cls": "thing", AUX_COARSE: "semantic", "seg_logits": "semantic"}
"""Layers with one output channel per class: which class list their channels follow."""


def _load_init(trainer: OCRNetTrainer, cfg: TrainConfig) -> str:
    """Copy the weights of ``cfg.init`` into the trainer, layer by layer where the shapes agree.

    In the class-dependent layers (:data:`CLASS_LAYERS`) the channels of classes both models know
    (matched by name) come over and the others start fresh, so fine-tuning onto other classes keeps
    what the source knew of the shared ones. Returns the line that says what came over.

    Raises:
        InputError: The file is missing, or not a single tensor fits this architecture.
    """
    from .io import load_model, load_model_config

    net = load_model(cfg.init)  # names the file when it is missing or not a Keras model
    src_cfg = load_model_config(cfg.init)
    names = {"thing": (tuple(src_cfg.class_names), tuple(cfg.model.class_names)),
             "semantic": (tuple(src_cfg.semantic_classes), tuple(cfg.model.semantic_classes))}
    source = {layer.name: layer for layer in net.layers}
    loaded = total = 0
    reset, partial, absent = [], [], []
    for layer in trainer.net.layers:
        mine = layer.get_weights()
        if not mine:
            continue
        total += len(mine)
        theirs = source.get(layer.name)
        if theirs is None:
            absent.append(layer.name)
            continue
        w = theirs.get_weights()
        if layer.name in CLASS_LAYERS and names[CLASS_LAYERS[layer.name]][0] != names[CLASS_LAYERS[layer.name]][1]:
            src_names, new_names = names[CLASS_LAYERS[layer.name]]
            common = [(new_names.index(n), src_names.index(n)) for n in new_names if n in src_names]
            if common and len(w) == len(mine) and all(a.shape[:-1] == b.shape[:-1] for a, b in zip(w, mine)):
                for a, b in zip(mine, w):
                    for i, j in common:
                        a[..., i] = b[..., j]
                layer.set_weights(mine)
                partial.append(f"{layer.name} ({len(common)} of {len(new_names)} classes)")
            else:
                reset.append(layer.name)
        elif len(w) == len(mine) and all(a.shape == b.shape for a, b in zip(w, mine)):
            layer.set_weights(w)
            loaded += len(w)
        else:
            reset.append(layer.name)
    if loaded == 0:
        raise InputError(f"{cfg.init}: --init model shares no layer of the same shape with this architecture "
                         "(another backbone width or neck); train with its configuration (--config its config.json)")
    line = f"--init {cfg.init}: loaded {loaded} of {total} tensors"
    if partial:
        line += f"; classes matched by name in {', '.join(partial)}"
    if reset:
        line += f"; started fresh (other classes or shapes): {', '.join(reset)}"
    if absent:
        line += f"; not in the source: {', '.join(absent[:6])}{' ...' if len(absent) > 6 else ''}"
    return line


def resumed_rounds(cfg: TrainConfig, state: dict) -> TrainConfig:
    """``cfg`` for resuming a run whose ``state.json`` is ``state``: with ``--steps`` and no ``--val-every``, the
    round length the run had. The rounds done are counted in it, and the automatic length follows ``--steps``
    (a twentieth of the run), so a resume asking for more steps would otherwise count them as longer than
    they were and skip that much of the run. A run whose length nobody gave keeps the length it was planned
    with, should the automatic length have changed since."""
    if state.get("total_steps") and not cfg.epochs and not cfg.steps:
        cfg = dataclasses.replace(cfg, steps=int(state["total_steps"]))
    if state.get("round_steps") and not cfg.epochs and not cfg.val_every:
        return dataclasses.replace(cfg, val_every=int(state["round_steps"]))
    return cfg


def _read_state(out: Path) -> dict:
    p = out / "state.json"
    return json.loads(p.read_text()) if p.exists() else {}


class ScaledAdamW(keras.optimizers.Adam):
    """AdamW (Adam with decoupled weight decay) whose step and weight decay are multiplied by ``scale``
    for the variables in ``scaled``, and which keeps an exponential moving average of the weights when
    ``ema_decay`` is set.

    A pretrained backbone fine-tunes at a fraction of the neck's and heads' learning rate, so that the
    first steps, taken while the fresh heads still send large and noisy gradients, do not wash out what
    it learnt from ImageNet; for its first ``frozen_steps`` steps it does not move at all. Adam normalises
    gradient magnitudes, so scaling the gradients would change nothing: the step itself is scaled.
    Variables are matched by the optimizer's own key, which holds on the TensorFlow and JAX backends alike.

    The average is updated after every step with decay ``min(ema_decay, (1 + t) / (10 + t))`` at step
    ``t`` (short runs of a few hundred steps would otherwise average in the first, poor weights); its
    variables are the optimizer's own, so they are saved with it and a run resumes with them.

    The weight decay is applied here, in ``update_step`` (``w -= w * weight_decay * lr``, before the
    Adam step, as AdamW does), not by Keras' AdamW: on the TensorFlow backend that evaluates the
    learning-rate schedule again for every variable, which made tracing the training step take a
    quarter longer (measured: 21 of 80 s of tracing in the test suite) for the same result.
    """

    def __init__(self, scaled=(), scale: float = 1.0, ema_decay: float = 0.0, weight_decay: float = 0.0,
                 frozen_steps: int = 0, **kwargs):
        super().__init__(**kwargs)
        self._scale = float(scale)
        self._frozen_steps = int(frozen_steps)
        # Keys, not the variables: a list of variables set on an optimizer becomes its own (Keras tracks
        # it), so the backbone's kernels were saved twice and, on JAX, donated twice in each step.
        self._scaled_keys = frozenset(self._var_key(v) for v in scaled)
        self._decay = float(weight_decay or 0.0)
        self._ema_decay = float(ema_decay)
        self._ema_vars: list = []
        self._ema_index: dict = {}

    def build(self, var_list):
        super().build(var_list)
        if isinstance(self._learning_rate, WarmupCosine):
            self._learning_rate.end = self.add_variable(
                (), initializer=keras.initializers.Constant(self._learning_rate.total_steps), dtype="float32",
                name="run_end")
        if self._ema_decay:
            self._ema_vars = []
            for v in var_list:
                avg = self.add_variable_from_reference(v, name="ema")
                # A copy, not the weight's own array: on JAX, assign keeps the array it is given, and a
                # training step donates every variable's buffer, so a buffer held by two variables stops
                # the first step ("Attempt to donate the same buffer twice").
                avg.assign(ops.copy(v.value))
                self._ema_vars.append(avg)
            self._ema_index = {self._var_key(v): i for i, v in enumerate(var_list)}

    def set_run_end(self, step: int) -> None:
        """Move the end of the learning-rate decay to ``step`` (a time-limited run; see :class:`WarmupCosine`)."""
        if not isinstance(self._learning_rate, WarmupCosine) or self._learning_rate.end is None:
            raise ValueError("set_run_end needs a built optimizer on a WarmupCosine schedule")
        self._learning_rate.end.assign(float(step))

    def ema_pairs(self) -> list:
        """``(variable, its moving average)`` for every trained variable; empty without an average."""
        return [(v, self._ema_vars[i]) for v in self._trainable_variables
                if (i := self._ema_index.get(self._var_key(v))) is not None]

    def update_step(self, gradient, variable, learning_rate):
        wd = ops.cast(self._decay, variable.dtype)
        if self._var_key(variable) in self._scaled_keys:
            learning_rate = learning_rate * self._scale
            if self._frozen_steps:
                learning_rate = ops.where(self.iterations < self._frozen_steps, 0.0, learning_rate)
            if self._decay:
                self.assign_sub(variable, variable * (ops.cast(learning_rate, variable.dtype) * wd))
        elif self._decay:
            self.assign_sub(variable, variable * wd * ops.cast(learning_rate, variable.dtype))
        super().update_step(gradient, variable, learning_rate)
        if self._ema_decay:
            avg = self._ema_vars[self._ema_index[self._var_key(variable)]]
            t = ops.cast(self.iterations, variable.dtype)
            m = ops.minimum(ops.cast(self._ema_decay, variable.dtype), (1.0 + t) / (10.0 + t))
            self.assign(avg, m * avg + (1.0 - m) * variable)


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 1% of ``peak`` to ``peak`` over ``warmup_steps``, then cosine decay to 1% of
    ``peak`` at the run's last step: ``total_steps``, or the value of ``end`` once the optimizer has given the
    schedule one (:meth:`ScaledAdamW.build`). ``end`` is an optimizer variable so that a time-limited run
    (``train --time``) can move its end while it trains, on either backend (a Python number is fixed into
    the traced step), and so that a resumed run gets its end back with the rest of its state. The values
    are Keras' ``CosineDecay(peak / 100, total - warmup, alpha=0.01, warmup_target=peak)``."""

    def __init__(self, peak: float, total_steps: int, warmup_steps: int):
        self.peak, self.total_steps, self.warmup_steps = float(peak), int(total_steps), int(warmup_steps)
        self.end = None

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak, warm = self.peak, float(self.warmup_steps)
        end = ops.cast(self.end.value if self.end is not None else self.total_steps, "float32")
        rising = peak * (0.01 + 0.99 * step / max(warm, 1.0))
        progress = ops.clip((step - warm) / ops.maximum(end - warm, 1.0), 0.0, 1.0)
        decaying = peak * (0.01 + 0.99 * 0.5 * (1.0 + ops.cos(math.pi * progress)))
        return ops.where(step < warm, rising, decaying)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}


def lr_schedule(peak: float, total_steps: int, warmup_steps: int) -> WarmupCosine:
    """Linear warm-up from 1% of ``peak`` to ``peak`` over ``warmup_steps``, then cosine decay to 1% of
    ``peak`` at ``total_steps`` (see :class:`WarmupCosine` for a run whose end moves)."""
    return WarmupCosine(peak, total_steps, warmup_steps)


def _optimizer(cfg: TrainConfig, schedule: Schedule, backbone=()) -> keras.optimizers.Optimizer:
    """AdamW on a cosine schedule after a linear warm-up; the variables in ``backbone`` (a pretrained
    backbone's) step at ``cfg.backbone_lr`` times the rate, after ``cfg.freeze_backbone`` of the run frozen;
    a moving average with ``cfg.ema_decay``."""
    frozen = int(round(cfg.freeze_backbone * schedule.total_steps)) if backbone else 0
    return ScaledAdamW(scaled=backbone, scale=cfg.backbone_lr, ema_decay=cfg.ema_decay, frozen_steps=frozen,
                       learning_rate=lr_schedule(cfg.learning_rate, schedule.total_steps, schedule.warmup_steps),
                       weight_decay=cfg.weight_decay, clipnorm=10.0)


def tasks_supported(ds: Dataset) -> tuple[str, ...]:
    """The heads a dataset's labels can teach: detection with boxes, instances with masks, semantic with maps."""
    tasks = []
    if ds.thing_classes and ds.supports("boxes"):
        tasks.append("detect")
    if ds.supports("semantic") or ds.supports("masks"):
        tasks.append("semantic")
    if ds.thing_classes and ds.supports("masks"):
        tasks.append("instance")
    return tuple(tasks)


def open_training_data(data: Path | str, val_data: Path | str | None, cfg: TrainConfig,
                       quiet: bool = False) -> tuple[Dataset, Dataset | None, dict]:
    """The training set, the validation set and the record of both that travels with the model.

    The validation set is ``val_data`` when given, else the dataset's own validation split (YOLO
    ``val``, Roboflow ``valid``), else ``cfg.val_fraction`` of the training images held out by seed.
    """
    from .formats import available_splits

    data = Path(data)
    classes = tuple(cfg.classes) or None
    splits = available_splits(data)
    split = "train" if "train" in splits else "all"
    full = load_dataset(data, classes, split=split, skip_bad=cfg.skip_bad, quiet=quiet, strict_classes=True)
    record = {"train": {"path": str(data.resolve()), "split": split, "format": full.format},
              "generated": full.generated}
    train_set, val_set = full, None
    if cfg.val_images > 0:
        if val_data is not None:
            vpath = Path(val_data)
            vsplit = "val" if "val" in available_splits(vpath) else "all"
            val_set = load_dataset(vpath, full.thing_classes, split=vsplit, stuff_names=full.stuff_classes,
                                   skip_bad=cfg.skip_bad, quiet=quiet)
            record["val"] = {"path": str(vpath.resolve()), "split": vsplit, "format": val_set.format}
        elif "val" in splits:
            val_set = load_dataset(data, full.thing_classes, split="val", stuff_names=full.stuff_classes,
                                   skip_bad=cfg.skip_bad, quiet=quiet)
            record["val"] = {"path": str(data.resolve()), "split": "val", "format": val_set.format}
        elif cfg.val_fraction > 0 and len(full) >= 10:
            train_set, val_set = holdout_split(full, cfg.val_fraction, cfg.seed)
            record["val"] = {"path": str(data.resolve()), "split": split, "format": full.format,
                             "holdout": {"fraction": cfg.val_fraction, "seed": cfg.seed}}
            record["train"]["holdout_excluded"] = {"fraction": cfg.val_fraction, "seed": cfg.seed}
        if val_set is not None and len(val_set) > cfg.val_images:
            val_set = val_set.subset(val_set.records[: cfg.val_images])
    record["classes"] = {"thing": list(full.thing_classes), "stuff": list(full.stuff_classes)}
    return train_set, val_set, record


PHOTO_PRESET = "s"
"""The size preset of :func:`photo_defaults` (README, "Model sizes and the training recipe", has the figures)."""


def photo_defaults(cfg: TrainConfig) -> tuple[TrainConfig, str]:
    """The model a run on photographs gets when nobody chose one: the bundled DeepLab MobileNetV2 0.5 start
    (:data:`model.pretrained.DEFAULT_START`) at size :data:`PHOTO_PRESET`, and the line that says so. The
    compact backbone from scratch suits generated scenes (the reference model), not photographs: it has no
    published weights to start from."""
    from .pretrained import DEFAULT_START

    cfg = dataclasses.replace(cfg, pretrained=DEFAULT_START, model=cfg.model.with_preset(PHOTO_PRESET))
    return cfg, (f"model: the default for photographs, size {PHOTO_PRESET} on the backbone of {DEFAULT_START} "
                 "(bundled; --backbone, --pretrained or --size-preset choose otherwise)")


def box_set_head(model: ModelConfig, shares, resumed: str | None = None) -> tuple[ModelConfig, str]:
    """The detection head of a model that learns boxes alone, chosen by where the training set's boxes go
    (:func:`~model.targets.box_set_det_head` of ``shares``, the levels' shares of the boxes, finest first:
    :func:`~model.targets.level_shares`), and the line that says so ("" where it keeps its head: a model with masks
    or label maps, whose default head is the shared one, or a run being resumed, which keeps the head it started
    with, ``resumed``)."""
    if resumed is not None:
        return dataclasses.replace(model, det_head=resumed), ""
    if tuple(model.tasks) != ("detect",):
        return model, ""
    head = box_set_det_head(shares)
    strides = sorted(model.strides)
    where = f"{float(shares[-1]):.0%} of its boxes at stride {strides[-1]}, {float(shares[0]):.0%} at stride {strides[0]}"
    return dataclasses.replace(model, det_head=head), (
        f"detection head: {head}, the default for a set with boxes alone whose objects are mostly "
        f"{'large' if head == 'decoupled' else 'small'} ({where}; --det-head chooses)")


def box_set_input(model: ModelConfig, side: int, widths, heights) -> tuple[ModelConfig, str]:
    """The input of a new run's model that learns boxes alone, after the head :func:`box_set_head` gave it: a set of
    mostly large objects (the ``decoupled`` head) trains at :func:`~model.targets.box_set_side` of the default
    ``side`` (416 for 320), shaped after the photos (``widths``, ``heights``) as any input is
    (:func:`~model.config.aspect_input_size`); and the line that says so. Others keep theirs, and "" is said."""
    larger = box_set_side(side, model.det_head)
    if tuple(model.tasks) != ("detect",) or larger == side:
        return model, ""
    size, why = aspect_input_size(widths, heights, larger)
    return model.with_size(size), (
        f"input: {size_text(size)}, the default for a set with boxes alone whose objects are mostly large (its coarse "
        f"levels gain from the finer detail; {why}); --size chooses")


def box_set_assignment(loss: LossConfig, model: ModelConfig, resumed: str | None = None) -> tuple[LossConfig, str]:
    """The label assignment of a model that learns boxes alone, after the head :func:`box_set_head` gave it
    (:func:`~model.targets.box_set_assigner`), and the line that says so where it is the task-aligned one ("" where
    the loss keeps its assigner: a model with masks or label maps, or a run being resumed, which keeps the one it
    started with, ``resumed``)."""
    if resumed is not None:
        return dataclasses.replace(loss, assigner=resumed), ""
    if tuple(model.tasks) != ("detect",):
        return loss, ""
    assigner = box_set_assigner(model.det_head)
    line = ("label assignment: task-aligned, the default with the shared head on a set with boxes alone (each of many "
            "small, touching objects keeps the locations that predict it best; --assigner chooses)")
    return dataclasses.replace(loss, assigner=assigner), line if assigner == "tal" else ""


def balanced_classes(loss: LossConfig, train_set, model: ModelConfig,
                     resumed: LossConfig | None = None) -> tuple[LossConfig, str]:
    """The loss with its semantic class weights made from the training set where ``loss.class_balance`` asks for
    them (``enet``), and the line that says so: the weights' range, or that a model without a semantic map has nothing
    to weight ("" where none were asked for). A run being resumed keeps the weights it started with (``resumed``).

    Rare classes are the ones a semantic map loses first (issue 18: CamVid's poles, signs and cyclists at IoU 0.00
    with plain cross-entropy); ENet and ESPNet, the published figures for CamVid, train with these weights."""
    if resumed is not None:
        return dataclasses.replace(loss, class_balance=resumed.class_balance, class_weights=resumed.class_weights), ""
    if loss.class_balance == "none":
        return dataclasses.replace(loss, class_weights=()), ""
    if "semantic" not in model.tasks:
        return dataclasses.replace(loss, class_balance="none", class_weights=()), (
            f"--class-weights {loss.class_balance}: this model has no semantic map to weight (its labels teach "
            f"{', '.join(model.tasks)}); nothing weighted")
    from .summary import semantic_pixel_counts

    counts, _ = semantic_pixel_counts(train_set)
    weights = enet_class_weights(counts)
    names = model.semantic_classes
    seen = [k for k in range(len(names)) if counts[k]]
    lo, hi = min(seen, key=lambda k: weights[k]), max(seen, key=lambda k: weights[k])
    return dataclasses.replace(loss, class_weights=weights), (
        "semantic classes weighted by their share of the labelled pixels (--class-weights enet: ENet's "
        f"1/ln(1.02 + share)): {names[lo]} {weights[lo]:.1f} to {names[hi]} {weights[hi]:.1f}")


def loader_workers() -> int:
    """Loader threads for a training run: one per core the process may use, up to 8, where an accelerator
    computes the step (the CPU then has nothing to do but prepare batches); none beside the step on the CPU.

    Measured (docs/recipe_runs.md, "Training on a GPU"): on an H200 a 50-step round of the 60-photo default
    took 4.2 s with 8 threads; on the 2-core CPU two threads gained nothing (40 steps, alternating: 187 and 192 s
    without, 196 and 197 s with; the same losses) and took 12% more memory."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, cores) if keras_accelerator() else 1


def keras_accelerator() -> str | None:
    """The accelerator of the two Keras backends training runs on ('gpu', 'tpu'), or None on the CPU."""
    if keras.backend.backend() == "jax":
        import jax

        platform = jax.default_backend()
        return None if platform == "cpu" else platform
    import tensorflow as tf

    return "gpu" if tf.config.list_logical_devices("GPU") else None


def train(data: Path | str, out: Path | str, cfg: TrainConfig, val_data: Path | str | None = None,
          resume: bool = True, verbose: int = 1, defaults: bool = False, auto_size: bool = False,
          auto_head: bool = False, auto_assigner: bool = False, workers: int | None = None) -> Path:
    """Train (or resume training) and return the path of the saved inference model.

    The classes come from the dataset (``cfg.classes`` selects and orders them) and the heads from
    what its labels support; ``cfg.model`` gives the rest of the architecture.

    Args:
        data: Training dataset in any supported format (see :mod:`model.formats`).
        out: Output folder (created; an existing run there is resumed when its config matches).
        cfg: Training configuration.
        val_data: Dataset for per-epoch validation; default: the dataset's validation split or a held-out share.
        resume: Continue a run found in ``out``.
        verbose: Keras progress bar (1) or one line per epoch (2).
        defaults: Nobody chose the model: on photographs (not generated scenes) take :func:`photo_defaults`.
        auto_size: Nobody chose the input size: on photographs of one aspect, shape the input after them at
            about the cost of the configured square (:func:`aspect_input_size`); with ``auto_head``, a new run
            of boxes alone that gets the decoupled head (objects mostly large) takes a larger side (:func:`box_set_input`).
        auto_head: Nobody chose the detection head: photographs that teach boxes alone get the head their boxes'
            sizes call for (:func:`box_set_head`).
        auto_assigner: Nobody chose the label assignment (nor the head): photographs that teach boxes alone get the
            one that goes with their head (:func:`box_set_assignment`).
        workers: Threads that prepare batches ahead of the training step (0 or 1: the step prepares its own);
            default :func:`loader_workers`. Batches are the same whatever the number (each image's randomness
            is seeded by run, pass and image).
    """
    started = time.monotonic()
    out = Path(out)
    train_set, val_set, data_record = open_training_data(data, val_data, cfg)
    cfg_path = out / "config.json"
    state = _read_state(out) if resume else {}
    saved = train_config_from_dict(json.loads(cfg_path.read_text())) if state and cfg_path.exists() else None
    backbone_line = ""
    if defaults and not train_set.generated:
        cfg, default_line = photo_defaults(cfg)
        print(default_line)
    side = cfg.model.input_size
    auto_size = auto_size and not train_set.generated and isinstance(side, int)
    widths, heights = [r.width for r in train_set.records], [r.height for r in train_set.records]
    input_line = ""
    if auto_size:
        # A run being resumed keeps the input it started with (one begun before this rule: the square).
        size, why = shaped_input(side, widths, heights, saved.model.input_size if saved else None)
        if size != side:
            cfg = dataclasses.replace(cfg, model=cfg.model.with_size(size))
            input_line = f"input: {size_text(size)}, {why}; --size chooses"
    if cfg.pretrained:
        from .pretrained import model_for_pretrained, resolve_source

        cfg = dataclasses.replace(cfg, pretrained=resolve_source(cfg.pretrained))
    if cfg.pretrained:
        model, backbone_line = model_for_pretrained(cfg.model, cfg.pretrained)
        cfg = dataclasses.replace(cfg, model=model)
    model_cfg = dataclasses.replace(cfg.model, class_names=train_set.thing_classes,
                                    stuff_names=train_set.stuff_classes, tasks=tasks_supported(train_set))
    if auto_head and not train_set.generated:
        shares = level_shares(train_set.records, model_cfg.input_size, tuple(model_cfg.strides))
        model_cfg, head_line = box_set_head(model_cfg, shares, resumed=saved.model.det_head if saved else None)
        if head_line:
            print(head_line)
        if head_line and auto_size:  # a new run's input follows the head the rule chose
            model_cfg, line = box_set_input(model_cfg, side, widths, heights)
            if line:  # convert --board keeps it: the same model exported at 320 lost 8 points of box AP on kangaroo
                input_line, data_record["input_for"] = line, "large boxes"
    kept = json.loads((out / "data.json").read_text()) if saved is not None and (out / "data.json").is_file() else {}
    if kept.get("input_for"):  # a resumed run keeps what its input was chosen for
        data_record["input_for"] = kept["input_for"]
    if input_line:
        print(input_line)
    loss_cfg = cfg.loss
    if auto_head and auto_assigner and not train_set.generated:  # the assignment follows a head the rule chose
        loss_cfg, assign_line = box_set_assignment(loss_cfg, model_cfg, resumed=saved.loss.assigner if saved else None)
        if assign_line:
            print(assign_line)
    loss_cfg, balance_line = balanced_classes(loss_cfg, train_set, model_cfg, resumed=saved.loss if saved else None)
    if balance_line:
        print(balance_line)
    augment = cfg.augment == "on" or (cfg.augment == "auto" and not train_set.generated)
    cfg = dataclasses.replace(cfg, model=model_cfg, loss=loss_cfg)
    keras.utils.set_random_seed(cfg.seed)
    trainer = OCRNetTrainer(to_dict(cfg.model), to_dict(cfg.loss))
    if cfg.pretrained:  # before anything is written: a bad file leaves no run folder behind
        from .pretrained import load_pretrained

        pretrained_line, data_record["pretrained"] = load_pretrained(trainer.net, cfg.model, cfg.pretrained)
        pretrained_line += f"; the backbone fine-tunes at {cfg.backbone_lr:g} x the learning rate"
        data_record["pretrained"]["backbone_lr"] = cfg.backbone_lr
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{out}: cannot create the output folder ({e.strerror})") from None
    if saved is not None and to_dict(saved.model) != to_dict(cfg.model):
        raise InputError(f"{cfg_path}: the run in {out} has another model configuration; use a new --out")
    if not train_set.generated:
        cfg, length_line = auto_length(cfg, len(train_set), resumed=saved)
        if length_line:
            print(length_line)
    cfg = resumed_rounds(cfg, state)
    save_json(cfg, cfg_path)
    data_record["augment"] = augment
    _atomic(out / "data.json", lambda p: Path(p).write_text(json.dumps(data_record, indent=1)), suffix=".json")
    sup = {t: train_set.supports(t) for t in ("boxes", "masks", "semantic")}
    print(f"training on {len(train_set)} images ({train_set.format}; boxes {sup['boxes']}, masks {sup['masks']}, "
          f"label maps {sup['semantic']}), validating on {len(val_set) if val_set else 0}; "
          f"classes: {list(model_cfg.class_names)}" + (f" + regions {list(model_cfg.stuff_names)}"
                                                      if model_cfg.stuff_names else "")
          + f"; heads: {', '.join(model_cfg.tasks)}; backbone {model_cfg.backbone} width {model_cfg.width:g}; "
          f"augmentation {'on' if augment else 'off (flips only)'}")
    truncated = [str(r.path) for r in train_set.records if known_truncated(str(r.path))]
    if truncated:  # read_rgb keeps libjpeg quiet about them from here on
        print(truncated_text(truncated))

    schedule = plan_schedule(len(train_set), cfg)
    workers = loader_workers() if workers is None else max(1, int(workers))
    batches = Batches(train_set, cfg, AugmentOptions(enabled=augment, flip=cfg.flip), round_steps=schedule.round_steps,
                      workers=workers)
    recipe = [f"mosaic {cfg.mosaic:g}"] if augment and cfg.mosaic else []
    recipe += [f"copy-paste {cfg.copy_paste:g}"] if augment and cfg.copy_paste else []
    recipe += [f"multi-scale {cfg.multi_scale:g}"] if augment and cfg.multi_scale else []
    recipe += [f"EMA {cfg.ema_decay:g}"] if cfg.ema_decay else []
    recipe += ["task-aligned assignment"] if cfg.loss.assigner == "tal" else []
    recipe += [f"backbone frozen for {int(round(cfg.freeze_backbone * schedule.total_steps))} steps"] \
        if cfg.freeze_backbone and cfg.pretrained else []
    recipe += [f"patience {cfg.patience}"] if cfg.patience and val_set is not None else []
    recipe += [f"batches from {workers} loader threads"] if workers > 1 else []
    recipe += [f"at most {cfg.time_hours:g} h (--time; the end moves sooner if the rounds are slow)"] \
        if cfg.time_hours and not cfg.min_steps else []
    recipe += [f"within {_limit_text(cfg)} (the end moves sooner if the rounds are slow, never before step "
               f"{cfg.min_steps})"] if cfg.time_hours and cfg.min_steps else []
    print(f"schedule: {schedule.total_steps} steps of {cfg.batch_size} images ({schedule.passes:.1f} passes), "
          f"warm-up {schedule.warmup_steps} steps then cosine decay, "
          f"{'validating' if val_set is not None else 'saving'} every {schedule.round_steps} steps"
          + (f"; {', '.join(recipe)}" if recipe else ""))
    backbone_vars = backbone_variables(trainer.net, cfg.model) if cfg.pretrained else []
    trainer.compile(optimizer=_optimizer(cfg, schedule, backbone_vars))
    trainer.build((None, cfg.model.input_wh[1], cfg.model.input_wh[0], 3))
    # Built here, eagerly, the optimizer's variables are not created while the training step is traced,
    # which took longer than the whole build (measured: a tiny model's first fit 35.6 s, 18.6 s built first,
    # the same weights after). A resumed run then gets its moments, step count and average back from the
    # weights file.
    trainer.optimizer.build(trainer.trainable_variables)
    initial_epoch = 0
    if state.get("epochs_done"):
        initial_epoch = int(state["epochs_done"])
        trainer.load_weights(str(out / "last.weights.h5"))
        if int(ops.convert_to_numpy(trainer.optimizer.iterations)) == 0:
            # Keras loads no optimizer state that does not fit (it warns and goes on), and the run would
            # start its warm-up and decay again from step 0.
            raise InputError(f"{out / 'last.weights.h5'}: its optimizer state does not fit this run (saved by "
                             "another version of ocrnet-edge?); start the run afresh with --no-resume")
        batches.epoch = initial_epoch
        print(f"resuming {out} after step {initial_epoch * schedule.round_steps}")
    elif cfg.init:
        print(_load_init(trainer, cfg))
    elif cfg.pretrained:
        print("\n".join(filter(None, [backbone_line, pretrained_line])))
    _trim_history(out / "history.csv", initial_epoch)
    if state.get("stopped_early"):
        print(f"{out}: this run stopped early (--patience {cfg.patience}); nothing left to train")
    elif state.get("stopped_by_time"):
        print(f"{out}: this run ended at its time limit (--time); nothing left to train (--no-resume starts a longer "
              "one afresh)")
    elif initial_epoch < schedule.rounds:
        trainer.fit(batches, epochs=schedule.rounds, initial_epoch=initial_epoch, verbose=verbose,
                    callbacks=[_History(out, val_set, cfg, trainer, data_record, schedule, started=started)])
    return out / "model.keras"

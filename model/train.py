"""Training: a Keras trainer around the shared-feature model, resumable, backend-agnostic.

The trainer holds the inference model (``trainer.net``) and computes every loss term from the
targets of :mod:`model.targets` with ``keras.ops`` only, so the same code trains on the TensorFlow
backend (CPU here) and on the JAX backend (a GPU machine); weights move between them unchanged.

An output folder holds::

    config.json           the full training configuration
    model.keras           the inference model with its configuration (best validation score so far,
                          else the last epoch)
    last.weights.h5       trainer and optimizer state of the last finished epoch (resume)
    state.json            epochs finished and the best validation score
    history.csv           loss terms and validation metrics per epoch
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np
from keras import ops

from ocrnet_edge.runtime.decode.detect import anchor_points
from ocrnet_edge.runtime.errors import InputError, OutputError

from . import losses
from .config import LossConfig, TrainConfig, model_config_from_dict, save_json, to_dict, train_config_from_dict
from .data import Dataset, load_dataset
from .io import save_model
from .network import AUX_COARSE, build_ocrnet
from .targets import image_targets

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
            cls_l, box_l = losses.detection_losses(
                out["det_scores"], out["det_boxes"], y["cls_label"], y["box_target"], centres, strides,
                self.cfg.num_classes,
            )
            terms["cls"], terms["box"] = cls_l, box_l
            total = total + w.cls * cls_l + w.box * box_l
        if "seg_logits" in out:
            terms["sem"] = losses.semantic_loss(out["seg_logits"], y["semantic"])
            total = total + w.semantic * terms["sem"]
        if AUX_COARSE in out:
            terms["aux"] = losses.semantic_loss(out[AUX_COARSE], y["semantic"])
            total = total + w.semantic_aux * terms["aux"]
        if "mask_protos" in out:
            terms["mask"] = losses.mask_loss(
                out["det_coeffs"], out["mask_protos"], y["mask_loc"], y["mask_target"], y["mask_box"], y["mask_weight"]
            )
            total = total + w.mask * terms["mask"]
        for name, value in terms.items():
            self.trackers[name].update_state(value)
        return total

    def get_config(self):
        return {**super().get_config(), "model_config": self.model_config, "loss_config": self.loss_config}


class SceneBatches(keras.utils.PyDataset):
    """Batches of (pixels, targets) from a COCO dataset, with random horizontal flips.

    Images must already be at the model's input size (generated scenes are); other sizes are
    letterboxed by :func:`prepare_record`.
    """

    def __init__(self, dataset: Dataset, cfg: TrainConfig, shuffle: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.dataset = dataset
        self.cfg = cfg
        self.shuffle = shuffle
        self.rng = np.random.default_rng(cfg.seed)
        self.order = np.arange(len(dataset))
        if shuffle:
            self.rng.shuffle(self.order)

    def __len__(self) -> int:
        return max(1, len(self.dataset) // self.cfg.batch_size)

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.rng.shuffle(self.order)

    def __getitem__(self, index: int):
        bs, m = self.cfg.batch_size, self.cfg.model
        idx = self.order[index * bs : (index + 1) * bs]
        xs, ys = [], []
        for i in idx:
            image, boxes, cats, masks, sem = prepare_record(self.dataset.records[i], m.input_size)
            if self.shuffle and self.rng.random() < 0.5:
                image, masks, sem = image[:, ::-1], masks[:, :, ::-1], sem[:, ::-1]
                boxes = boxes.copy()
                boxes[:, [0, 2]] = m.input_size - boxes[:, [2, 0]]
            xs.append(image)
            ys.append(image_targets(boxes, cats, masks, sem, m.input_size, tuple(m.strides),
                                    self.cfg.max_mask_samples, self.rng))
        x = np.stack(xs).astype(np.float32)
        y = {k: np.stack([t[k] for t in ys]) for k in ys[0]}
        return x, y


def prepare_record(record, size: int):
    """Image, boxes, classes, masks and semantic map of a record at the model input size.

    Returns:
        ``(image (S, S, 3) uint8, boxes (I, 4) float32, categories (I,), masks (I, S, S) bool,
        semantic (S, S) uint8)``.
    """
    import cv2

    from ocrnet_edge.runtime.preprocess import preprocess_into

    image = record.image()
    masks = record.masks()
    sem = record.semantic()
    boxes = record.boxes.copy()
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image, boxes, record.categories, masks, sem
    buf = np.empty((size, size, 3), np.uint8)
    t = preprocess_into(image, buf)
    nw, nh = round(w * t.scale_x), round(h * t.scale_y)
    px, py = int(t.pad_x), int(t.pad_y)

    def place(a, interp):
        out = np.zeros((size, size), a.dtype)
        out[py : py + nh, px : px + nw] = cv2.resize(a, (nw, nh), interpolation=interp)
        return out

    masks = np.stack([place(m.astype(np.uint8), cv2.INTER_NEAREST) > 0 for m in masks]) if len(masks) else \
        np.zeros((0, size, size), bool)
    sem = place(sem, cv2.INTER_NEAREST)
    boxes[:, 0::2] = boxes[:, 0::2] * t.scale_x + px
    boxes[:, 1::2] = boxes[:, 1::2] * t.scale_y + py
    return buf, boxes, record.categories, masks, sem


class _History(keras.callbacks.Callback):
    """After each epoch: validation metrics, history.csv, resumable state, best model."""

    def __init__(self, out: Path, val: Dataset | None, cfg: TrainConfig, trainer: OCRNetTrainer):
        super().__init__()
        self.out, self.val, self.cfg, self.trainer = out, val, cfg, trainer
        state = _read_state(out)
        self.best = state.get("best_score", -1.0)
        self.t0 = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        score = None
        if self.val is not None:
            from .evaluate import evaluate_keras

            metrics = evaluate_keras(self.trainer.net, self.val, progress=False)
            for k in ("box_ap", "mask_ap", "miou"):
                logs[f"val_{k}"] = metrics[k]
            score = (metrics["box_ap"] + metrics["mask_ap"] + metrics["miou"]) / 3
            print(f"  val: box_ap={metrics['box_ap']:.3f} mask_ap={metrics['mask_ap']:.3f} miou={metrics['miou']:.3f}")
        logs["epoch"] = epoch + 1
        logs["seconds"] = round(time.time() - self.t0, 1)
        _append_csv(self.out / "history.csv", logs)
        _atomic(self.out / "last.weights.h5", self.trainer.save_weights, suffix=".weights.h5")
        if score is None or score >= self.best:
            self.best = score if score is not None else self.best
            save_model(self.trainer.net, self.cfg.model, self.out / "model.keras")
        _atomic(self.out / "state.json", lambda p: Path(p).write_text(
            json.dumps({"epochs_done": epoch + 1, "best_score": self.best})), suffix=".json")


def _atomic(path: Path, write, suffix: str) -> None:
    tmp = path.with_name(path.stem + ".tmp" + suffix)
    write(str(tmp))
    Path(tmp).replace(path)


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(row))
        if new:
            wr.writeheader()
        wr.writerow({k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in row.items()})


def _load_init(trainer: OCRNetTrainer, cfg: TrainConfig) -> None:
    """Copy the weights of ``cfg.init`` (a saved model of the same architecture) into the trainer."""
    from .io import load_model, load_model_config

    net = load_model(cfg.init)  # names the file when it is missing or not a Keras model
    if to_dict(load_model_config(cfg.init)) != to_dict(cfg.model):
        raise InputError(f"{cfg.init}: --init model has another architecture than this run; "
                         "train with its configuration (--config its config.json)")
    trainer.net.set_weights(net.get_weights())


def _read_state(out: Path) -> dict:
    p = out / "state.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _optimizer(cfg: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    total = cfg.epochs * steps_per_epoch
    warmup = max(1, int(cfg.warmup_epochs * steps_per_epoch))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=cfg.learning_rate * 0.01, decay_steps=max(1, total - warmup), alpha=0.01,
        warmup_target=cfg.learning_rate, warmup_steps=warmup,
    )
    return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=cfg.weight_decay, clipnorm=10.0)


def train(data: Path | str, out: Path | str, cfg: TrainConfig, val_data: Path | str | None = None,
          resume: bool = True, verbose: int = 1) -> Path:
    """Train (or resume training) and return the path of the saved inference model.

    Args:
        data: COCO dataset folder for training.
        out: Output folder (created; an existing run there is resumed when its config matches).
        cfg: Training configuration.
        val_data: COCO dataset folder for per-epoch validation (``cfg.val_images`` of its images).
        resume: Continue a run found in ``out``.
        verbose: Keras progress bar (1) or one line per epoch (2).
    """
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{out}: cannot create the output folder ({e.strerror})") from None
    cfg_path = out / "config.json"
    state = _read_state(out) if resume else {}
    if state and cfg_path.exists():
        saved = train_config_from_dict(json.loads(cfg_path.read_text()))
        if to_dict(saved.model) != to_dict(cfg.model):
            raise InputError(f"{cfg_path}: the run in {out} has another model configuration; use a new --out")
    train_set = load_dataset(data, cfg.model.class_names)
    val_set = None
    if val_data is not None and cfg.val_images > 0:
        full = load_dataset(val_data, cfg.model.class_names)
        val_set = Dataset(full.root, full.records[: cfg.val_images], full.class_names)
    save_json(cfg, cfg_path)

    keras.utils.set_random_seed(cfg.seed)
    batches = SceneBatches(train_set, cfg)
    trainer = OCRNetTrainer(to_dict(cfg.model), to_dict(cfg.loss))
    trainer.compile(optimizer=_optimizer(cfg, len(batches)))
    trainer.build((None, cfg.model.input_size, cfg.model.input_size, 3))
    initial_epoch = 0
    if state.get("epochs_done"):
        initial_epoch = int(state["epochs_done"])
        # Built first, the optimizer gets its moments and step count back from the weights file.
        trainer.optimizer.build(trainer.trainable_variables)
        trainer.load_weights(str(out / "last.weights.h5"))
        batches.rng = np.random.default_rng([cfg.seed, initial_epoch])
        print(f"resuming {out} after epoch {initial_epoch}")
    elif cfg.init:
        _load_init(trainer, cfg)
        print(f"starting from the weights of {cfg.init}")
    if initial_epoch < cfg.epochs:
        trainer.fit(batches, epochs=cfg.epochs, initial_epoch=initial_epoch, verbose=verbose,
                    callbacks=[_History(out, val_set, cfg, trainer)])
    return out / "model.keras"


"""Model and training configuration: frozen dataclasses, validated when built, saved as JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocrnet_edge.runtime.contract import DEFAULT_STRIDES, THING_CLASSES
from ocrnet_edge.runtime.errors import InputError

TASKS = ("detect", "semantic", "instance")
BACKBONES = ("compact", "mobilenet_v2", "mobilenet_v1")
STANDARD_WIDTHS: dict[str, tuple[float, ...]] = {"mobilenet_v2": (0.35, 0.5, 0.75, 1.0),
                                                 "mobilenet_v1": (0.25, 0.5, 0.75, 1.0)}
"""Widths of the standard backbones (those Keras Applications publishes ImageNet weights for)."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the shared-feature model.

    Attributes:
        input_size: Square input side in pixels, a multiple of 32.
        backbone: ``compact`` (this project's MobileNetV2-like network: expansion 4, five stages),
            ``mobilenet_v2`` or ``mobilenet_v1`` (the Keras Applications / TF-Slim architectures, layer
            for layer, so published weights fit: see :mod:`model.pretrained`).
        width: Width multiplier of the backbone (for the standard backbones, one Keras Applications
            has weights for: :data:`STANDARD_WIDTHS`).
        neck_channels: Channels of each FPN level (the shared feature map).
        det_fraction: Share of the shared channels that feed detection; the rest feed segmentation.
        head_channels: Channels inside the detection head (shared over levels).
        num_protos: Mask prototypes (and coefficients per location).
        use_ocr: Object-contextual representations in the semantic branch (off for the ablation).
        ocr_channels: Key, query and value channels of the pixel-region attention.
        strides: Detection pyramid strides.
        class_names: Thing classes (detection and instance masks), in id order.
        stuff_names: Region classes (semantic map only), after the thing classes in the semantic map.
        tasks: Which heads the graph holds (the fused model has all three).
    """

    input_size: int = 320
    backbone: str = "compact"
    width: float = 1.0
    neck_channels: int = 64
    det_fraction: float = 0.25
    head_channels: int = 64
    num_protos: int = 16
    use_ocr: bool = True
    ocr_channels: int = 32
    strides: tuple[int, ...] = DEFAULT_STRIDES
    class_names: tuple[str, ...] = THING_CLASSES
    stuff_names: tuple[str, ...] = ()
    tasks: tuple[str, ...] = TASKS

    def __post_init__(self) -> None:
        if self.input_size < 64 or self.input_size % 32:
            raise InputError(f"input_size must be a multiple of 32, at least 64. Received: input_size={self.input_size}")
        if not 0.0 < self.det_fraction < 1.0:
            raise InputError(f"det_fraction must lie strictly between 0 and 1. Received: {self.det_fraction}")
        if self.det_channels < 4 or self.seg_channels < 4:
            raise InputError(
                f"neck_channels={self.neck_channels} with det_fraction={self.det_fraction} leaves "
                f"{self.det_channels} detection and {self.seg_channels} segmentation channels; need 4 or more each"
            )
        if tuple(self.strides) != DEFAULT_STRIDES:
            raise InputError(f"Only strides {DEFAULT_STRIDES} are supported. Received: {self.strides}")
        unknown = set(self.tasks) - set(TASKS)
        if unknown or not self.tasks:
            raise InputError(f"tasks must be a non-empty subset of {TASKS}. Received: {self.tasks}")
        if self.width <= 0:
            raise InputError(f"width must be positive. Received: {self.width}")
        if self.backbone not in BACKBONES:
            raise InputError(f"backbone must be one of {BACKBONES}. Received: {self.backbone!r}")
        if self.backbone in STANDARD_WIDTHS and float(self.width) not in STANDARD_WIDTHS[self.backbone]:
            raise InputError(f"--width {self.width} for {self.backbone}: Keras Applications defines it at widths "
                             f"{list(STANDARD_WIDTHS[self.backbone])} only (pretrained weights exist for those)")
        if not self.class_names and set(self.tasks) & {"detect", "instance"}:
            raise InputError("a model without thing classes can only have the semantic head (tasks=('semantic',))")
        if not self.class_names and not self.stuff_names:
            raise InputError("a model needs at least one class (thing or region)")
        names = [*self.class_names, *self.stuff_names]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup or "background" in names:
            raise InputError(f"class names must be unique and not 'background'. Received: {names}")

    @property
    def det_channels(self) -> int:
        """Shared channels that feed the detection branch (a quarter by default)."""
        return max(1, round(self.neck_channels * self.det_fraction))

    @property
    def seg_channels(self) -> int:
        """Shared channels that feed the segmentation branch (the rest)."""
        return self.neck_channels - self.det_channels

    @property
    def num_classes(self) -> int:
        """Number of thing classes."""
        return len(self.class_names)

    @property
    def semantic_classes(self) -> tuple[str, ...]:
        """Classes of the semantic map: background, the thing classes, the region classes."""
        return ("background", *self.class_names, *self.stuff_names)

    def with_size(self, size: int) -> ModelConfig:
        """The same architecture at another input size (weights carry over unchanged)."""
        return dataclasses.replace(self, input_size=size)


@dataclass(frozen=True)
class LossConfig:
    """Weights of the loss terms.

    Attributes:
        cls: Quality focal loss on class scores (target: IoU of the predicted box).
        box: GIoU loss on positive locations.
        semantic: Pixel cross-entropy of the semantic logits (upsampled to the input).
        semantic_aux: Cross-entropy of OCR's coarse soft-region logits.
        mask: Per-instance mask BCE inside the ground-truth box, at prototype resolution.
    """

    cls: float = 1.0
    box: float = 2.0
    semantic: float = 1.0
    semantic_aux: float = 0.4
    mask: float = 1.5


@dataclass(frozen=True)
class TrainConfig:
    """A training run.

    Attributes:
        epochs: Passes over the training set.
        batch_size: Images per step.
        learning_rate: Peak AdamW learning rate (cosine decay after a linear warm-up).
        weight_decay: AdamW weight decay.
        warmup_epochs: Linear warm-up length.
        backbone_lr: With ``pretrained``: the backbone's learning rate as a fraction of ``learning_rate``
            (the neck and heads train at the full rate). At the full rate the fresh heads' first,
            noisy gradients wash out much of what the backbone learnt from ImageNet (README, "Backbones
            and pretrained weights", has the equal-budget figures).
        val_images: Validation images evaluated after each epoch (0 turns validation off).
        seed: Seed of shuffling and augmentation.
        max_mask_samples: Positive locations per image that get a mask loss.
        pretrained: Backbone weights to start from: ``imagenet`` (Keras Applications, fetched by
            Keras), a Keras ``.h5`` file of the standard model, or a ``.tflite`` file holding the same
            backbone (a quantized classifier or segmenter); empty: none. See :mod:`model.pretrained`.
        init: A saved ``model.keras`` whose weights start the run (fine-tuning): every layer whose
            weights have the same shapes is loaded, class-dependent layers start fresh; empty for a
            fresh start.
        augment: ``auto`` (on for user data, flips only for generated scenes), ``on`` or ``off``.
        flip: Random horizontal flips (off for classes where left and right differ).
        val_fraction: Share of the training images held out for validation when the dataset has no
            validation split and none is given.
        classes: Classes to train, in this order (empty: every class of the dataset).
        skip_bad: Skip files with problems instead of refusing the dataset.
    """

    epochs: int = 30
    batch_size: int = 16
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    backbone_lr: float = 0.1
    val_images: int = 200
    seed: int = 0
    max_mask_samples: int = 48
    init: str = ""
    pretrained: str = ""
    augment: str = "auto"
    flip: bool = True
    val_fraction: float = 0.1
    classes: tuple[str, ...] = ()
    skip_bad: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)


    def __post_init__(self) -> None:
        if self.init and self.pretrained:
            raise InputError("--init and --pretrained both give starting weights; choose one")
        if self.augment not in ("auto", "on", "off"):
            raise InputError(f"augment must be auto, on or off. Received: {self.augment!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError(f"val_fraction must lie in [0, 1). Received: {self.val_fraction}")
        if not 0.0 <= self.backbone_lr <= 1.0:
            raise InputError(f"backbone_lr (--backbone-lr) must lie in [0, 1]. Received: {self.backbone_lr}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1. Received: {getattr(self, name)}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def model_config_from_dict(d: dict[str, Any]) -> ModelConfig:
    """Build a :class:`ModelConfig`, refusing unknown keys."""
    return _build(ModelConfig, d)


def train_config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig` (with nested model and loss configs), refusing unknown keys."""
    d = dict(d)
    model = model_config_from_dict(d.pop("model", {}))
    loss = _build(LossConfig, d.pop("loss", {}))
    return _build(TrainConfig, {**d, "model": model, "loss": loss})


def _build(cls: type, d: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise InputError(f"Unknown {cls.__name__} keys {unknown}. Known: {sorted(names)}")
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return cls(**kw)


def save_json(cfg: Any, path: Path) -> None:
    """Write a config as JSON (atomically)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
    tmp.replace(path)

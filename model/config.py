"""Model and training configuration: frozen dataclasses, validated when built, saved as JSON."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ocrnet_edge.runtime.contract import DEFAULT_STRIDES, THING_CLASSES, InputSize, input_wh, parse_size, size_text
from ocrnet_edge.runtime.errors import InputError

TASKS = ("detect", "semantic", "instance")
BACKBONES = ("compact", "mobilenet_v2", "mobilenet_v1")
STANDARD_WIDTHS: dict[str, tuple[float, ...]] = {"mobilenet_v2": (0.35, 0.5, 0.75, 1.0),
                                                 "mobilenet_v1": (0.25, 0.5, 0.75, 1.0)}
"""Widths of the standard backbones (those Keras Applications publishes ImageNet weights for)."""
DET_HEADS = ("shared", "decoupled")
"""Layouts of the detection head (``ModelConfig.det_head``)."""
CHANNEL_DIVISORS = (8, 1)
"""Channel roundings of the standard MobileNetV2: Keras Applications' (8) and TF-Slim DeepLab's (1)."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the shared-feature model.

    Attributes:
        input_size: Input size: the side of a square input, or ``(width, height)`` for a rectangular one
            (``416x320`` for a 4:3 camera, ``512x288`` for 16:9: letterboxing then pads little); each side
            a multiple of 32, at least 64.
        backbone: ``compact`` (this project's MobileNetV2-like network: expansion 4, five stages),
            ``mobilenet_v2`` or ``mobilenet_v1`` (the Keras Applications / TF-Slim architectures, layer
            for layer, so published weights fit: see :mod:`model.pretrained`).
        width: Width multiplier of the backbone (for the standard backbones, one Keras Applications
            has weights for: :data:`STANDARD_WIDTHS`).
        channel_divisor: How the standard MobileNetV2 rounds its scaled channel counts: to multiples of
            8 as Keras Applications and Coral's classifiers do, or 1 (no rounding) as TF-Slim's DeepLab
            does below width 1 (Coral's ``deeplabv3_mnv2_dm05_pascal_quant.tflite``: 12 channels at
            stride 4 where Keras has 16). Only ``--pretrained`` sets it, from the file it reads.
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
        det_head: The detection head's layout (:data:`DET_HEADS`): ``shared``, one tower of the
            FCOS-style head computes scores, boxes and mask coefficients on the top-down pyramid; or
            ``decoupled``, scores from one tower and boxes with mask coefficients from another (YOLOX's
            decoupled head), on a detection pyramid with a bottom-up path (PANet's, as YOLOv5/v8 and
            RTMDet have), so the coarse levels that take large objects see the finer levels' detail.
            Either reads only the detection quarter of the shared channels.
    """

    input_size: InputSize = 320
    backbone: str = "compact"
    width: float = 1.0
    channel_divisor: int = 8
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
    det_head: str = "shared"

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "input_size", parse_size(self.input_size))
        except InputError as e:
            raise InputError(f"input_size: {e}") from None
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
        if self.det_head not in DET_HEADS:
            raise InputError(f"det_head (--det-head) must be one of {list(DET_HEADS)}. Received: {self.det_head!r}")
        if self.backbone not in BACKBONES:
            raise InputError(f"backbone must be one of {BACKBONES}. Received: {self.backbone!r}")
        if self.backbone in STANDARD_WIDTHS and float(self.width) not in STANDARD_WIDTHS[self.backbone]:
            raise InputError(f"--width {self.width} for {self.backbone}: Keras Applications defines it at widths "
                             f"{list(STANDARD_WIDTHS[self.backbone])} only (pretrained weights exist for those)")
        if self.channel_divisor not in CHANNEL_DIVISORS or (self.channel_divisor != 8 and
                                                            self.backbone != "mobilenet_v2"):
            raise InputError(f"channel_divisor must be 8, or 1 with the mobilenet_v2 backbone (TF-Slim's DeepLab "
                             f"layout). Received: {self.channel_divisor} with {self.backbone}")
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

    @property
    def input_wh(self) -> tuple[int, int]:
        """``(width, height)`` of the input."""
        return input_wh(self.input_size)

    def with_size(self, size: InputSize) -> ModelConfig:
        """The same architecture at another input size (weights carry over unchanged)."""
        return dataclasses.replace(self, input_size=size)

    def with_preset(self, name: str) -> ModelConfig:
        """The same model at one of the :data:`SIZE_PRESETS` (neck, head, prototype and OCR channels).

        Raises:
            InputError: ``name`` is not a preset.
        """
        if name not in SIZE_PRESETS:
            raise InputError(f"size preset must be one of {list(SIZE_PRESETS)}. Received: {name!r}")
        return dataclasses.replace(self, **SIZE_PRESETS[name])


SIZE_PRESETS: dict[str, dict[str, int]] = {
    "n": {"neck_channels": 64, "head_channels": 64, "num_protos": 16, "ocr_channels": 32},
    "s": {"neck_channels": 128, "head_channels": 96, "num_protos": 24, "ocr_channels": 48},
    "m": {"neck_channels": 192, "head_channels": 128, "num_protos": 32, "ocr_channels": 64},
}
"""Model sizes (``train --size-preset``), as Ultralytics users know them: nano, small, medium.

Each scales the FPN neck (whose channels still split a quarter to detection, three quarters to
segmentation), the detection head, the mask prototypes and OCR's attention together; the backbone is
chosen apart (``--backbone``, ``--width``). ``n`` is the reference model's neck and heads: its detection
branch sees 16 channels; ``s`` gives it 32 and ``m`` 48.
"""


CLASS_BALANCES = ("none", "enet")
ENET_C = 1.02
"""ENet's constant in the class weight ``1 / ln(ENET_C + p)`` (Paszke et al. 2016): it bounds the weight of the
rarest class at about 50 and gives a class of half the pixels about 2.4."""


def enet_class_weights(pixels) -> tuple[float, ...]:
    """ENet's class weights ``1 / ln(ENET_C + p)`` from each class's count of labelled pixels (``p``: its share)."""
    counts = [float(c) for c in pixels]
    total = sum(counts)
    if total <= 0:
        raise InputError("class weights need labelled pixels; the training set has none")
    return tuple(round(1.0 / math.log(ENET_C + c / total), 4) for c in counts)


@dataclass(frozen=True)
class LossConfig:
    """Weights of the loss terms.

    Attributes:
        cls: Quality focal loss on class scores (target: IoU of the predicted box).
        box: GIoU loss on positive locations.
        semantic: Pixel cross-entropy of the semantic logits (upsampled to the input).
        semantic_aux: Cross-entropy of OCR's coarse soft-region logits.
        mask: Per-instance mask BCE inside the ground-truth box, at prototype resolution.
        assigner: Which locations learn each object: ``fcos`` (static, in the data pipeline: inside the
            box, near its centre, on the level of its size; :mod:`model.targets`) or ``tal`` (task-aligned,
            in the graph: the best-predicting locations near the object on any level, TOOD/YOLOv8 style;
            :func:`model.losses.task_aligned_losses`; the mask samples then come from its wider candidates). ``train``
            gives ``tal`` to a set of boxes alone that gets the shared head (:func:`model.train.box_set_assignment`).
        mask_dice: Weight of a dice term added to the mask BCE (:func:`model.losses.mask_loss`); 0: BCE alone.
        class_balance: Weights of the semantic classes in the pixel losses: ``none`` (every class alike) or ``enet``
            (ENet's ``1 / ln(1.02 + p)`` of each class's share ``p`` of the training set's labelled pixels, so a thin
            class such as a pole weighs about fifteen times the sky; ENet and ESPNet train on CamVid so). Not the
            default: on the one set of many label-map classes here it left mIoU level (docs/recipe_runs.md, "Class
            weights for rare semantic classes").
        class_weights: The weights in use, one per semantic class (background first), set by ``train`` from
            ``class_balance`` and the training set; empty: every class alike.
    """

    cls: float = 1.0
    box: float = 2.0
    semantic: float = 1.0
    semantic_aux: float = 0.4
    mask: float = 1.5
    assigner: str = "fcos"
    mask_dice: float = 0.0
    class_balance: str = "none"
    class_weights: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_weights", tuple(float(v) for v in self.class_weights))  # a JSON list
        if self.class_balance not in CLASS_BALANCES:
            raise InputError(f"class balance (--class-weights) must be one of {', '.join(CLASS_BALANCES)}. "
                             f"Received: {self.class_balance!r}")
        if any(not (v > 0.0 and math.isfinite(v)) for v in self.class_weights):
            raise InputError(f"class weights must be positive numbers. Received: {list(self.class_weights)}")
        if self.assigner not in ("fcos", "tal"):
            raise InputError(f"assigner (--assigner) must be fcos or tal. Received: {self.assigner!r}")
        if self.mask_dice < 0:
            raise InputError(f"mask_dice (--mask-dice) must be 0 or more. Received: {self.mask_dice}")


@dataclass(frozen=True)
class TrainConfig:
    """A training run.

    Attributes:
        epochs: Passes over the training set; 0: the run is counted in optimisation steps (``steps``).
            An epoch count validates after every pass, as before steps existed.
        steps: Optimisation steps of the whole run (with ``epochs`` 0); 0: :func:`auto_steps` of the
            training set's size, so that a small set trains for many more passes than a large one.
        batch_size: Images per step.
        learning_rate: Peak AdamW learning rate (cosine decay after a linear warm-up).
        weight_decay: AdamW weight decay.
        warmup_epochs: Linear warm-up length in passes; counted in steps, the warm-up lasts at least
            :data:`WARMUP_SHARE` of the run.
        val_every: Steps between validations when counted in steps (0: a pass, and at least
            1/:data:`VALIDATIONS` of the run).
        ema_decay: Exponential moving average of the weights, used for validation and saved as the
            model (0: off). The decay ramps up as ``min(ema_decay, (1 + t) / (10 + t))`` at step ``t``,
            so the first, poor weights leave the average quickly.
        patience: Stop when this many validations in a row have not improved the best score (0: never).
        time_hours: At most this many hours for the run (``train --time``; 0: no limit). After each round the
            run's end is fitted to what the rounds measured so far leave of it: the run ends at its planned
            length or at the last round that fits, whichever comes first, and its cosine decay ends there
            (not cut off at a high learning rate). The time counts from the start of ``train`` (loading,
            building and the first round's tracing included), and over the processes of a resumed run.
        min_steps: With ``time_hours``: the run does not end before this step, however slow its rounds (the
            floor of the time budget :func:`auto_length` gives; 0: none).
        mosaic: Share of training images made as a mosaic of four (see :func:`model.augment.mosaic`).
        copy_paste: Share of training images that get objects of another image pasted in with their
            masks (see :func:`model.augment.copy_paste`).
        multi_scale: Multi-scale training: each batch's zoom is multiplied by one factor drawn
            log-uniformly from ``[1 / (1 + m), 1 + m]`` (0: off). The graph's input is static (the
            Edge TPU wants it so), so the scale varies inside the fixed input instead of the input size.
        backbone_lr: With ``pretrained``: the backbone's learning rate as a fraction of ``learning_rate``
            (the neck and heads train at the full rate). At the full rate the fresh heads' first,
            noisy gradients wash out much of what the backbone learnt from ImageNet (README, "Backbones
            and pretrained weights", has the equal-budget figures).
        freeze_backbone: With ``pretrained``: share of the run's steps during which the backbone does
            not move at all (the neck and heads learn on its features first); 0: it fine-tunes from the
            first step at ``backbone_lr``.
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

    epochs: int = 0
    steps: int = 0
    batch_size: int = 16
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    val_every: int = 0
    ema_decay: float = 0.0
    patience: int = 0
    time_hours: float = 0.0
    min_steps: int = 0
    mosaic: float = 0.0
    copy_paste: float = 0.0
    multi_scale: float = 0.0
    backbone_lr: float = 0.1
    freeze_backbone: float = 0.0
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
        if not 0.0 <= self.freeze_backbone < 1.0:
            raise InputError(f"freeze_backbone (--freeze-backbone) is a share of the run and must lie in [0, 1). "
                             f"Received: {self.freeze_backbone}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be at least 1. Received: {self.batch_size}")
        for name in ("epochs", "steps", "val_every", "patience"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be 0 or more. Received: {getattr(self, name)}")
        if self.epochs and self.steps:
            raise InputError(f"epochs and steps both give the run's length; choose one. "
                             f"Received: epochs={self.epochs}, steps={self.steps}")
        if not (self.time_hours >= 0.0 and math.isfinite(self.time_hours)):
            raise InputError(f"time (--time) is a number of hours, 0 or more (0: no limit). Received: {self.time_hours}")
        if self.min_steps < 0:
            raise InputError(f"min_steps must be 0 or more. Received: {self.min_steps}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise InputError(f"ema_decay must lie in [0, 1) (0: off). Received: {self.ema_decay}")
        for name in ("mosaic", "copy_paste"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"{name} is a share of images and must lie in [0, 1]. Received: {getattr(self, name)}")
        if not 0.0 <= self.multi_scale <= 1.0:
            raise InputError(f"multi_scale must lie in [0, 1]. Received: {self.multi_scale}")


AUTO_MIN_STEPS = 1000
"""Steps of a run on a small set when nothing says how long (:func:`auto_steps`)."""
AUTO_MIN_STEPS_BOXES = 2000
"""The same for a run that learns boxes alone (no masks, no label maps): its model has the detection head
alone, so a step costs about half (kangaroo 0.8 s against Penn-Fudan's 1.6 s with masks on the 2-core
machine), and twice the steps gained 3.7 points of box AP and 2.5 of AP50 on kangaroo (README)."""
AUTO_STEPS_MASKS = 2000
"""Steps a run on photographs with instance masks plans when nothing says how long, within
:data:`AUTO_TIME_HOURS` and never under :data:`AUTO_MIN_STEPS` (:func:`auto_length`): on 60 Penn-Fudan photos,
twice the steps raised the run path's mask AP by 2.0 points on average over three seeds (+2.0, -0.1, +3.7), and by
2.6 on all 130 (seed 0; docs/recipe_runs.md, "The 2,000-step default on all 130 Penn-Fudan photos")."""
AUTO_TIME_HOURS = 0.8
"""The time budget of that length: 48 minutes, so that a set of 60 photos is trained and converted within the hour
on a 2-core machine; where the rounds are slower, the run ends sooner, its decay fitted (``--time``)."""
AUTO_MIN_EPOCHS = 20
"""Passes of a run on a large set when nothing says how long."""
WARMUP_SHARE = 0.03
"""The warm-up lasts at least this share of the run."""
VALIDATIONS = 20
"""Validations in a run counted in steps, at most (one per pass on a large set)."""


def auto_steps(images: int, batch_size: int, boxes_only: bool = False) -> int:
    """Optimisation steps of a run whose length nobody gave: at least :data:`AUTO_MIN_STEPS`
    (:data:`AUTO_MIN_STEPS_BOXES` when it learns boxes alone), and at least :data:`AUTO_MIN_EPOCHS`
    passes. A 60-image set (3 steps a pass at batch 16) gets 333 passes, a 6,000-image set 20: a small
    set needs many passes to converge, a large one fewer."""
    per_pass = max(1, images // batch_size)
    return max(AUTO_MIN_STEPS_BOXES if boxes_only else AUTO_MIN_STEPS, AUTO_MIN_EPOCHS * per_pass)


def auto_length(cfg: TrainConfig, images: int, resumed: TrainConfig | None = None) -> tuple[TrainConfig, str]:
    """The length of a run on photographs whose length nobody gave (no ``epochs``, ``steps`` or ``time_hours``),
    and the line that says it. A model with instance masks plans :data:`AUTO_STEPS_MASKS` steps where
    :func:`auto_steps` gives fewer, within :data:`AUTO_TIME_HOURS` and never under :func:`auto_steps`'s length
    (``min_steps``); other models, and larger sets, keep :func:`auto_steps`. A resumed run (``resumed``: its saved
    configuration) keeps the budget it began with."""
    if cfg.epochs or cfg.steps or cfg.time_hours:
        return cfg, ""
    if resumed is not None:
        return dataclasses.replace(cfg, time_hours=resumed.time_hours, min_steps=resumed.min_steps), ""
    if "instance" not in cfg.model.tasks:
        return cfg, ""
    base = auto_steps(images, cfg.batch_size)
    if base >= AUTO_STEPS_MASKS:
        return cfg, ""
    cfg = dataclasses.replace(cfg, steps=AUTO_STEPS_MASKS, time_hours=AUTO_TIME_HOURS, min_steps=base)
    return cfg, (f"length: {AUTO_STEPS_MASKS} steps within {AUTO_TIME_HOURS * 60:.0f} min and never under {base}, the "
                 "default for photographs with instance masks (twice the steps gained mask AP on average; a slow "
                 "machine ends sooner, its decay fitted; --steps, --epochs or --time choose)")


@dataclass(frozen=True)
class Schedule:
    """How long a run is and when it validates.

    Attributes:
        total_steps: Optimisation steps of the whole run.
        steps_per_pass: Steps of one pass over the training set.
        round_steps: Steps between validations (a Keras "epoch"; a pass when counted in epochs).
        rounds: Validations (Keras epochs) of the run.
        warmup_steps: Steps of the linear warm-up before the cosine decay.
    """

    total_steps: int
    steps_per_pass: int
    round_steps: int
    rounds: int
    warmup_steps: int

    @property
    def passes(self) -> float:
        """Passes over the training set (epochs in the usual sense)."""
        return self.total_steps / self.steps_per_pass


def plan_schedule(images: int, cfg: TrainConfig) -> Schedule:
    """The run's length, validation rounds and warm-up for a training set of ``images`` images."""
    per_pass = max(1, images // cfg.batch_size)
    if cfg.epochs:
        total, round_steps = cfg.epochs * per_pass, per_pass
    else:
        total = cfg.steps or auto_steps(images, cfg.batch_size, boxes_only=tuple(cfg.model.tasks) == ("detect",))
        round_steps = cfg.val_every or max(per_pass, -(-total // VALIDATIONS))
        round_steps = min(round_steps, total)
    rounds = -(-total // round_steps)
    warmup = max(1, int(cfg.warmup_epochs * per_pass))
    if not cfg.epochs:  # counted in epochs, the warm-up stays what it always was
        warmup = max(warmup, int(WARMUP_SHARE * total))
    return Schedule(rounds * round_steps, per_pass, round_steps, rounds, min(warmup, max(1, total - 1)))


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


ASPECT_AGREE = 0.8
"""Share of the training images whose aspect must lie within :data:`ASPECT_TOLERANCE` of the median for
:func:`aspect_input_size` to shape the input after them (one camera, one export size)."""
ASPECT_TOLERANCE = 0.1
AREA_RANGE = (0.9, 1.15)
"""Pixels of a shaped input against the square side's: about the same invoke cost (384x288 is 1.08x 320x320)."""


def aspect_input_size(widths: Sequence[int], heights: Sequence[int], side: int,
                      multiple: int = 32) -> tuple[InputSize, str]:
    """The input for images of one aspect at about the cost of ``side`` x ``side``, and why.

    When at least :data:`ASPECT_AGREE` of the images lie within :data:`ASPECT_TOLERANCE` of their median
    aspect, and that aspect is not square, the input is the ``multiple``-aligned ``(width, height)`` of
    nearest aspect among those with :data:`AREA_RANGE` of the square's pixels: 384x288 for 4:3 photos
    (640x480 cameras), 448x256 for 16:9, 384x256 for 3:2, 288x384 for portrait 3:4. A square letterbox
    spends a quarter of a 4:3 input on grey bars; this spends under 3% (BCCD at 384x288 from a model
    trained at 320: box AP50 0.802 -> 0.841, README). Mixed aspects keep the square.

    Returns:
        ``(size, reason)``: an :data:`~runtime.contract.InputSize` and the line that explains it.
    """
    w, h = np.asarray(widths, np.float64), np.asarray(heights, np.float64)
    if len(w) == 0:
        return side, "no images"
    aspect = w / np.maximum(h, 1)
    med = float(np.median(aspect))
    agree = float(np.mean(np.abs(aspect / med - 1) <= ASPECT_TOLERANCE))
    if agree < ASPECT_AGREE:
        return side, f"the images' aspects differ ({agree:.0%} within {ASPECT_TOLERANCE:.0%} of the median {med:.2f})"
    lo, hi = (f * side * side for f in AREA_RANGE)
    sides = range(2 * multiple, 4 * side + 1, multiple)
    fits = [(cw, ch) for cw in sides for ch in sides if lo <= cw * ch <= hi]
    best = min(fits, key=lambda s: (abs(np.log(s[0] / s[1] / med)), abs(s[0] * s[1] - side * side)))
    if best[0] == best[1] or abs(np.log(best[0] / best[1] / med)) >= abs(np.log(med)):
        return side, f"the images are about square (median aspect {med:.2f})"
    return best, (f"{agree:.0%} of the images have an aspect within {ASPECT_TOLERANCE:.0%} of {med:.2f}: "
                  f"letterboxed, they leave {_padding(med, *best):.0%} of {size_text(best)} as padding against "
                  f"{_padding(med, side, side):.0%} of {side}x{side}")


def shaped_input(side: int, widths: Sequence[int], heights: Sequence[int],
                 resumed: InputSize | None = None) -> tuple[InputSize, str]:
    """The input ``train`` takes when no size was chosen: that of the run being resumed (``resumed``), else
    :func:`aspect_input_size`'s; and the words that say why."""
    if resumed is not None:
        return resumed, "kept from the run being resumed"
    size, why = aspect_input_size(widths, heights, side)
    return size, f"shaped after the photos ({why})"


def _padding(aspect: float, width: int, height: int) -> float:
    """Share of a ``width`` x ``height`` input that letterboxing an image of ``aspect`` leaves as bars."""
    r = aspect * height / width
    return 1.0 - min(r, 1.0 / r)


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

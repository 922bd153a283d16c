"""The shared-feature model: one backbone, one neck, three answers.

Data flow (input ``S``, neck channels ``C``, ``D = C * det_fraction``)::

    RGB uint8 pixels (1, H, W, 3)
      -> PixelRescale
      -> MobileNetV2-style backbone (inverted residuals, ReLU6)     C2/4, C3/8, C4/16, C5/32
      -> FPN top-down neck                                          P3, P4, P5 with C channels
      -> split every level by channels: [0, D) detection, [D, C) segmentation
         detection  : shared anchor-free head over P3..P5 -> det_scores (sigmoid), det_boxes, det_coeffs
                      (``decoupled``: a bottom-up path P3 -> P4 -> P5 first, and boxes from a tower of their own)
         segmentation: levels summed at stride 8 -> object-contextual representations
                       -> upsampled to stride 4 with C2 detail -> seg_logits, mask_protos

Instance masks are ``sigmoid(det_coeffs[i] @ mask_protos)`` for the detections kept after NMS,
assembled by the device runtime (no per-instance tensors in the graph).
"""

from __future__ import annotations

from contextlib import contextmanager

import keras
from keras import layers

from ocrnet_edge.runtime import contract
from ocrnet_edge.runtime.errors import ModelError

from .config import ModelConfig
from .layers import ChannelSlice, FusedBatchNorm, ObjectContext, PixelRescale, Resize

# (expansion, base output channels, repeats, first stride) per stage; the width multiplier
# scales the channels. Stage outputs at strides 4, 8, 16 and 32 feed the neck.
BACKBONE = (
    (1, 16, 1, 1),
    (4, 24, 2, 2),
    (4, 32, 3, 2),
    (4, 64, 3, 2),
    (4, 96, 2, 2),
)
BN_MOMENTUM = 0.9
"""Short BatchNorm memory: with a few hundred steps per epoch and a high learning rate, Keras' default
0.99 left the moving statistics far behind the weights (inference-mode mIoU stuck at background)."""
AUX_COARSE = "seg_coarse"
"""Training-only output: OCR's coarse soft-region logits (stride 8)."""


def _ch(c: float) -> int:
    return max(8, int(c + 4) // 8 * 8)


def _conv_bn(x, filters: int, kernel: int = 1, stride: int = 1, act: bool = True, name: str = ""):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = FusedBatchNorm(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(max_value=6.0, name=f"{name}_relu")(x) if act else x


def _dw_bn(x, stride: int = 1, name: str = ""):
    x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = FusedBatchNorm(momentum=BN_MOMENTUM, name=f"{name}_dwbn")(x)
    return layers.ReLU(max_value=6.0, name=f"{name}_dwrelu")(x)


def _inverted_residual(x, expansion: int, out: int, stride: int, name: str):
    inp = x.shape[-1]
    h = _conv_bn(x, inp * expansion, name=f"{name}_expand") if expansion != 1 else x
    h = _dw_bn(h, stride, name=name)
    h = _conv_bn(h, out, act=False, name=f"{name}_project")
    if stride == 1 and inp == out:
        h = layers.Add(name=f"{name}_add")([x, h])
    return h


def _sep(x, filters: int, name: str):
    return _conv_bn(_dw_bn(x, name=name), filters, name=f"{name}_pw")


STAGE_ENDS = {
    "mobilenet_v2": ("block_2_add", "block_5_add", "block_12_add", "block_16_project_BN"),
    "mobilenet_v1": ("conv_pw_3_relu", "conv_pw_5_relu", "conv_pw_11_relu", "conv_pw_13_relu"),
}
"""Keras Applications layers whose outputs are the standard backbones' features at strides 4, 8, 16, 32.
MobileNetV2 ends at its last inverted residual (320 x width channels), before the classifier's 1x1
convolution to 1280 channels, as DeepLab and SSDLite-style detectors take it."""


@contextmanager
def channel_rounding(divisor: int):
    """Build Keras Applications' MobileNetV2 with its scaled channel counts rounded to multiples of
    ``divisor`` instead of 8: with 1 it is TF-Slim's layout, that of DeepLab's depth-multiplied
    MobileNetV2 (``ModelConfig.channel_divisor``). Keras has no argument for it; its rounding helper is
    swapped for the duration of the build.

    Raises:
        ModelError: This Keras has no such helper (its MobileNetV2 source changed).
    """
    if divisor == 8:
        yield
        return
    from keras.src.applications import mobilenet_v2 as source

    original = getattr(source, "_make_divisible", None)
    if original is None:
        raise ModelError(f"Keras {keras.__version__}: its MobileNetV2 has no _make_divisible to round channels "
                         f"to {divisor}; the DeepLab channel layout cannot be built with this Keras")
    source._make_divisible = lambda v, _divisor, min_value=None: original(v, divisor, min_value)
    try:
        yield
    finally:
        source._make_divisible = original


def standard_backbone(x, name: str, width: float, divisor: int = 8):
    """A Keras Applications MobileNet (``mobilenet_v2`` or ``mobilenet_v1``) built on ``x`` (pixels in [-1, 1]),
    layer for layer and with its own layer names, so published weights fit (``divisor``: see
    :func:`channel_rounding`). Returns the features at strides 4, 8, 16 and 32."""
    app = {"mobilenet_v2": keras.applications.MobileNetV2, "mobilenet_v1": keras.applications.MobileNet}[name]
    import warnings

    with warnings.catch_warnings(), channel_rounding(divisor):
        warnings.simplefilter("ignore")  # "input shape not one of the ImageNet sizes": expected, weights still fit
        net = app(input_tensor=x, alpha=width, include_top=False, weights=None)
    for layer in net.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM
    return [net.get_layer(n).output for n in STAGE_ENDS[name]]


def build_backbone(x, width: float, backbone: str = "compact", divisor: int = 8):
    """The feature extractor: ``compact`` (MobileNetV2-style, expansion 4) or a standard MobileNet.
    Returns the features at strides 4, 8, 16 and 32."""
    if backbone != "compact":
        return standard_backbone(x, backbone, width, divisor)
    x = _conv_bn(x, _ch(32 * width), 3, stride=2, name="stem")
    feats = []
    for s, (t, c, n, stride) in enumerate(BACKBONE):
        for i in range(n):
            x = _inverted_residual(x, t, _ch(c * width), stride if i == 0 else 1, name=f"b{s}_{i}")
        if s >= 1:
            feats.append(x)
    return feats  # C2, C3, C4, C5


def build_neck(c3, c4, c5, channels: int):
    """FPN-style top-down pyramid: P3, P4, P5 with ``channels`` channels each."""
    l5 = _conv_bn(c5, channels, name="lat5")
    l4 = _conv_bn(c4, channels, name="lat4")
    l3 = _conv_bn(c3, channels, name="lat3")
    t4 = layers.Add(name="td4")([l4, Resize(2, "nearest", name="up5")(l5)])
    t3 = layers.Add(name="td3")([l3, Resize(2, "nearest", name="up4")(t4)])
    return [_sep(t3, channels, "p3"), _sep(t4, channels, "p4"), _sep(l5, channels, "p5")]


def _tower(c: int, prefix: str) -> list:
    return [
        layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{prefix}_dw1"),
        layers.Conv2D(c, 1, activation="relu", name=f"{prefix}_pw1"),
        layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{prefix}_dw2"),
        layers.Conv2D(c, 1, activation="relu", name=f"{prefix}_pw2"),
    ]


def _run(tower: list, x):
    for layer in tower:
        x = layer(x)
    return x


class _DetectionHead:
    """Anchor-free head (FCOS-style) whose layers are shared across pyramid levels: one tower for scores,
    boxes and mask coefficients (``shared``), or a second tower for boxes and coefficients (``decoupled``)."""

    def __init__(self, cfg: ModelConfig):
        c = cfg.head_channels
        self.tower = _tower(c, "det")
        self.reg_tower = _tower(c, "det_reg") if cfg.det_head == "decoupled" else None
        # A prior of 1% foreground keeps the early focal loss from drowning in negatives.
        prior = keras.initializers.Constant(-4.6)
        self.cls = layers.Conv2D(cfg.num_classes, 1, activation="sigmoid", bias_initializer=prior, name="det_cls")
        self.box = layers.Conv2D(4, 1, activation="relu", bias_initializer=keras.initializers.Constant(1.0), name="det_box")
        self.coeff = layers.Conv2D(cfg.num_protos, 1, activation="tanh", name="det_coeff")

    def __call__(self, x):
        h = _run(self.tower, x)
        r = h if self.reg_tower is None else _run(self.reg_tower, x)
        return self.cls(h), self.box(r), self.coeff(r)


def bottom_up(feats, channels: int):
    """PANet's bottom-up path over P3, P4, P5: each level adds the finer level's output, brought down by a
    strided depthwise-separable convolution, so the coarse levels that take large objects see fine detail."""
    out = [feats[0]]
    for i, f in enumerate(feats[1:], start=1):
        down = _conv_bn(_dw_bn(out[-1], 2, name=f"det_down{i + 2}"), channels, name=f"det_down{i + 2}_pw")
        out.append(_sep(layers.Add(name=f"det_pan{i + 3}")([f, down]), channels, f"det_n{i + 3}"))
    return out


def _flatten_levels(tensors, name: str):
    flat = [layers.Reshape((t.shape[1] * t.shape[2], t.shape[3]), name=f"{name}_flat{i}")(t) for i, t in enumerate(tensors)]
    return layers.Concatenate(axis=1, name=name)(flat) if len(flat) > 1 else layers.Identity(name=name)(flat[0])


def build_ocrnet(cfg: ModelConfig = ModelConfig(), batch_size: int | None = None, training_outputs: bool = False):
    """Build the shared-feature model.

    Args:
        cfg: Architecture.
        batch_size: ``1`` for export (static shapes), ``None`` for training.
        training_outputs: Add the training-only output ``seg_coarse`` (OCR's coarse logits).

    Returns:
        A functional ``keras.Model`` taking float RGB pixels in [0, 255] of shape
        (B, H, W, 3) and returning a dict keyed by the names of :mod:`runtime.contract`.
    """
    w, h = cfg.input_wh
    inputs = keras.Input((h, w, 3), batch_size=batch_size, name="image")
    x = PixelRescale(name="rescale")(inputs)
    c2, c3, c4, c5 = build_backbone(x, cfg.width, cfg.backbone, cfg.channel_divisor)
    pyramid = build_neck(c3, c4, c5, cfg.neck_channels)

    d = cfg.det_channels
    det_feats = [ChannelSlice(0, d, name=f"split_det{i}")(p) for i, p in enumerate(pyramid)]
    if cfg.det_head == "decoupled" and ("detect" in cfg.tasks or "instance" in cfg.tasks):
        det_feats = bottom_up(det_feats, d)
    seg_feats = [ChannelSlice(d, cfg.neck_channels, name=f"split_seg{i}")(p) for i, p in enumerate(pyramid)]

    outputs = {}
    wants_det = "detect" in cfg.tasks or "instance" in cfg.tasks
    wants_seg = "semantic" in cfg.tasks or "instance" in cfg.tasks
    if wants_det:
        head = _DetectionHead(cfg)
        per_level = [head(f) for f in det_feats]
        outputs[contract.DET_SCORES] = _flatten_levels([p[0] for p in per_level], contract.DET_SCORES)
        outputs[contract.DET_BOXES] = _flatten_levels([p[1] for p in per_level], contract.DET_BOXES)
        if "instance" in cfg.tasks:
            outputs[contract.DET_COEFFS] = _flatten_levels([p[2] for p in per_level], contract.DET_COEFFS)

    if wants_seg:
        sc = cfg.seg_channels
        s3, s4, s5 = seg_feats
        merged = layers.Add(name="seg_merge")(
            [s3, Resize(2, name="seg_up4")(s4), Resize(4, name="seg_up5")(s5)]
        )
        merged = _sep(merged, sc, "seg_s8")
        coarse = layers.Conv2D(len(cfg.semantic_classes), 1, name=AUX_COARSE)(merged)
        if cfg.use_ocr:
            z = ObjectContext(cfg.ocr_channels, sc, name="ocr")([merged, coarse])
        else:
            z = _conv_bn(merged, sc, name="no_ocr")
        detail = _conv_bn(c2, _ch(sc // 2), name="seg_lat2")
        z = layers.Concatenate(name="seg_cat4")([Resize(2, name="seg_up8")(z), detail])
        z = _sep(z, sc, "seg_s4")
        if "semantic" in cfg.tasks:
            outputs[contract.SEG_LOGITS] = layers.Conv2D(len(cfg.semantic_classes), 1, name=contract.SEG_LOGITS)(z)
            if training_outputs and cfg.use_ocr:
                outputs[AUX_COARSE] = coarse
        if "instance" in cfg.tasks:
            p = _sep(z, sc, "proto_s4")
            outputs[contract.MASK_PROTOS] = layers.Conv2D(cfg.num_protos, 1, name=contract.MASK_PROTOS)(p)

    name = "ocrnet" if set(cfg.tasks) == {"detect", "semantic", "instance"} else "ocrnet_" + "_".join(cfg.tasks)
    return keras.Model(inputs, outputs, name=name)


def output_spec(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Expected output shapes (batch 1) of the model built from ``cfg``, keyed by output name."""
    n, k = contract.num_locations(cfg.input_size, cfg.strides), cfg.num_protos
    gw, gh = (v // contract.SEG_STRIDE for v in cfg.input_wh)
    spec = {
        contract.DET_SCORES: (1, n, cfg.num_classes),
        contract.DET_BOXES: (1, n, 4),
        contract.DET_COEFFS: (1, n, k),
        contract.SEG_LOGITS: (1, gh, gw, len(cfg.semantic_classes)),
        contract.MASK_PROTOS: (1, gh, gw, k),
    }
    keep = set()
    if "detect" in cfg.tasks or "instance" in cfg.tasks:
        keep |= {contract.DET_SCORES, contract.DET_BOXES}
    if "semantic" in cfg.tasks:
        keep.add(contract.SEG_LOGITS)
    if "instance" in cfg.tasks:
        keep |= {contract.DET_COEFFS, contract.MASK_PROTOS}
    return {name: shape for name, shape in spec.items() if name in keep}

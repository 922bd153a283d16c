"""Pretrained backbone weights from the files users have: Keras Applications' ImageNet weights, Keras
``.h5`` files of the standard model, and TFLite files that contain the same backbone (Coral's quantized
ImageNet classifiers, DeepLab segmenters).

TFLite files are read, not guessed at: every CONV_2D / DEPTHWISE_CONV_2D op of the file in graph order
is matched, by order and shape, to the convolutions of the Keras Applications architecture of the
chosen backbone and width; kernels are dequantized (per tensor or per channel, uint8 or int8) and
transposed (OHWI to HWIO; depthwise 1HWC to HWC1). These files have BatchNorm folded into each
convolution, so the BatchNorm after each convolution is set to the identity plus the file's bias
(gamma 1, beta = bias, mean 0, variance 1 - epsilon).

Fine-tuning keeps the BatchNorm layers of a pretrained backbone in inference mode (frozen), as Keras'
transfer-learning guide advises: their statistics (or, for a TFLite import, the identity and the folded
bias) stay as loaded, while every convolution trains, at ``TrainConfig.backbone_lr`` (``--backbone-lr``,
0.1) times the learning rate of the neck and heads, which start fresh: at the full rate their first,
noisy gradients wash out much of what the backbone learnt (``train.ScaledAdamW``).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ocrnet_edge.runtime.errors import EnvironmentMissing, InputError, ModelError

from .config import CHANNEL_DIVISORS, STANDARD_WIDTHS, ModelConfig
from .network import STAGE_ENDS, channel_rounding

CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")
BUNDLED = Path(__file__).resolve().parent / "weights"
"""Pretrained files that ship with the package (``model/weights/README.md`` says what and whence)."""
DEFAULT_START = "deeplabv3_mnv2_dm05_pascal_quant.tflite"
"""The bundled file ``train`` starts from on photographs when no backbone is chosen."""
ALL_WIDTHS = {"mobilenet_v2": (0.35, 0.5, 0.75, 1.0, 1.3, 1.4), "mobilenet_v1": (0.25, 0.5, 0.75, 1.0)}
"""Widths recognised in a file (so that a mismatch can be named), a superset of the trainable ones."""
LABEL = {"mobilenet_v2": "MobileNetV2", "mobilenet_v1": "MobileNetV1"}


def _app(backbone: str):
    import keras

    return {"mobilenet_v2": keras.applications.MobileNetV2, "mobilenet_v1": keras.applications.MobileNet}[backbone]


def keras_application(backbone: str, width: float, size: int = 224, include_top: bool = False, weights=None,
                      classes: int = 1000, divisor: int = 8):
    """The Keras Applications model of a standard backbone (``weights=None`` builds it offline; ``divisor``:
    the channel rounding, :func:`model.network.channel_rounding`)."""
    with warnings.catch_warnings(), channel_rounding(divisor):
        warnings.simplefilter("ignore")
        return _app(backbone)(input_shape=(size, size, 3), alpha=width, include_top=include_top, weights=weights,
                              classes=classes)


@lru_cache(maxsize=16)
def conv_plan(backbone: str, width: float, full: bool = False,
              divisor: int = 8) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    """``(layer name, batchnorm name, Keras kernel shape)`` of the backbone's convolutions in graph order; up to
    the last stage end used as a feature (``full``: every convolution of the classifier's backbone)."""
    import keras

    net = keras_application(backbone, width, size=96, divisor=divisor)
    last = STAGE_ENDS[backbone][-1]
    plan = []
    names = [layer.name for layer in net.layers]
    stop = names.index(last)
    for i, layer in enumerate(net.layers):
        if not full and i > stop:
            break
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            bn = next(n for n in names[i + 1 :] if isinstance(net.get_layer(n), keras.layers.BatchNormalization))
            plan.append((layer.name, bn, tuple(int(d) for d in layer.kernel.shape)))
    return tuple(plan)


@dataclass(frozen=True)
class FileConv:
    """One convolution of a TFLite file, dequantized, in Keras' layout.

    Attributes:
        op: ``CONV_2D`` or ``DEPTHWISE_CONV_2D``.
        kernel: float32, HWIO (conv) or HWC1 (depthwise).
        bias: float32 (C_out,), zeros when the op has none.
    """

    op: str
    kernel: np.ndarray
    bias: np.ndarray


def _dequantize(arr: np.ndarray, q: dict) -> np.ndarray:
    scales = np.asarray(q.get("scales", []), np.float32)
    if arr.dtype == np.float32 or scales.size == 0:
        return arr.astype(np.float32)
    zps = np.asarray(q.get("zero_points", np.zeros_like(scales)), np.float32)
    shape = [1] * arr.ndim
    if scales.size > 1:
        shape[q.get("quantized_dimension", 0)] = scales.size
    return (arr.astype(np.float32) - zps.reshape(shape)) * scales.reshape(shape)


def read_tflite_convs(path: Path | str) -> list[FileConv]:
    """Every convolution of a TFLite file in graph order, dequantized into Keras' layout.

    Raises:
        InputError: The file is missing. ModelError: not a TFLite model, or truncated.
    """
    from ocrnet_edge.runtime.backends.cpu import interpreter_class
    from ocrnet_edge.runtime.modelfile import inspect_model

    path = Path(path)
    info = inspect_model(path)  # refuses missing, truncated and malformed files with one line
    interp_cls = interpreter_class()[0]
    module = __import__(interp_cls.__module__, fromlist=["OpResolverType"])
    try:
        # Without the default delegates: XNNPACK would take the constant tensors over and hide them.
        it = interp_cls(model_path=str(path),
                        experimental_op_resolver_type=module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        it.allocate_tensors()
    except (RuntimeError, ValueError) as e:
        raise ModelError(f"{path}: LiteRT cannot load this model ({str(e).splitlines()[0][:160]})") from None
    details = {d["index"]: d for d in it.get_tensor_details()}
    out = []
    for op in info.ops:
        if op.name not in CONV_OPS:
            continue
        w_idx = op.inputs[1]
        d = details[w_idx]
        w = _dequantize(it.get_tensor(w_idx), d["quantization_parameters"])
        if op.name == "CONV_2D":
            kernel = np.transpose(w, (1, 2, 3, 0))  # OHWI -> HWIO
        else:
            kernel = w[0][..., None]  # 1HWC -> HWC1 (depth multiplier 1)
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            b = details[op.inputs[2]]
            bias = _dequantize(it.get_tensor(op.inputs[2]), b["quantization_parameters"])
        else:
            bias = np.zeros(kernel.shape[-1] if op.name == "CONV_2D" else kernel.shape[2], np.float32)
        out.append(FileConv(op.name, kernel, bias.astype(np.float32)))
    return out


def identify(convs: list[FileConv]) -> tuple[str, float, int] | None:
    """The standard backbone, width and channel divisor a file's first convolutions match, or None (Keras'
    rounding first: at width 1 both layouts are the same)."""
    shapes = [c.kernel.shape for c in convs]
    for backbone, widths in ALL_WIDTHS.items():
        for divisor in CHANNEL_DIVISORS if backbone == "mobilenet_v2" else (8,):
            for w in widths:
                plan = conv_plan(backbone, w, divisor=divisor)
                if len(shapes) >= len(plan) and all(tuple(s) == p[2] for s, p in zip(shapes, plan)):
                    return backbone, w, divisor
    return None


def file_backbone(path: Path | str) -> tuple[str, float, int] | None:
    """``(backbone, width, channel divisor)`` of the standard backbone a TFLite file holds, or None."""
    return identify(read_tflite_convs(path))


def _describe(found: tuple[str, float, int] | None) -> str:
    if found is None:
        return "no MobileNetV1/V2 backbone"
    return f"{LABEL[found[0]]} width {found[1]:g}" + (" in TF-Slim's channel layout" if found[2] != 8 else "")


def tflite_backbone_weights(path: Path | str, backbone: str, width: float,
                            full: bool = False, divisor: int = 8) -> tuple[dict[str, list[np.ndarray]], int]:
    """Weights for the Keras layers of ``backbone`` at ``width`` from a TFLite file: ``({layer: weights}, n)``
    with ``n`` the file's convolutions used (BatchNorm layers as the identity plus the folded bias).

    Raises:
        InputError: The file holds another backbone or width (named, e.g. "MobileNetV2 width 0.5,
            expected 1.0").
    """
    convs = read_tflite_convs(path)
    plan = conv_plan(backbone, width, full, divisor)
    shapes_ok = len(convs) >= len(plan) and all(c.kernel.shape == p[2] for c, p in zip(convs, plan))
    if not shapes_ok:
        found = identify(convs)
        what = _describe(found)
        if found is None:
            bad = next((i for i, (c, p) in enumerate(zip(convs, plan)) if c.kernel.shape != p[2]), min(len(convs),
                                                                                                         len(plan)))
            what += (f" of Keras Applications' channel plan (first difference at convolution {bad}, "
                     f"{plan[bad][0]}: {convs[bad].kernel.shape if bad < len(convs) else 'none'} in the file, "
                     f"{plan[bad][2]} expected)" if bad < len(plan) else "")
        raise InputError(f"{path}: holds {what}, expected {LABEL[backbone]} width {width:g} "
                         f"(--backbone {backbone} --width {width:g}); {len(convs)} convolutions in the file")
    weights: dict[str, list[np.ndarray]] = {}
    for c, (name, bn, _) in zip(convs, plan):
        weights[name] = [c.kernel]
        ch = c.bias.shape[0]
        eps = 1e-3  # Keras Applications' BatchNormalization epsilon
        weights[bn] = [np.ones(ch, np.float32), c.bias, np.zeros(ch, np.float32), np.full(ch, 1.0 - eps, np.float32)]
    return weights, len(plan)


def _keras_file_weights(path: Path, backbone: str, width: float) -> dict[str, list[np.ndarray]]:
    """Weights by layer name from a Keras ``.h5`` / ``.weights.h5`` file of the standard model."""
    errors = []
    for include_top, classes in ((False, 1000), (True, 1000), (True, 1001)):
        net = keras_application(backbone, width, include_top=include_top, classes=classes)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                net.load_weights(str(path))
        except Exception as e:  # Keras raises ValueError, KeyError, OSError... on a file that does not fit
            errors.append(str(e).splitlines()[0][:160] if str(e) else type(e).__name__)
            continue
        return {layer.name: layer.get_weights() for layer in net.layers if layer.get_weights()}
    found = _h5_first_conv_width(path, backbone)
    what = f"its first convolution has {found} filters, {LABEL[backbone]} width {width:g} has " \
           f"{conv_plan(backbone, width)[0][2][-1]}" if found else f"Keras: {errors[0]}"
    raise InputError(f"{path}: not the Keras {LABEL[backbone]} width {width:g} ({what})")


def _h5_first_conv_width(path: Path, backbone: str) -> int | None:
    try:
        import h5py

        with h5py.File(path, "r") as f:
            found = []
            f.visititems(lambda n, o: found.append(o.shape) if hasattr(o, "shape") and len(o.shape) == 4 else None)
        return int(found[0][-1]) if found else None
    except Exception:
        return None


def imagenet_file(backbone: str, width: float, size: int = 224) -> str:
    """The file name Keras Applications fetches for a backbone's ImageNet weights without the top."""
    if backbone == "mobilenet_v2":
        return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(width)}_{size}_no_top.h5"
    text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}[float(width)]
    return f"mobilenet_{text}_{size}_tf_no_top.h5"


def keras_cache() -> Path:
    """Where Keras keeps fetched weights (``$KERAS_HOME/models``, read by Keras when it is imported)."""
    import os

    try:
        from keras.src.backend.config import keras_home

        return Path(keras_home()) / "models"
    except ImportError:  # a Keras without the accessor: its documented default
        return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def _imagenet_weights(backbone: str, width: float) -> tuple[dict[str, list[np.ndarray]], str]:
    cache = keras_cache()
    name = imagenet_file(backbone, width)
    try:
        net = keras_application(backbone, width, weights="imagenet")
    except Exception as e:  # urllib's URLError, OSError, ValueError: Keras wraps the fetch failure variously
        raise EnvironmentMissing(
            f"--pretrained imagenet: Keras could not fetch {name} ({type(e).__name__}; offline?); download it from "
            f"https://storage.googleapis.com/tensorflow/keras-applications/ and put it in {cache}/, or pass "
            "--pretrained FILE"
        ) from None
    return {layer.name: layer.get_weights() for layer in net.layers if layer.get_weights()}, str(cache / name)


def _backbone_layer_names(cfg: ModelConfig) -> set[str]:
    plan = conv_plan(cfg.backbone, cfg.width, divisor=cfg.channel_divisor)
    return {n for n, _, _ in plan} | {bn for _, bn, _ in plan}


def backbone_variables(net, cfg: ModelConfig) -> list:
    """The trainable variables of ``net``'s standard backbone (its convolutions; the BatchNorm layers of
    a pretrained backbone are frozen): those that fine-tune at ``TrainConfig.backbone_lr`` times the rate."""
    names = _backbone_layer_names(cfg)
    return [v for layer in net.layers if layer.name in names for v in layer.trainable_weights]


def resolve_source(source: str) -> str:
    """``--pretrained`` as given, with a bundled file's bare name (:data:`BUNDLED`) made its path and ``none``
    made empty (no pretrained start)."""
    if source.lower() in ("", "none"):
        return ""
    if source == "imagenet" or Path(source).exists() or Path(source).name != source:
        return source
    bundled = BUNDLED / source
    return str(bundled) if bundled.is_file() else source


def model_for_pretrained(cfg: ModelConfig, source: str) -> tuple[ModelConfig, str]:
    """The model configuration a ``.tflite`` pretrained file asks for, and a line saying what changed
    (empty when nothing did).

    The file is read, not named: the backbone, width and channel layout of the MobileNet it holds. With
    the compact backbone (the default, which has no published weights) the file's backbone is taken; with
    a standard backbone of the same width, only the channel layout (TF-Slim's DeepLab files round
    channels differently from Keras'). Anything else is left to :func:`load_pretrained` to refuse by name.
    """
    path = Path(source)
    if source == "imagenet" or path.suffix != ".tflite" or not path.is_file():
        return cfg, ""
    found = file_backbone(path)
    if found is None:
        return cfg, ""
    backbone, width, divisor = found
    if cfg.backbone == "compact":
        line = (f"--pretrained: {path.name} holds {_describe(found)}; the model takes that backbone "
                f"(--backbone {backbone} --width {width:g})")
        return dataclasses.replace(cfg, backbone=backbone, width=width, channel_divisor=divisor), line
    if (cfg.backbone, float(cfg.width)) == (backbone, float(width)) and cfg.channel_divisor != divisor:
        return dataclasses.replace(cfg, channel_divisor=divisor), ""
    return cfg, ""


def load_pretrained(net, cfg: ModelConfig, source: str) -> tuple[str, dict]:
    """Load backbone weights into ``net`` (the model built from ``cfg``) and freeze its BatchNorm layers.

    Args:
        net: The inference model (or the trainer's ``net``).
        cfg: Its configuration (backbone and width).
        source: ``imagenet``, a Keras ``.h5`` file, or a ``.tflite`` file.

    Returns:
        The line that says what was loaded, and a JSON-ready record of the source.

    Raises:
        InputError: A missing file, not a model, another architecture or width (named); ``--pretrained``
            with the compact backbone. EnvironmentMissing: ImageNet weights cannot be fetched.
    """
    import keras

    if cfg.backbone not in STANDARD_WIDTHS:
        raise InputError(f"--pretrained needs a standard backbone (--backbone {' or '.join(STANDARD_WIDTHS)}); "
                         f"the {cfg.backbone} backbone has no published weights")
    if source == "imagenet":
        weights, where = _imagenet_weights(cfg.backbone, cfg.width)
        kind = "Keras Applications ImageNet weights"
    else:
        path = Path(source)
        if not path.is_file():
            shipped = ", ".join(sorted(p.name for p in BUNDLED.glob("*.tflite")))
            raise InputError(f"{path}: --pretrained file not found (give a path, imagenet, none, or a bundled "
                             f"file's name: {shipped})")
        where = str(path)
        if path.suffix == ".tflite":
            weights, _ = tflite_backbone_weights(path, cfg.backbone, cfg.width, divisor=cfg.channel_divisor)
            kind = "TFLite file (dequantized, BatchNorm folded)"
        elif path.suffix == ".h5":
            weights = _keras_file_weights(path, cfg.backbone, cfg.width)
            kind = "Keras weights file"
        else:
            raise InputError(f"{path}: --pretrained takes imagenet, a Keras .h5 / .weights.h5 file or a .tflite file")
    backbone_layers = _backbone_layer_names(cfg)
    loaded = 0
    for layer in net.layers:
        if layer.name not in backbone_layers:
            continue
        w = weights.get(layer.name)
        mine = layer.get_weights()
        if w is None or len(w) != len(mine) or any(a.shape != b.shape for a, b in zip(w, mine)):
            raise InputError(f"{where}: no weights of the right shape for layer {layer.name} "
                             f"({LABEL[cfg.backbone]} width {cfg.width:g})")
        layer.set_weights(w)
        loaded += len(w)
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # inference mode while fine-tuning (see the module docstring)
    convs = len(conv_plan(cfg.backbone, cfg.width, divisor=cfg.channel_divisor))
    line = (f"--pretrained: loaded {loaded} backbone tensors ({convs} convolutions of {LABEL[cfg.backbone]} "
            f"width {cfg.width:g}) from {where} ({kind}); its BatchNorm layers stay frozen")
    return line, {"source": source, "file": str(Path(where).resolve()), "kind": kind, "tensors": loaded,
                  "backbone": cfg.backbone, "width": cfg.width}


def rebuild_classifier(path: Path | str, backbone: str, width: float, size: int):
    """The TFLite classifier rebuilt in float Keras from its imported weights: the whole backbone, global
    average pooling and the file's logits convolution (as a Dense layer). The proof that the import is exact:
    it must rank the classes as the file does.

    Returns:
        A ``keras.Model`` taking (1, size, size, 3) pixels in [-1, 1] and returning (1, classes) logits.
    """
    import keras

    weights, n = tflite_backbone_weights(path, backbone, width, full=True)
    convs = read_tflite_convs(path)
    logits = convs[n]
    base = keras_application(backbone, width, size=size)
    for layer in base.layers:
        if layer.name in weights:
            layer.set_weights(weights[layer.name])
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    k = logits.kernel.reshape(-1, logits.kernel.shape[-1])
    dense = keras.layers.Dense(k.shape[-1], name="logits")
    y = dense(x)
    dense.set_weights([k, logits.bias])
    return keras.Model(base.input, y)

"""Models for the benchmark's comparisons, built from the same architecture code and converted the same way.

- Three single-task models (detection, semantic, instance), each with its own backbone: the
  fused model's claim is that sharing features saves compute and memory against running these.
- A large int8 convolution: the multiply-accumulate rate this runtime reaches on this machine, against
  which a model's achieved rate is a fraction.

Latency and memory do not depend on the weights' values; the single-task models take the trained fused
model's weights by layer name (so their quantization ranges are realistic) and are calibrated on the same
images. Their accuracy is not what is compared.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ocrnet_edge.model.config import ModelConfig
from ocrnet_edge.model.network import build_ocrnet
from ocrnet_edge.runtime.contract import InputSize, size_text

from . import calibration
from .card import write_with_card
from .export import keras_to_tflite

SINGLE_TASKS = ("detect", "semantic", "instance")


def convert_single_task_models(cfg: ModelConfig, calib: Path, out: Path, calib_images: int = 50,
                               weights_from=None) -> dict[str, Path]:
    """Convert one model per task (each with its own backbone) to full int8 with a card.

    Args:
        cfg: The fused model's architecture; each single-task model keeps it but for ``tasks``.
        calib: Calibration images.
        out: Output folder.
        calib_images: Calibration images used.
        weights_from: A trained fused model whose weights are copied by layer name (every layer of a
            single-task model exists in the fused one), so activations and quantization ranges are
            realistic; freshly initialised weights give degenerate ranges that XNNPACK may refuse.

    Returns:
        Task name to ``.tflite`` path.
    """
    cal = calibration.scan(calib, min_images=1)
    files = cal.files[:calib_images]
    out.mkdir(parents=True, exist_ok=True)
    trained = {layer.name: layer for layer in weights_from.layers} if weights_from is not None else {}
    paths = {}
    for task in SINGLE_TASKS:
        tcfg = dataclasses.replace(cfg, tasks=(task,))
        net = build_ocrnet(tcfg)
        if trained:
            for layer in net.layers:
                if layer.weights and layer.name in trained:
                    layer.set_weights(trained[layer.name].get_weights())
        size = tcfg.input_size
        data = keras_to_tflite(net, tcfg, lambda size=size: ([x] for x in calibration.iter_preprocessed(files, size)))
        path = out / f"single_{task}_int8.tflite"
        write_with_card(data, tcfg, f"single_{task}", None, path)
        paths[task] = path
    return paths


def peak_conv_model(out: Path, size: int = 56, channels: int = 256) -> tuple[Path, int]:
    """A single large int8 3x3 convolution, for the runtime's reachable MAC rate.

    Returns:
        The ``.tflite`` path and its MACs per invoke.
    """
    import keras
    import tensorflow as tf

    inp = keras.Input((size, size, channels), batch_size=1)
    x = keras.layers.Conv2D(channels, 3, padding="same", activation="relu")(inp)
    model = keras.Model(inp, x)
    rng = np.random.default_rng(0)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([rng.uniform(0, 1, (1, size, size, channels)).astype(np.float32)]
                                           for _ in range(8))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    path = out / "peak_conv_int8.tflite"
    path.write_bytes(conv.convert())
    return path, size * size * channels * channels * 9


def convert_sizes(model_path: Path, sizes: list[InputSize], calib: Path | None, out: Path, calib_images: int = 100,
                  float32: bool = False) -> list[Path]:
    """A trained model converted at each input size (full int8, card embedded; no fidelity gate), for a
    benchmark's size sweep. With ``float32``, the float build at each size too. ``calib`` None: the
    model's own calibration images (see :func:`calibration.for_model`)."""
    from ocrnet_edge.model.io import load_data_record, load_model, load_model_config

    net, base = load_model(model_path), load_model_config(model_path)
    files = calibration.for_model(model_path, base, load_data_record(model_path), calib, 1)[0].files[:calib_images]
    out.mkdir(parents=True, exist_ok=True)
    name = model_path.parent.name if model_path.stem == "model" else model_path.stem
    paths = []
    for size in sizes:
        cfg = base.with_size(size)
        builds = [("int8", lambda s=size: ([x] for x in calibration.iter_preprocessed(files, s)))]
        if float32:
            builds.append(("float32", None))
        for kind, rep in builds:
            data = keras_to_tflite(net, cfg, rep)
            path = out / f"{name}_{size_text(size)}_{kind}.tflite"
            write_with_card(data, cfg, f"{name}_{size_text(size)}", model_path, path)
            paths.append(path)
    return paths

"""Keras to TFLite: full int8 with all heads fused in one graph, or float32 for comparisons.

The working path on TensorFlow 2.21 / Keras 3 (measured, see FACTS): rebuild the model with a static
batch of 1 at the export size, copy the weights, export a SavedModel whose ``serving_default``
endpoint calls the model with ``training=False``, then convert from the SavedModel so the signature
keeps the model's output names. Outputs are then bound by name, never by index.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ocrnet_edge.model.config import ModelConfig
from ocrnet_edge.model.network import build_ocrnet
from ocrnet_edge.runtime.contract import InputSize, input_wh
from ocrnet_edge.runtime.errors import ModelError

SIGNATURE_KEY = "serving_default"
INPUT_NAME = "image"


def export_model(model, cfg: ModelConfig):
    """A copy of ``model`` with a static batch of 1 at ``cfg.input_size`` (weights shared by value).

    Raises:
        ModelError: The weights do not fit the architecture ``cfg`` describes (a configuration written by another
            version, or edited by hand).
    """
    static = build_ocrnet(cfg, batch_size=1)
    weights = model.get_weights()
    mine = static.weights  # the variables' shapes; no copy of their values
    if len(weights) != len(mine) or any(a.shape != tuple(v.shape) for a, v in zip(weights, mine)):
        raise ModelError(f"the model's weights ({len(weights)} arrays) do not fit the architecture its saved "
                         f"configuration describes ({len(mine)} arrays): convert it with the ocrnet-edge version that "
                         "trained it, or train it again")
    static.set_weights(weights)
    return static


def saved_model(model, size: InputSize, workdir: Path) -> Path:
    """Write ``model`` as a SavedModel whose ``serving_default`` takes a (1, H, W, 3) float32 image, for an
    input of ``size`` (a side, or ``(width, height)``)."""
    import keras
    import tensorflow as tf

    w, h = input_wh(size)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=SIGNATURE_KEY,
        fn=lambda image: model(image, training=False),
        input_signature=[tf.TensorSpec((1, h, w, 3), tf.float32, name=INPUT_NAME)],
    )
    path = workdir / "saved_model"
    archive.write_out(str(path), verbose=False)
    return path


def tflite_converter(saved: Path, representative: Callable[[], Iterable[list[np.ndarray]]] | None = None):
    """The one converter set-up: with ``representative``, full int8 (int8 kernels only, uint8 image input,
    int8 outputs), else float32. The shipped file and the fidelity debugger both use it."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=[SIGNATURE_KEY])
    if representative is not None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.int8
    return conv


@contextmanager
def exported(model, cfg: ModelConfig) -> Iterator[Path]:
    """``model`` rebuilt with batch 1 at ``cfg.input_size`` and written as a SavedModel in a temporary folder
    (removed on exit); yields the SavedModel's path."""
    workdir = Path(tempfile.mkdtemp(prefix="ocrnet-export-"))
    try:
        yield saved_model(export_model(model, cfg), cfg.input_size, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def keras_to_tflite(
    model,
    cfg: ModelConfig,
    representative: Callable[[], Iterable[list[np.ndarray]]] | None = None,
) -> bytes:
    """Convert a Keras model to a TFLite flatbuffer.

    Args:
        model: The trained model (any batch size; it is rebuilt with batch 1 at ``cfg.input_size``).
        cfg: Architecture and export size.
        representative: Calibration samples, each ``[(1, S, S, 3) float32 pixels]``; with it the
            result is full int8 (uint8 image input, int8 outputs), without it float32.

    Returns:
        The ``.tflite`` bytes.
    """
    from ocrnet_edge.runtime.quiet import native_stderr_quiet

    with exported(model, cfg) as saved, native_stderr_quiet():  # the converter's "fully_quantize: 0, ..." line
        return tflite_converter(saved, representative).convert()


def count_keras_convolutions(model) -> int:
    """Convolutions one forward pass of ``model`` applies (a layer shared over pyramid levels or OCR
    regions counts once per application), counted by running it eagerly once."""
    import keras

    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
    convs = [layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, kinds)]
    calls = [0]
    originals = {}
    for layer in convs:
        originals[id(layer)] = layer.call

        def counted(*args, _call=layer.call, **kwargs):
            calls[0] += 1
            return _call(*args, **kwargs)

        layer.call = counted
    try:
        shape = (1, *model.input_shape[1:])
        model(np.zeros(shape, np.float32), training=False)
    finally:
        for layer in convs:
            layer.call = originals[id(layer)]
    return calls[0]


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ and Python logging to errors."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)

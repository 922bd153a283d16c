"""The shared-feature model: sizes, output contract, the channel split, Edge TPU-friendly layers."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from ocrnet_edge.model.config import ModelConfig
from ocrnet_edge.model.io import load_model
from ocrnet_edge.model.network import build_ocrnet, output_spec
from ocrnet_edge.runtime import contract
from ocrnet_edge.runtime.errors import InputError, ModelError

from .conftest import SMALL


@pytest.mark.parametrize("size", [256, 320, 416])
def test_builds_at_export_sizes_and_matches_contract(size):
    cfg = ModelConfig(input_size=size)
    net = build_ocrnet(cfg, batch_size=1)
    out = net(np.zeros((1, size, size, 3), np.float32))
    spec = output_spec(cfg)
    assert set(out) == set(contract.OUTPUT_NAMES) == set(spec)
    for name, shape in spec.items():
        assert tuple(out[name].shape) == shape, name
    assert spec[contract.DET_SCORES][1] == contract.num_locations(size)


def test_output_ranges():
    net = build_ocrnet(ModelConfig(input_size=SMALL), batch_size=1)
    x = np.random.default_rng(0).uniform(0, 255, (1, SMALL, SMALL, 3)).astype(np.float32)
    out = {k: np.asarray(v) for k, v in net(x).items()}
    assert 0 <= out[contract.DET_SCORES].min() and out[contract.DET_SCORES].max() <= 1
    assert out[contract.DET_BOXES].min() >= 0
    assert -1 <= out[contract.DET_COEFFS].min() and out[contract.DET_COEFFS].max() <= 1


def test_quarter_of_shared_channels_feed_detection():
    cfg = ModelConfig(input_size=SMALL, neck_channels=64)
    net = build_ocrnet(cfg, batch_size=1)
    det = [layer for layer in net.layers if layer.name.startswith("split_det")]
    seg = [layer for layer in net.layers if layer.name.startswith("split_seg")]
    assert len(det) == len(seg) == 3
    assert {(layer.start, layer.stop) for layer in det} == {(0, 16)}
    assert {(layer.start, layer.stop) for layer in seg} == {(16, 64)}
    assert ModelConfig(neck_channels=64, det_fraction=0.5).det_channels == 32


def _ancestors(net: keras.Model, name: str) -> set[str]:
    """Names of the layers whose outputs reach layer ``name``'s calls in the functional graph, call by call (a
    layer shared over the pyramid's levels leads back only to the level each call reads)."""
    seen, names, todo = set(), set(), list(net.get_layer(name)._inbound_nodes)
    while todo:
        for t in todo.pop().input_tensors:
            op, node_index, _ = t._keras_history
            if (id(op), node_index) not in seen:
                seen.add((id(op), node_index))
                names.add(op.name)
                todo.append(op._inbound_nodes[node_index])
    return names


@pytest.mark.parametrize("tasks", [("detect",), ("detect", "semantic", "instance")])
def test_decoupled_head_brings_fine_detail_to_the_coarse_level_and_boxes_apart(tasks):
    cfg = ModelConfig(input_size=SMALL, neck_channels=64, tasks=tasks)
    shared = build_ocrnet(cfg, batch_size=1)
    net = build_ocrnet(ModelConfig(**{**cfg.__dict__, "det_head": "decoupled"}), batch_size=1)
    # The quarter still feeds detection, and the outputs keep their shapes.
    det = [layer for layer in net.layers if layer.name.startswith("split_det")]
    assert {(layer.start, layer.stop) for layer in det} == {(0, 16)}
    assert {k: tuple(v.shape) for k, v in net.output.items()} == {k: tuple(v.shape) for k, v in shared.output.items()}
    # Bottom-up path: the coarsest level's boxes (P5, flattened last) see the finest level's detection slice.
    p5 = f"{contract.DET_BOXES}_flat2"
    assert "split_det0" in _ancestors(net, p5) and "split_det0" not in _ancestors(shared, p5)
    assert "split_seg0" not in _ancestors(net, p5), "detection reads only its quarter"
    # Decoupled: boxes come from a tower of their own, scores from the other.
    assert "det_reg_pw2" in _ancestors(net, "det_box") and "det_pw2" not in _ancestors(net, "det_box")
    assert not any(n.startswith("det_reg") for n in _ancestors(net, "det_cls"))
    if "instance" in tasks:
        assert "det_reg_pw2" in _ancestors(net, "det_coeff")


def test_bad_det_head():
    with pytest.raises(InputError, match="det_head"):
        ModelConfig(det_head="coupled")


@pytest.mark.parametrize("det_head", ["shared", "decoupled"])
def test_only_edgetpu_friendly_layers(det_head):
    net = build_ocrnet(ModelConfig(input_size=SMALL, det_head=det_head), batch_size=1)
    banned = (keras.layers.UpSampling2D, keras.layers.Resizing, keras.layers.Rescaling, keras.layers.Lambda,
              keras.layers.Softmax)
    for layer in net._flatten_layers(include_self=False):
        assert not isinstance(layer, banned), layer.name


def test_single_task_variants():
    for tasks, names in [
        (("detect",), {contract.DET_SCORES, contract.DET_BOXES}),
        (("semantic",), {contract.SEG_LOGITS}),
        (("instance",), {contract.DET_SCORES, contract.DET_BOXES, contract.DET_COEFFS, contract.MASK_PROTOS}),
    ]:
        cfg = ModelConfig(input_size=SMALL, tasks=tasks)
        assert set(build_ocrnet(cfg, batch_size=1).output_names) == names == set(output_spec(cfg))


def test_ocr_ablation_changes_only_the_semantic_branch():
    with_ocr = build_ocrnet(ModelConfig(input_size=SMALL))
    without = build_ocrnet(ModelConfig(input_size=SMALL, use_ocr=False))
    assert any(layer.name == "ocr" for layer in with_ocr.layers)
    assert not any(layer.name == "ocr" for layer in without.layers)
    assert set(with_ocr.output_names) == set(without.output_names)


def test_save_and_load_in_safe_mode(tmp_path):
    net = build_ocrnet(ModelConfig(input_size=SMALL), batch_size=1)
    path = tmp_path / "m.keras"
    net.save(path)
    again = load_model(path)
    x = np.full((1, SMALL, SMALL, 3), 100, np.float32)
    a, b = net(x), again(x)
    for k in a:
        np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), atol=1e-5)


def test_batchnorm_trains_in_one_fused_kernel_with_keras_results():
    """The model's BatchNorm layers train through TensorFlow's fused kernel (a quarter of a CPU training step's
    kernel time went to Keras' separate ops: the moments, a multiply, an add, and their gradients) and give Keras'
    results: outputs, gradients and moving statistics; inference keeps Keras' ops, so the exported graph is the same."""
    import tensorflow as tf

    from ocrnet_edge.model.layers import FusedBatchNorm

    net = build_ocrnet(ModelConfig(input_size=SMALL))
    ours = [layer for layer in net._flatten_layers(include_self=False) if isinstance(layer, FusedBatchNorm)]
    assert len(ours) >= 10

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(2.0, 3.0, (4, 10, 12, 8)).astype(np.float32))
    w = tf.constant(rng.normal(size=(4, 10, 12, 8)).astype(np.float32))
    results = []
    for layer in (keras.layers.BatchNormalization(momentum=0.9), FusedBatchNorm(momentum=0.9)):
        layer.build(x.shape)
        layer.gamma.assign(rng.normal(1.0, 0.2, 8).astype(np.float32) if not results else results[0][0])
        layer.beta.assign(np.linspace(-0.3, 0.3, 8, dtype=np.float32))
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) * w)
        grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
        results.append([layer.gamma.numpy(), loss.numpy(), *(g.numpy() for g in grads), layer.moving_mean.numpy(),
                        layer.moving_variance.numpy(), layer(x, training=False).numpy()])
    for keras_value, fused_value in zip(*results, strict=True):
        np.testing.assert_allclose(fused_value, keras_value, rtol=1e-5, atol=1e-4)

    layer = FusedBatchNorm()
    layer.build((None, 10, 12, 8))
    spec = tf.TensorSpec((4, 10, 12, 8), tf.float32)
    train_ops = {op.type for op in tf.function(lambda t: layer(t, training=True)).get_concrete_function(spec).graph
                 .get_operations()}
    infer_ops = {op.type for op in tf.function(lambda t: layer(t, training=False)).get_concrete_function(spec).graph
                 .get_operations()}
    assert "FusedBatchNormV3" in train_ops and "Mean" not in train_ops
    assert "FusedBatchNormV3" not in infer_ops


def test_saving_and_loading_build_no_throwaway_layers(tmp_path, monkeypatch):
    """Keras caches its attribute skip-sets under a name it never reads (model.io.cache_keras_skipsets): without
    our cache every saved or loaded layer builds a plain Layer() to list attributes, thousands per save."""
    from keras.src.layers.layer import Layer

    from ocrnet_edge.model.io import save_model

    cfg = ModelConfig(input_size=SMALL)
    net = build_ocrnet(cfg, batch_size=1)
    built = []
    real_init = Layer.__init__

    def counting_init(self, *args, **kwargs):
        if type(self) is Layer:
            built.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(Layer, "__init__", counting_init)
    path = tmp_path / "m.keras"
    save_model(net, cfg, path)
    net.save_weights(tmp_path / "m.weights.h5")
    load_model(path)
    assert not built, f"{len(built)} throwaway Layer() built while saving and loading"


def test_load_model_bad_input(tmp_path):
    with pytest.raises(InputError, match="model file not found"):
        load_model(tmp_path / "missing.keras")
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="junk.keras: not a Keras model"):
        load_model(junk)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"input_size": 300}, "multiple of 32"), ({"det_fraction": 1.0}, "strictly between"),
     ({"tasks": ("pose",)}, "subset of")],
)
def test_bad_config(kwargs, match):
    with pytest.raises(InputError, match=match):
        ModelConfig(**kwargs)

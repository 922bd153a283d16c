"""Training runs on the Keras JAX backend too, and its weights load unchanged on the TensorFlow backend."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from .conftest import SMALL, TINY

pytest.importorskip("jax", reason="JAX is not installed (pip install jax)")


@pytest.mark.slow
@pytest.mark.long
def test_train_on_jax_and_load_weights_on_tensorflow(small_dataset, tmp_path):
    from ocrnet_edge.model.config import TrainConfig, to_dict

    cfg = TrainConfig(epochs=2, batch_size=4, val_images=0, model=TINY)
    code = f"""
import json, numpy as np, keras
from ocrnet_edge.model.config import train_config_from_dict
from ocrnet_edge.model.train import train
from ocrnet_edge.model.io import load_model
assert keras.backend.backend() == "jax"
cfg = train_config_from_dict(json.loads({json.dumps(json.dumps(to_dict(cfg)))}))
path = train({str(small_dataset)!r}, {str(tmp_path / "run")!r}, cfg, verbose=0)
net = load_model(path)
net.save_weights({str(tmp_path / "jax.weights.h5")!r})
x = np.full((1, {SMALL}, {SMALL}, 3), 90, np.float32)
np.save({str(tmp_path / "jax_out.npy")!r}, np.asarray(net(x, training=False)["seg_logits"]))
"""
    env = {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(rows) == 3  # header and two epochs

    from ocrnet_edge.model.network import build_ocrnet

    net = build_ocrnet(TINY)
    net.load_weights(tmp_path / "jax.weights.h5")
    x = np.full((1, SMALL, SMALL, 3), 90, np.float32)
    ours = np.asarray(net(x, training=False)["seg_logits"])
    np.testing.assert_allclose(ours, np.load(tmp_path / "jax_out.npy"), rtol=1e-4, atol=1e-4)


def test_optimizer_with_slow_backbone_and_average_steps_on_jax():
    """The fine-tuning optimizer (a slower backbone, a moving average) takes a jitted JAX step: JAX donates
    every variable's buffer to the step, so no two variables may hold one buffer. Both failed before: the
    backbone's variables, kept as a list on the optimizer, became its own variables too, and each average
    started as the very array of its weight ("Attempt to donate the same buffer twice"). A time limit's moved
    end of the learning-rate decay reaches the jitted step."""
    code = """
import keras, numpy as np
from ocrnet_edge.model.train import ScaledAdamW
net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="backbone"), keras.layers.Dense(1)])
backbone = net.get_layer("backbone").trainable_variables
opt = ScaledAdamW(scaled=backbone, scale=0.1, ema_decay=0.9, learning_rate=0.01)
net.compile(optimizer=opt, loss="mse")
before = [np.array(v) for v in net.trainable_variables]
net.fit(np.ones((8, 4)), np.full((8, 1), 5.0), epochs=2, batch_size=4, verbose=0)
mine = {id(v) for v in net.variables}
assert not [v.path for v in opt.variables if id(v) in mine], "model variables tracked by the optimizer"
moved = [float(np.abs(np.array(v) - b).max()) for v, b in zip(net.trainable_variables, before)]
assert all(m > 0 for m in moved), moved
avg = [a for v, a in opt.ema_pairs()]
assert len(avg) == len(before) and any(np.abs(np.array(a) - np.array(v)).max() > 0 for v, a in opt.ema_pairs())
# A time-limited run moves its decay's end between rounds: the jitted step must read it, not hold the planned one.
from ocrnet_edge.model.train import lr_schedule
one = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
one.compile(optimizer=ScaledAdamW(learning_rate=lr_schedule(0.1, 20, 2)), loss=lambda y, p: keras.ops.mean(p))
x = np.ones((10, 1), np.float32)
one.fit(x, x, batch_size=1, epochs=1, verbose=0)
one.optimizer.set_run_end(12)
w = float(one.get_weights()[0][0, 0])
one.fit(x[:1], x[:1], batch_size=1, epochs=1, verbose=0)
step, want = w - float(one.get_weights()[0][0, 0]), 0.1 * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * 0.8)))
assert abs(step - want) < 1e-4, (step, want)
print("ok")
"""
    env = {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stderr[-3000:]

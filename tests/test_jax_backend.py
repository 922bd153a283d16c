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

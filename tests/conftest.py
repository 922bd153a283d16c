"""Shared fixtures: small datasets and models built by the tests themselves."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO.parent / "shared" / "peers" / "coral"
SMALL = 128
"""Input size of the tiny models and scenes the tests build (a multiple of 32)."""


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    """12 procedural scenes of 128x128 in COCO format."""
    from ocrnet_edge.model.data import write_scenes

    return write_scenes(tmp_path_factory.mktemp("data") / "small", 12, seed=3, size=SMALL, progress=False)


def _tiny():
    from ocrnet_edge.model.config import ModelConfig

    return ModelConfig(input_size=SMALL, width=0.5, neck_channels=32, head_channels=32, num_protos=8, ocr_channels=16)


TINY = _tiny()
CALIB_IMAGES = 24


@pytest.fixture(scope="session")
def calib_dir(tmp_path_factory):
    """A small calibration folder: photos and scenes from the repository's calibration_data."""
    d = tmp_path_factory.mktemp("calib")
    files = sorted((REPO / "calibration_data").glob("*.jpg"))
    for f in files[:8] + files[-(CALIB_IMAGES - 8):]:
        shutil.copy(f, d / f.name)
    return d


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """An untrained tiny model saved with its configuration."""
    import keras

    from ocrnet_edge.model.io import save_model
    from ocrnet_edge.model.network import build_ocrnet

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.keras"
    save_model(build_ocrnet(TINY), TINY, path)
    return path


@pytest.fixture(scope="session")
def converted(tiny_model, calib_dir, tmp_path_factory):
    """The tiny model converted by the real pipeline (int8 + card + reports + float32)."""
    from ocrnet_edge.convert.pipeline import ConvertOptions, convert_model

    out = tmp_path_factory.mktemp("converted")
    # An untrained model's near-tied logits make its int8 metrics arbitrary: the gate is tested on its own.
    opts = ConvertOptions(calib=calib_dir, min_calib=10, heldout_images=6, name="tiny", max_drop=100.0, progress=False)
    return convert_model(tiny_model, out, opts)


@pytest.fixture(scope="session")
def roomy_board(tmp_path_factory):
    """The host profile with a budget for a test process that also holds TensorFlow and JAX (over 1 GB):
    runs inside pytest measure the whole pytest process, not a device process."""
    text = (REPO / "boards" / "host.yaml").read_text()
    text = text.replace("ram_mb: 16384", "ram_mb: 65536").replace("memory_budget_mb: 1024", "memory_budget_mb: 65536")
    path = tmp_path_factory.mktemp("boards") / "roomy.yaml"
    path.write_text(text)
    return path

"""Shared fixtures: small datasets and models built by the tests themselves."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

SMALL = 128
"""Input size of the tiny models and scenes the tests build (a multiple of 32)."""


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    """12 procedural scenes of 128x128 in COCO format."""
    from ocrnet_edge.model.data import write_scenes

    return write_scenes(tmp_path_factory.mktemp("data") / "small", 12, seed=3, size=SMALL, progress=False)

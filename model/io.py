"""Saving and loading the model with its architecture configuration.

A ``.keras`` file is a zip archive; beside Keras' own members we add ``ocrnet_edge.json`` holding the
:class:`ModelConfig`, so a model file alone is enough to rebuild it at another size for export.
Loading always uses Keras safe mode: nothing in the file is executed.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from ocrnet_edge.runtime.errors import InputError, ModelError

from .config import ModelConfig, model_config_from_dict, to_dict

CONFIG_MEMBER = "ocrnet_edge.json"
DATA_MEMBER = "ocrnet_edge_data.json"
"""Where the model's training and validation data came from (the converter's defaults)."""


SKIPSET_TYPES = ("Operation", "Layer", "Functional", "Sequential", "Optimizer", "Loss")
"""The object kinds Keras' saving walks in our models and their optimizer."""


def cache_keras_skipsets() -> None:
    """Make Keras' per-kind attribute skip-sets cached, as Keras intends.

    Keras 3 (3.15.1 here) stores each skip-set under ``saving_attr_skipset_<kind>`` but looks it up under
    ``saving_attr_skiplist_<kind>``, so every saved or loaded layer builds a throwaway ``Layer()`` to list its
    attributes: 591 for one save, weights save and load of the default model at 128 (tests/test_model.py), and
    more than half of each round's saving in the tests' tiny training run (2.7 s -> 1.3 s a round on 2 cores).
    Storing each set under the name Keras reads gives it the cache it meant to have; the sets
    are the same ones it would build. Cheap to call before every save and load (a session cleared by
    ``keras.backend.clear_session`` is filled again); where a Keras version reads or builds them otherwise,
    nothing changes.
    """
    try:
        from keras.src.backend.common import global_state
        from keras.src.saving.saving_lib import get_attr_skipset
    except ImportError:
        return
    for kind in SKIPSET_TYPES:
        key = f"saving_attr_skiplist_{kind}"
        if global_state.get_global_attribute(key) is None:
            global_state.set_global_attribute(key, get_attr_skipset(kind))


def save_model(net, cfg: ModelConfig, path: Path | str, data: dict | None = None) -> None:
    """Save ``net`` to ``path`` (a ``.keras`` file) with its configuration (and data record), atomically."""
    cache_keras_skipsets()
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.keras")
    net.save(tmp)
    with zipfile.ZipFile(tmp, "a") as z:
        z.writestr(CONFIG_MEMBER, json.dumps(to_dict(cfg), indent=2, ensure_ascii=False))
        if data is not None:
            z.writestr(DATA_MEMBER, json.dumps(data, indent=2, ensure_ascii=False))
    tmp.replace(path)


def load_data_record(path: Path | str) -> dict | None:
    """The record of the data a model was trained and validated on (see :func:`model.train.open_training_data`),
    or None for a model saved without one."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            if DATA_MEMBER in z.namelist():
                return json.loads(z.read(DATA_MEMBER))
    except zipfile.BadZipFile:
        return None
    side = path.with_name("data.json")
    return json.loads(side.read_text()) if side.is_file() else None


def load_model(path: Path | str):
    """Load a saved model in Keras safe mode.

    Raises:
        InputError: The file is missing.
        ModelError: The file is not a Keras model this version can load.
    """
    import keras

    from . import layers  # noqa: F401  (registers the custom layers)

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: model file not found")
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path}: not a Keras model (.keras zip archive); expected the model.keras that training saves")
    cache_keras_skipsets()
    try:
        return keras.saving.load_model(str(path), safe_mode=True, compile=False)
    except Exception as e:  # Keras raises ValueError, TypeError, KeyError... on foreign archives
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ModelError(f"{path}: not a Keras model this version can load ({type(e).__name__}: {first})") from None


def load_model_config(path: Path | str) -> ModelConfig:
    """The architecture configuration saved with a model (or in ``config.json`` beside it).

    Raises:
        ModelError: No configuration can be found.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            if CONFIG_MEMBER in z.namelist():
                return model_config_from_dict(json.loads(z.read(CONFIG_MEMBER)))
    except zipfile.BadZipFile:
        raise ModelError(f"{path}: not a Keras model (.keras zip archive)") from None
    side = path.with_name("config.json")
    if side.is_file():
        doc = json.loads(side.read_text())
        return model_config_from_dict(doc.get("model", doc))
    raise ModelError(f"{path}: no ocrnet-edge configuration inside the model or in config.json beside it")

"""Build the model card and embed it in the ``.tflite`` metadata table.

The card is checked by the runtime's own strict parser before it is written, so a card the runtime
would refuse never leaves the converter.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
from pathlib import Path
from typing import Any

import flatbuffers

from ocrnet_edge import __version__
from ocrnet_edge.model.config import ModelConfig, to_dict
from ocrnet_edge.runtime import contract
from ocrnet_edge.runtime.card import CARD_FORMAT, parse_card
from ocrnet_edge.runtime.decode.detect import DECODE_FIELDS, DecodeOptions
from ocrnet_edge.runtime.modelfile import CARD_METADATA_NAME, ModelFileInfo, schema

DEFAULT_DECODE = {k: getattr(DecodeOptions(), k) for k in DECODE_FIELDS}
"""The decode settings a converted file's card carries: the runtime's defaults, written in one place."""


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict[str, str]:
    """Versions of what made the file."""
    import keras
    import tensorflow as tf

    return {"ocrnet_edge": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "python": platform.python_version()}


def build_card(info: ModelFileInfo, cfg: ModelConfig, name: str, source: Path, resize: str = "letterbox",
               float_reference: dict | None = None, calibration: dict | None = None,
               gate: dict | None = None, pretrained: dict | None = None) -> dict[str, Any]:
    """The card of a converted file (its outputs, quantization, contract, classes, hashes, versions, and
    where its calibration and gate images came from)."""
    (sig,) = info.signatures.values()
    inp = info.tensors[next(iter(sig["inputs"].values()))]
    outputs = {out_name: {"shape": list(info.tensors[t].shape), "dtype": info.tensors[t].dtype,
                          "scale": info.tensors[t].scale, "zero_point": info.tensors[t].zero_point}
               for out_name, t in sig["outputs"].items()}
    return card_from_io(cfg, name, source, {"name": next(iter(sig["inputs"])), "dtype": inp.dtype, "scale": inp.scale,
                                            "zero_point": inp.zero_point},
                        outputs, resize=resize, float_reference=float_reference, calibration=calibration, gate=gate,
                        pretrained=pretrained)


def card_from_io(cfg: ModelConfig, name: str, source: Path, input_tensor: dict, outputs: dict[str, dict],
                 resize: str = "letterbox", float_reference: dict | None = None, calibration: dict | None = None,
                 gate: dict | None = None, pretrained: dict | None = None, extra_versions: dict | None = None,
                 quantization: dict | None = None) -> dict[str, Any]:
    """The card from a file's input and outputs as any format describes them (the TFLite signature, an ONNX
    graph): ``input_tensor`` holds ``name``, ``dtype``, ``scale``, ``zero_point``; ``outputs`` maps each output
    name to ``shape``, ``dtype``, ``scale``, ``zero_point``. Checked by the runtime's parser before it is
    returned."""
    outs = {out_name: {"role": out_name, **{k: o[k] for k in ("shape", "dtype", "scale", "zero_point")},
                       "meaning": contract.OUTPUT_ROLES.get(out_name, "")}
            for out_name, o in sorted(outputs.items())}
    card = {
        "format": CARD_FORMAT,
        "name": name,
        "tasks": list(cfg.tasks),
        "input": {"name": input_tensor["name"], "size": contract.size_json(cfg.input_size), "dtype": input_tensor["dtype"],
                  "scale": input_tensor["scale"], "zero_point": input_tensor["zero_point"], "resize": resize,
                  "colour_order": "rgb", "pad_value": 114},
        "outputs": outs,
        "thing_classes": list(cfg.class_names),
        "semantic_classes": list(cfg.semantic_classes),
        "strides": list(cfg.strides),
        "seg_stride": contract.SEG_STRIDE,
        "decode": dict(DEFAULT_DECODE),
        "source_sha256": sha256_file(source),
        "versions": {**versions(), **(extra_versions or {})},
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "notes": {"model_config": to_dict(cfg), **({"pretrained": pretrained} if pretrained else {})},
    }
    if quantization:
        card["quantization"] = quantization
    if float_reference:
        card["float_reference"] = float_reference
    if calibration:
        card["calibration"] = calibration
    if gate:
        card["gate"] = gate
    parse_card(card, "converter")  # the runtime must accept what we write
    return card


def write_with_card(tflite: bytes, cfg: ModelConfig, name: str, source: Path | None, path: Path) -> dict[str, Any]:
    """Write ``tflite`` to ``path`` with its card embedded (through a temporary name); returns the card.

    ``source`` is the file whose hash the card records (the Keras model); None records the converted bytes'.
    """
    from ocrnet_edge.runtime.modelfile import inspect_model

    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(tflite)
    card = build_card(inspect_model(tmp), cfg, name, source if source is not None else tmp)
    tmp.write_bytes(embed_card(tflite, card))
    tmp.replace(path)
    return card


def embed_card(tflite: bytes, card: dict[str, Any]) -> bytes:
    """Return ``tflite`` with ``card`` in its metadata table (replacing an earlier card)."""
    s = schema()
    model = s.ModelT.InitFromObj(s.Model.GetRootAs(tflite, 0))
    buf = s.BufferT()
    buf.data = list(json.dumps(card, separators=(",", ":"), sort_keys=True).encode("utf-8"))
    model.buffers.append(buf)
    meta = s.MetadataT()
    meta.name = CARD_METADATA_NAME
    meta.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (CARD_METADATA_NAME, CARD_METADATA_NAME.encode())]
    model.metadata.append(meta)
    b = flatbuffers.Builder(len(tflite) + 4096)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())

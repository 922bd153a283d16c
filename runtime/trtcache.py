"""TensorRT engine cache: an engine is tied to one GPU model, one TensorRT version and one precision, so it
is built on the board on first use and kept beside the model under a name that says what it was built for,
with the model's checksum beside it (as jetson-inference does); a stale engine is rebuilt, never trusted.

Name: ``<model file name>.<gpu>-sm<major><minor>.trt<version>.<precision>.engine``, e.g.
``x.onnx.orin-sm87.trt10.3.0.fp16.engine``, and ``<that>.json`` beside it with the model's sha256 and what
the engine was built for. A lookup says, in one line, whether the engine is reused, built for the first time,
or rebuilt and why (the model changed, another GPU, another TensorRT version, a missing or unreadable
checksum). The folder is the model's own, or ``~/.cache/ocrnet-edge/engines`` where that is not writable.
ONNX Runtime's TensorRT provider keeps its engines in the same place (:func:`ort_cache_dir`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

SCHEMA = "ocrnet-edge-trt-engine/1"


@dataclass(frozen=True)
class EngineKey:
    """What an engine was built for.

    Attributes:
        model_sha256: The ONNX file's sha256.
        gpu: The GPU's name as CUDA reports it.
        compute: Compute capability, ``8.7``.
        tensorrt: TensorRT version, ``10.3.0``.
        precision: ``fp32``, ``fp16`` or ``int8``.
    """

    model_sha256: str
    gpu: str
    compute: str
    tensorrt: str
    precision: str

    def describe(self) -> str:
        """``Orin (sm 8.7), TensorRT 10.3.0, fp16``."""
        return f"{self.gpu} (sm {self.compute}), TensorRT {self.tensorrt}, {self.precision}"


@dataclass(frozen=True)
class Lookup:
    """The cache's answer.

    Attributes:
        path: Where the engine is (or is to be written).
        status: ``reuse``, ``build`` (none cached) or ``rebuild`` (a stale one found).
        message: The one line to say.
    """

    path: Path
    status: str
    message: str


def sha256_file(path: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def slug(text: str) -> str:
    """A file-name-safe, lower-case form of a GPU name (``NVIDIA Tegra X1`` -> ``nvidia-tegra-x1``)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "gpu"


def cache_dir(model: Path) -> Path:
    """The model's folder when writable, else ``$XDG_CACHE_HOME/ocrnet-edge/engines`` (``~/.cache``)."""
    if os.access(model.parent, os.W_OK):
        return model.parent
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ocrnet-edge" / "engines"


def engine_name(model: Path, key: EngineKey) -> str:
    """The engine's file name for ``model`` and ``key``."""
    return f"{model.name}.{slug(key.gpu)}-sm{key.compute.replace('.', '')}.trt{key.tensorrt}.{key.precision}.engine"


def meta_path(engine: Path) -> Path:
    """The checksum file beside an engine."""
    return engine.with_name(engine.name + ".json")


def _read_meta(engine: Path) -> dict | None:
    try:
        doc = json.loads(meta_path(engine).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("schema") == SCHEMA else None


def lookup(model: Path, key: EngineKey, folder: Path | None = None) -> Lookup:
    """Whether an engine for ``model`` and ``key`` can be reused, and if not, why (one line)."""
    folder = folder or cache_dir(model)
    path = folder / engine_name(model, key)
    if path.is_file():
        meta = _read_meta(path)
        if meta is None:
            why = f"no readable checksum beside it ({meta_path(path).name})"
            return Lookup(path, "rebuild", f"rebuilding {path.name}: {why}")
        if meta.get("model_sha256") != key.model_sha256:
            return Lookup(path, "rebuild", f"rebuilding {path.name}: {model.name} changed since it was built (sha256 "
                                           f"{str(meta.get('model_sha256'))[:12]} then, {key.model_sha256[:12]} now)")
        return Lookup(path, "reuse", f"engine {path.name} (cached, built for {key.describe()})")
    others = []
    for other in sorted(folder.glob(f"{model.name}.*.engine")):
        meta = _read_meta(other)
        if meta and meta.get("precision") == key.precision:
            others.append((other, meta))
    if others:
        other, meta = others[0]
        was = EngineKey(**{k: str(meta.get(k, "?")) for k in EngineKey.__dataclass_fields__})
        return Lookup(path, "rebuild", f"rebuilding: the cached {other.name} was built for {was.describe()}; "
                                       f"this is {key.describe()}")
    return Lookup(path, "build", f"building a TensorRT engine for {model.name} ({key.describe()}); the first build "
                                 "takes minutes on a Jetson, later runs reuse it")


def store(path: Path, data: bytes, key: EngineKey, build_s: float) -> None:
    """Write an engine and its checksum file (each through a temporary name: a killed build leaves no
    engine that looks complete)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    tmp.replace(path)
    doc = {"schema": SCHEMA, **asdict(key), "built": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "build_seconds": round(build_s, 1), "engine_bytes": len(data)}
    mtmp = meta_path(path).with_name(meta_path(path).name + ".partial")
    mtmp.write_text(json.dumps(doc, indent=2) + "\n")
    mtmp.replace(meta_path(path))


def ort_cache_dir(model: Path, gpu: str, tensorrt: str | None) -> Path:
    """Where ONNX Runtime's TensorRT provider keeps its engines for ``model``: in the same folder, in a
    sub-folder named like the engines (ONNX Runtime names its own files inside and does not check the
    TensorRT version, so the version is in the folder's name)."""
    return cache_dir(model) / f"{model.name}.{slug(gpu)}.trt{tensorrt or 'unknown'}.ort-trt"

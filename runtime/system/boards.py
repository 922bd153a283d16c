"""Board profiles: data in ``boards/*.yaml``, loaded strictly into frozen dataclasses.

Unknown keys, wrong types and missing fields are refused with the file and line. ``auto`` detects the
board from ``/proc/device-tree/model``, ``/etc/nv_tegra_release`` and Edge TPUs on USB or PCIe, and
falls back to ``host``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from ..contract import InputSize, parse_size
from ..errors import InputError
from ..precision import DEFAULT_PRECISION, PRECISIONS

BOARDS_DIR = Path(__file__).resolve().parents[2] / "boards"
"""The repository's ``boards/`` folder (installed as package data beside the runtime)."""
BACKEND_NAMES = ("edgetpu", "cpu", "onnxruntime", "tensorrt")
OPTIONAL = {"precision": DEFAULT_PRECISION}
"""Keys a profile may leave out, with their defaults."""


@dataclass(frozen=True)
class Board:
    """A board profile.

    Attributes:
        name: Profile name (the file's stem).
        description: What the board is.
        cpu: CPU cores and model, as the vendor states them.
        ram_mb: Memory on the board.
        memory_budget_mb: Most resident memory this process may use (what the OS and camera stack leave).
        threads: Interpreter threads.
        backends: Backends to try, in order (``edgetpu``, ``cpu``, ``onnxruntime``, ``tensorrt``).
        input_size: Model input size to convert and run at: a side (``320``), or ``416x320`` (width x
            height) in the file, ``(416, 320)`` here.
        sizes: Input sizes a benchmark sweeps (each as ``input_size``).
        camera: Default camera source string.
        camera_width: Capture width.
        camera_height: Capture height.
        camera_fps: Capture rate.
        basis: What the numbers above are based on.
        precision: Precisions the board's accelerator runs, best first (``int8``, ``fp16``, ``fp32``), for the GPU
            backends: an int8 build runs INT8 where this lists ``int8`` and the GPU has it, anything else the first
            float precision; optional, default ``[fp16, fp32]`` (``runtime.precision`` has the whole rule).
    """

    name: str
    description: str
    cpu: str
    ram_mb: int
    memory_budget_mb: int
    threads: int
    backends: tuple[str, ...]
    input_size: InputSize
    sizes: tuple[InputSize, ...]
    camera: str
    camera_width: int
    camera_height: int
    camera_fps: int
    basis: str
    precision: tuple[str, ...] = DEFAULT_PRECISION

    @property
    def prefers_edgetpu(self) -> bool:
        """Whether the Edge TPU comes first in the backend order."""
        return bool(self.backends) and self.backends[0] == "edgetpu"


_TYPES = {f.name: f.type for f in fields(Board)}


def _err(path: Path, node, msg: str) -> InputError:
    line = node.start_mark.line + 1 if node is not None else 1
    return InputError(f"{path}:{line}: {msg}")


def _scalar(path: Path, node, key: str, kind: str):
    if not isinstance(node, yaml.ScalarNode):
        raise _err(path, node, f"{key} must be a {kind}")
    value = yaml.safe_load(yaml.serialize(node))
    ok = {"str": isinstance(value, str), "int": isinstance(value, int) and not isinstance(value, bool)}[kind]
    if not ok:
        raise _err(path, node, f"{key} must be a {kind}. Received: {value!r} ({type(value).__name__})")
    return value


def _sizes(path: Path, node, key: str) -> InputSize | tuple[InputSize, ...]:
    """``input_size`` (one size) or ``sizes`` (a list): each ``320`` or ``416x320`` (width x height)."""
    nodes = node.value if key == "sizes" and isinstance(node, yaml.SequenceNode) else [node]
    if key == "sizes" and (not isinstance(node, yaml.SequenceNode) or not nodes):
        raise _err(path, node, "sizes must be a non-empty list of input sizes (320 or 416x320)")
    out = []
    for n in nodes:
        if not isinstance(n, yaml.ScalarNode):
            raise _err(path, n, f"{key}: an input size is 320 or 416x320 (width x height)")
        try:
            out.append(parse_size(yaml.safe_load(yaml.serialize(n))))
        except InputError as e:
            raise _err(path, n, f"{key}: {e}") from None
    return tuple(out) if key == "sizes" else out[0]


def parse_board(text: str, path: Path) -> Board:
    """Parse one board document strictly."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise InputError(f"{path}:{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(root, yaml.MappingNode):
        raise _err(path, root, "a board file must be a mapping of keys to values")
    values: dict = {"name": path.stem}
    for knode, vnode in root.value:
        key = knode.value
        if key not in _TYPES or key == "name":
            known = sorted(k for k in _TYPES if k != "name")
            raise _err(path, knode, f"unknown key {key!r}; known keys: {', '.join(known)}")
        if key in values and key != "name":
            raise _err(path, knode, f"duplicate key {key!r}")
        t = _TYPES[key]
        if key in ("input_size", "sizes"):
            values[key] = _sizes(path, vnode, key)
        elif t in ("tuple[str, ...]", "tuple[int, ...]"):
            kind = "str" if "str" in t else "int"
            if not isinstance(vnode, yaml.SequenceNode) or not vnode.value:
                raise _err(path, vnode, f"{key} must be a non-empty list of {kind}s")
            values[key] = tuple(_scalar(path, n, f"each entry of {key}", kind) for n in vnode.value)
        else:
            values[key] = _scalar(path, vnode, key, "int" if t == "int" else "str")
        if key == "backends":
            bad = [b for b in values[key] if b not in BACKEND_NAMES]
            if bad:
                raise _err(path, vnode, f"unknown backends {bad}; known: {list(BACKEND_NAMES)}")
        if key == "precision":
            bad = [p for p in values[key] if p not in PRECISIONS]
            if bad:
                raise _err(path, vnode, f"unknown precision {bad}; known: {list(PRECISIONS)}")
            if len(set(values[key])) != len(values[key]):
                raise _err(path, vnode, f"precision lists a value twice. Received: {list(values[key])}")
        if t == "int" and values[key] <= 0:
            raise _err(path, vnode, f"{key} must be positive. Received: {values[key]}")
    missing = sorted(set(_TYPES) - set(values) - set(OPTIONAL))
    if missing:
        raise _err(path, root, f"missing fields {missing}")
    if values["memory_budget_mb"] > values["ram_mb"]:
        raise _err(path, root, f"memory_budget_mb ({values['memory_budget_mb']}) exceeds ram_mb ({values['ram_mb']})")
    return Board(**values)


def board_names(directory: Path = BOARDS_DIR) -> list[str]:
    """Profiles available in ``directory``."""
    return sorted(p.stem for p in directory.glob("*.yaml"))


def load_board(name_or_path: str | Path, directory: Path = BOARDS_DIR) -> Board:
    """Load a board by name (``rpi5``), ``auto``, or a path to a YAML file.

    Raises:
        InputError: Unknown board, unreadable file, or a malformed profile (with file and line).
    """
    s = str(name_or_path)
    if s == "auto":
        return load_board(detect_board(), directory)
    path = Path(s)
    if path.suffix not in (".yaml", ".yml"):
        path = directory / f"{s}.yaml"
        if not path.is_file():
            raise InputError(f"unknown board {s!r}; known boards: {', '.join(board_names(directory))} (or a .yaml path)")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(f"{path}: board file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: board file cannot be read ({e})") from None
    return parse_board(text, path)


def _read(path: str, root: str) -> str:
    try:
        return Path(root + path).read_bytes().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return ""


def detect_board(root: str | None = None) -> str:
    """The profile name of the board this runs on; ``host`` when nothing more specific is found.

    Args:
        root: Prefix of the system paths read (``/proc/device-tree/model`` and others); tests and the
            arm64 emulation check point it at a prepared folder. Defaults to ``$OCRNET_SYSROOT`` or ``""``.
    """
    from ..backends.edgetpu import edgetpu_devices

    root = os.environ.get("OCRNET_SYSROOT", "") if root is None else root
    model = _read("/proc/device-tree/model", root) or _read("/sys/firmware/devicetree/base/model", root)
    tegra = _read("/etc/nv_tegra_release", root)
    m = model.lower()
    if "raspberry pi 5" in m:
        return "coral-usb" if root == "" and "usb" in edgetpu_devices() else "rpi5"
    if "raspberry pi 4" in m:
        return "rpi4"
    if "raspberry pi zero 2" in m:
        return "rpi-zero-2w"
    if "phanbell" in m or "coral dev board" in m and "mini" not in m:
        return "coral-devboard"
    if "coral dev board mini" in m or "mt8167" in m:
        return "coral-devboard-mini"
    if "orin" in m:
        return "jetson-orin-nano"
    if "jetson nano" in m or ("jetson" in m and "orin" not in m) or (tegra and "R32" in tegra):
        return "jetson-nano"
    if tegra:
        return "jetson-orin-nano"
    return "host"


def detected_model_string(root: str | None = None) -> str:
    """The raw device-tree model string, for reports (empty on a PC)."""
    root = os.environ.get("OCRNET_SYSROOT", "") if root is None else root
    return _read("/proc/device-tree/model", root)

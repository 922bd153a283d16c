"""Reading ``.tflite`` files without running them: validation, op list, tensors, the model card.

A model file is walked completely in Python (the TFLite flatbuffer schema that LiteRT ships)
before any interpreter sees it, so random bytes, a truncated file or a malformed flatbuffer give a
clear :class:`~runtime.errors.ModelError` instead of a crash inside native code.

The model card (the contract that tells the runtime everything: output names and roles,
quantization, strides, classes, input size, resize mode, colour order, hashes, versions) travels in
the TFLite metadata table under :data:`CARD_METADATA_NAME`, and beside the file as JSON.
"""

from __future__ import annotations

import json
import mmap
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EnvironmentMissing, InputError, ModelError

CARD_METADATA_NAME = "ocrnet_edge.card"
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"

TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool", 7: "int16",
              8: "complex64", 9: "int8", 10: "float64", 17: "uint16"}


def schema():
    """The TFLite flatbuffer schema module shipped with LiteRT."""
    try:
        from ai_edge_litert import schema_py_generated  # type: ignore
    except ImportError:
        raise EnvironmentMissing(
            "reading .tflite files needs the TFLite schema that LiteRT ships: pip install ai-edge-litert"
        ) from None
    return schema_py_generated


@lru_cache(maxsize=1)
def _builtin_names() -> dict[int, str]:
    ops = schema().BuiltinOperator
    return {v: k for k, v in vars(ops).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass(frozen=True)
class TensorInfo:
    """A tensor of the main subgraph.

    Attributes:
        index: Tensor index.
        name: Tensor name.
        shape: Static shape.
        dtype: Type name (``int8``, ``uint8``, ``float32``...).
        scale: Quantization scale, or None when unquantized.
        zero_point: Quantization zero point (0 when unquantized).
        is_variable: Whether the tensor is a variable.
        buffer_bytes: Size of the constant data it holds (0 for activations).
        scale_max: Largest of its (per-channel) scales, or None when unquantized.
    """

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float | None
    zero_point: int
    is_variable: bool
    buffer_bytes: int
    scale_max: float | None = None


@dataclass(frozen=True)
class OpInfo:
    """An operator of the main subgraph, in execution order.

    Attributes:
        index: Position in execution order.
        name: Builtin name (``CONV_2D``...) or the custom op's code.
        inputs: Input tensor indices (-1 for an omitted optional input).
        outputs: Output tensor indices.
    """

    index: int
    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class ModelFileInfo:
    """What a ``.tflite`` file holds.

    Attributes:
        path: The file.
        size_bytes: File size.
        ops: Operators of the main subgraph in execution order.
        tensors: Tensors of the main subgraph.
        inputs: Input tensor indices.
        outputs: Output tensor indices.
        signatures: Signature key to ``{"inputs": {name: tensor}, "outputs": {name: tensor}}``.
        metadata: Metadata name to its raw bytes.
        subgraphs: Number of subgraphs.
    """

    path: Path
    size_bytes: int
    ops: tuple[OpInfo, ...]
    tensors: tuple[TensorInfo, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    signatures: dict[str, dict[str, dict[str, int]]]
    metadata: dict[str, bytes]
    subgraphs: int

    format = "tflite"
    """The file format (``tflite``; ``onnx`` for :class:`~runtime.onnxfile.OnnxFileInfo`)."""

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one invoke (:func:`count_macs`)."""
        return count_macs(self)

    @property
    def op_names(self) -> list[str]:
        """Operator names in execution order."""
        return [op.name for op in self.ops]

    @property
    def is_edgetpu(self) -> bool:
        """Whether the file was compiled for the Edge TPU (holds its custom op)."""
        return EDGETPU_CUSTOM_OP in self.op_names

    @property
    def parameter_bytes(self) -> int:
        """Bytes of constant tensor data (weights, biases)."""
        return sum(t.buffer_bytes for t in self.tensors)

    @property
    def parameters(self) -> int:
        """Elements of the convolution and fully connected weights and biases (the trained parameters; shape
        constants and lookup tables are not counted)."""
        ops = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}
        seen: set[int] = set()
        for op in self.ops:
            if op.name in ops:
                seen.update(i for i in op.inputs[1:] if i >= 0 and self.tensors[i].buffer_bytes)
        return sum(int(np.prod(self.tensors[i].shape)) for i in seen)

    def card(self) -> dict[str, Any] | None:
        """The embedded model card, or None."""
        raw = self.metadata.get(CARD_METADATA_NAME)
        if raw is None:
            return None
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelError(f"{self.path}: the embedded model card is not valid JSON ({e})") from None


def _read_bytes(path: Path) -> memoryview | bytes:
    try:
        with path.open("rb") as f:
            if path.stat().st_size == 0:
                return b""
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        raise InputError(f"{path}: model file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a model file") from None
    except PermissionError:
        raise InputError(f"{path}: model file cannot be read (permission denied)") from None


def inspect_file(path: Path | str):
    """Validate and describe a ``.tflite`` or ``.onnx`` file without running it: the runtime's entry point.

    The content decides the format (a TFL3 flatbuffer identifier); a file named ``.onnx``, or one that is neither
    named ``.tflite`` nor a flatbuffer but starts as an ONNX file does, is read as ONNX
    (:func:`runtime.onnxfile.inspect_onnx`).

    Returns:
        A :class:`ModelFileInfo`, or an :class:`~runtime.onnxfile.OnnxFileInfo` for an ONNX file.

    Raises:
        InputError: The file is missing or unreadable.
        ModelError: Neither a TFLite nor an ONNX model, or truncated or malformed.
    """
    path = Path(path)
    buf = _read_bytes(path)
    size = len(buf)
    if size >= 8 and bytes(buf[4:8]) == b"TFL3":
        return inspect_model(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx" or (suffix != ".tflite" and size and buf[0] == 0x08):
        from .onnxfile import inspect_onnx

        if size == 0:
            raise ModelError(f"{path}: empty file; expected an ONNX model")
        return inspect_onnx(path, buf, size)
    if suffix != ".tflite":
        raise ModelError(f"{path}: not a TFLite or ONNX model (no TFL3 flatbuffer identifier, no ONNX header); "
                         "expected a .tflite or .onnx file")
    return inspect_model(path)


def inspect_model(path: Path | str) -> ModelFileInfo:
    """Validate and describe a ``.tflite`` file without running it (:func:`inspect_file` takes ONNX files too).

    Raises:
        InputError: The file is missing or unreadable.
        ModelError: The file is not a TFLite flatbuffer, or is truncated or malformed.
    """
    path = Path(path)
    buf = _read_bytes(path)
    size = len(buf)
    if size < 8 or bytes(buf[4:8]) != b"TFL3":
        raise ModelError(f"{path}: not a TFLite model (no TFL3 flatbuffer identifier); expected a .tflite file")
    try:
        return _walk(path, buf, size)
    except (ModelError, EnvironmentMissing):  # a missing schema is this machine's fault, not the file's
        raise
    except Exception as e:  # the generated accessors raise IndexError, struct.error... on bad offsets
        raise ModelError(f"{path}: truncated or malformed TFLite flatbuffer ({type(e).__name__}: {e})") from None


def _check_range(offset: int, length: int, size: int, what: str) -> None:
    if offset < 0 or length < 0 or offset + length > size:
        raise ModelError(f"{what} lies outside the file (offset {offset}, length {length}, file {size} bytes)")


_ZP_RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (0, 0), "int32": (0, 0), "int64": (0, 0)}
"""Zero points the kernels accept per type (16-bit activations and 32-bit biases are symmetric)."""
SCALE_RANGE = (1e-20, 1e6)
"""Plausible quantization scales: converters write nothing outside, and kernels abort on the multipliers
that scales far outside give."""


def _check_quantization(i: int, q, shape: tuple[int, ...], dtype: str) -> None:
    """The quantization rules the kernels assume (a file that breaks them can crash native code, not fail):
    finite positive scales, zero points within the type, per-channel parameters one per channel, and
    symmetric (zero point 0) per-channel int8."""
    scales = q.ScaleAsNumpy()
    if not np.all(np.isfinite(scales)) or np.any(scales < SCALE_RANGE[0]) or np.any(scales > SCALE_RANGE[1]):
        raise ModelError(f"tensor {i} has a quantization scale outside [{SCALE_RANGE[0]:g}, {SCALE_RANGE[1]:g}]")
    n = len(scales)
    zps = q.ZeroPointAsNumpy() if q.ZeroPointLength() else np.zeros(0, np.int64)
    if len(zps) not in (0, n):
        raise ModelError(f"tensor {i} has {n} quantization scales but {len(zps)} zero points")
    lo, hi = _ZP_RANGE.get(dtype, (-(2**31), 2**31 - 1))
    if len(zps) and (zps.min() < lo or zps.max() > hi):
        raise ModelError(f"tensor {i}: a {dtype} zero point outside [{lo}, {hi}]")
    if n > 1:
        dim = q.QuantizedDimension()
        if not 0 <= dim < len(shape) or shape[dim] != n:
            raise ModelError(f"tensor {i}: {n} per-channel scales for dimension {dim} of shape {shape}")
        if dtype == "int8" and len(zps) and np.any(zps != 0):
            raise ModelError(f"tensor {i}: per-channel int8 quantization must be symmetric (zero points 0)")


def _walk(path: Path, buf, size: int) -> ModelFileInfo:
    s = schema()
    model = s.Model.GetRootAs(buf, 0)
    names = _builtin_names()
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        if code == s.BuiltinOperator.CUSTOM:
            custom = oc.CustomCode()
            codes.append(custom.decode("utf-8", "replace") if custom else "CUSTOM")
        else:
            codes.append(names.get(code, f"BUILTIN_{code}"))
    n_buffers = model.BuffersLength()
    buffer_sizes = []
    for i in range(n_buffers):
        b = model.Buffers(i)
        if b.Offset() > 1:
            _check_range(b.Offset(), b.Size(), size, f"buffer {i}")
            buffer_sizes.append(int(b.Size()))
        else:
            n = b.DataLength()
            if n:
                start = b._tab.Vector(b._tab.Offset(4))
                _check_range(start, n, size, f"buffer {i}")
            buffer_sizes.append(n)
    if model.SubgraphsLength() < 1:
        raise ModelError(f"{path}: the model has no subgraph")
    g = model.Subgraphs(0)
    tensors = []
    for i in range(g.TensorsLength()):
        t = g.Tensors(i)
        q = t.Quantization()
        scale, zp = None, 0
        shape = tuple(int(d) for d in (t.ShapeAsNumpy() if t.ShapeLength() else ()))
        dtype = TYPE_NAMES.get(t.Type(), f"type{t.Type()}")
        scale_max = None
        if q is not None and q.ScaleLength() > 0:
            _check_quantization(i, q, shape, dtype)
            scale = float(q.Scale(0))
            scale_max = float(q.ScaleAsNumpy().max())
            zp = int(q.ZeroPoint(0)) if q.ZeroPointLength() else 0
        bi = t.Buffer()
        if not 0 <= bi < max(n_buffers, 1):
            raise ModelError(f"tensor {i} refers to buffer {bi} of {n_buffers}")
        tensors.append(TensorInfo(
            index=i, name=(t.Name() or b"").decode("utf-8", "replace"), shape=shape, dtype=dtype, scale=scale,
            zero_point=zp,
            is_variable=bool(t.IsVariable()), buffer_bytes=buffer_sizes[bi] if bi < len(buffer_sizes) else 0,
            scale_max=scale_max,
        ))
    n_t = len(tensors)

    def idx(values) -> tuple[int, ...]:
        out = tuple(int(v) for v in values)
        for v in out:
            if not -1 <= v < n_t:
                raise ModelError(f"tensor index {v} out of range ({n_t} tensors)")
        return out

    ops = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        ci = op.OpcodeIndex()
        if not 0 <= ci < len(codes):
            raise ModelError(f"operator {i} has opcode index {ci} of {len(codes)}")
        ops.append(OpInfo(i, codes[ci], idx(op.InputsAsNumpy() if op.InputsLength() else ()),
                          idx(op.OutputsAsNumpy() if op.OutputsLength() else ())))
    signatures: dict[str, dict[str, dict[str, int]]] = {}
    for i in range(model.SignatureDefsLength()):
        sd = model.SignatureDefs(i)
        key = (sd.SignatureKey() or b"").decode()
        signatures[key] = {
            "inputs": {sd.Inputs(j).Name().decode(): idx([sd.Inputs(j).TensorIndex()])[0]
                       for j in range(sd.InputsLength())},
            "outputs": {sd.Outputs(j).Name().decode(): idx([sd.Outputs(j).TensorIndex()])[0]
                        for j in range(sd.OutputsLength())},
        }
    metadata = {}
    for i in range(model.MetadataLength()):
        m = model.Metadata(i)
        bi = m.Buffer()
        if not 0 <= bi < n_buffers:
            raise ModelError(f"metadata {i} refers to buffer {bi} of {n_buffers}")
        b = model.Buffers(bi)
        if b.Offset() > 1:
            metadata[(m.Name() or b"").decode()] = bytes(buf[b.Offset(): b.Offset() + b.Size()])
        else:
            metadata[(m.Name() or b"").decode()] = b.DataAsNumpy().tobytes() if b.DataLength() else b""
    return ModelFileInfo(
        path=path, size_bytes=size, ops=tuple(ops), tensors=tuple(tensors),
        inputs=idx(g.InputsAsNumpy() if g.InputsLength() else ()),
        outputs=idx(g.OutputsAsNumpy() if g.OutputsLength() else ()),
        signatures=signatures, metadata=metadata, subgraphs=model.SubgraphsLength(),
    )


XNNPACK_CONV_LIMIT = 256.0
"""XNNPACK's int8 convolutions need input scale x weight scale / output scale below 256."""


def xnnpack_refusals(info: ModelFileInfo) -> list[str]:
    """The int8 convolutions whose requantization scale XNNPACK refuses (:data:`XNNPACK_CONV_LIMIT`).

    Such scales come from degenerate activations (a layer whose output is nearly zero on every calibration
    image: an untrained or barely trained model, or calibration images that never exercise it). LiteRT 2.3
    was seen aborting the process ("double free or corruption") on such files while XNNPACK refused the
    op; the runtime runs them on the reference kernels instead, and the converter reports them.
    """
    t = info.tensors
    out = []
    for op in info.ops:
        if op.name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") or len(op.inputs) < 2 or not op.outputs:
            continue
        a, w, o = t[op.inputs[0]], t[op.inputs[1]], t[op.outputs[0]]
        if a.dtype not in ("int8", "uint8") or None in (a.scale, w.scale_max, o.scale):
            continue
        r = a.scale * w.scale_max / o.scale
        if r >= XNNPACK_CONV_LIMIT:
            out.append(f"op {op.index} {op.name} ({o.name[:60]}): requantization scale {r:.3g}, XNNPACK needs "
                       f"under {XNNPACK_CONV_LIMIT:g}")
    return out


def count_macs(info: ModelFileInfo) -> int:
    """Multiply-accumulates of one invoke, counted from the graph's convolutions and fully connected ops.

    CONV_2D: ``out_h * out_w * out_c * k_h * k_w * in_c / groups``; DEPTHWISE_CONV_2D:
    ``out_h * out_w * out_c * k_h * k_w``; FULLY_CONNECTED: ``in * out``; TRANSPOSE_CONV like CONV_2D over
    the input. Element-wise ops are not counted (they are not MACs).
    """
    total = 0
    t = info.tensors
    for op in info.ops:
        if op.name == "CONV_2D" and len(op.inputs) >= 2:
            w, out = t[op.inputs[1]].shape, t[op.outputs[0]].shape  # w: (out_c, kh, kw, in_c/groups)
            total += out[1] * out[2] * w[0] * w[1] * w[2] * w[3]
        elif op.name == "DEPTHWISE_CONV_2D" and len(op.inputs) >= 2:
            w, out = t[op.inputs[1]].shape, t[op.outputs[0]].shape  # w: (1, kh, kw, out_c)
            total += out[1] * out[2] * w[1] * w[2] * w[3]
        elif op.name == "FULLY_CONNECTED" and len(op.inputs) >= 2:
            w, out = t[op.inputs[1]].shape, t[op.outputs[0]].shape
            rows = 1
            for d in out[:-1]:
                rows *= d
            total += rows * w[0] * w[1]
        elif op.name == "TRANSPOSE_CONV" and len(op.inputs) >= 3:
            w, inp = t[op.inputs[1]].shape, t[op.inputs[2]].shape
            total += inp[1] * inp[2] * w[0] * w[1] * w[2] * w[3]
    return int(total)

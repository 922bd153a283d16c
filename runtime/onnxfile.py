"""Reading ``.onnx`` files without running them, and without the ``onnx`` package: a light protobuf walk.

The device side may have TensorRT and no ``onnx``/``onnxruntime`` at all (a Jetson), so the file is read
here with the protobuf wire format alone: every length-delimited field is checked against the file's end
(a truncated file is one :class:`~runtime.errors.ModelError` line, never a crash), and only what the
runtime needs is kept: the graph's inputs and outputs (names, shapes, element types), its nodes (op types),
the opset, the shapes that shape inference recorded (for counting MACs), and ``metadata_props``, where the
converter stores the model card under :data:`~runtime.modelfile.CARD_METADATA_NAME`, as in TFLite files.

Files with external data (over 2 GB) are not ours and are refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelError
from .modelfile import CARD_METADATA_NAME, OpInfo

ELEM_TYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
              10: "float16", 11: "float64", 16: "bfloat16"}
"""``TensorProto.DataType`` numbers to names."""
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
IR_VERSIONS = (3, 20)
"""IR versions of ONNX 1.3 (2018) to well past today's (10 in ONNX 1.16+)."""
QDQ_SUFFIX = "_int8_qdq"
"""``<name>_int8_qdq.onnx``: the explicit, symmetric QDQ file ``convert --onnx`` writes for TensorRT INT8."""
BUILD_SUFFIXES = ("_edgetpu", "_qdq", "_int8", "_float32", "_gatefailed")
"""Suffixes of the files ``convert`` writes, stripped (in this order) to find a model's base name."""


class _Truncated(Exception):
    pass


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _Truncated("a varint runs past the end")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ModelError("a varint longer than 10 bytes")


def _fields(buf, start: int, end: int):
    """``(field number, wire type, value)`` of one message: ints for varints and fixed fields, ``(start, end)``
    for length-delimited ones."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise ModelError("field number 0")
        if wt == 0:
            v, pos = _varint(buf, pos, end)
        elif wt == 1:
            if pos + 8 > end:
                raise _Truncated("a 64-bit field runs past the end")
            v, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wt == 5:
            if pos + 4 > end:
                raise _Truncated("a 32-bit field runs past the end")
            v, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        elif wt == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise _Truncated(f"field {num} of {n} bytes runs past the end")
            v, pos = (pos, pos + n), pos + n
        else:
            raise ModelError(f"wire type {wt} (field {num}) does not occur in ONNX files")
        yield num, wt, v


def _str(buf, span: tuple[int, int]) -> str:
    return bytes(buf[span[0]:span[1]]).decode("utf-8", "replace")


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


@dataclass(frozen=True)
class OnnxTensor:
    """A graph input, output or inferred value.

    Attributes:
        name: Tensor name.
        dtype: Element type name (``float32``...).
        shape: Dimensions, -1 where symbolic or unknown.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]


def _value_info(buf, span) -> OnnxTensor:
    name, dtype, shape = "", "?", []
    for num, wt, v in _fields(buf, *span):
        if num == 1 and wt == 2:
            name = _str(buf, v)
        elif num == 2 and wt == 2:  # TypeProto
            for tn, twt, tv in _fields(buf, *v):
                if tn == 1 and twt == 2:  # tensor_type
                    for k, kwt, kv in _fields(buf, *tv):
                        if k == 1 and kwt == 0:
                            dtype = ELEM_TYPES.get(kv, f"type{kv}")
                        elif k == 2 and kwt == 2:  # TensorShapeProto
                            for d, dwt, dv in _fields(buf, *kv):
                                if d == 1 and dwt == 2:
                                    dim = -1
                                    for dn, dnwt, dnv in _fields(buf, *dv):
                                        if dn == 1 and dnwt == 0:
                                            dim = _signed(dnv)
                                    shape.append(dim)
    return OnnxTensor(name, dtype, tuple(shape))


@dataclass(frozen=True)
class OnnxFileInfo:
    """What a ``.onnx`` file holds, read without the ``onnx`` package.

    Attributes:
        path: The file.
        size_bytes: File size.
        ir_version: ONNX IR version.
        opset: Version of the default (``ai.onnx``) opset.
        producer: Producer name and version.
        ops: Nodes in graph order (``name`` is the op type; inputs and outputs left empty).
        inputs: Graph inputs that are not initializers (the image).
        outputs: Graph outputs.
        metadata: ``metadata_props`` key to value.
        initializer_elements: Elements per initializer name (weights, biases, constants).
        conv_weights: Per Conv / ConvTranspose node, ``(op type, weight, output, bias)`` names.
        initializer_shapes: Dimensions per initializer name.
        value_shapes: Shapes shape inference recorded (``value_info`` plus inputs and outputs).
    """

    path: Path
    size_bytes: int
    ir_version: int
    opset: int | None
    producer: str
    ops: tuple[OpInfo, ...]
    inputs: tuple[OnnxTensor, ...]
    outputs: tuple[OnnxTensor, ...]
    metadata: dict[str, str]
    initializer_elements: dict[str, int] = field(repr=False, default_factory=dict)
    initializer_shapes: dict[str, tuple[int, ...]] = field(repr=False, default_factory=dict)
    conv_weights: tuple[tuple[str, str, str, str], ...] = field(repr=False, default=())
    value_shapes: dict[str, tuple[int, ...]] = field(repr=False, default_factory=dict)

    format = "onnx"
    is_edgetpu = False

    @property
    def op_names(self) -> list[str]:
        """Op types in graph order."""
        return [op.name for op in self.ops]

    @property
    def is_qdq(self) -> bool:
        """Whether the graph holds QuantizeLinear / DequantizeLinear nodes (an int8 QDQ file)."""
        return any(op.name in QDQ_OPS for op in self.ops)

    @property
    def parameters(self) -> int:
        """Elements of the convolution weights and biases."""
        return sum(self.initializer_elements.get(w, 0) + self.initializer_elements.get(b, 0)
                   for _, w, _, b in self.conv_weights)

    @property
    def macs(self) -> int | None:
        """Multiply-accumulates of one run, from the Conv weights and their inferred output shapes (NCHW);
        None when the file records no output shapes (no shape inference was run on it)."""
        total = 0
        for op, w, out, _ in self.conv_weights:
            ws, os_ = self.initializer_shapes.get(w), self.value_shapes.get(out)
            if not ws or not os_ or len(ws) != 4 or len(os_) != 4 or min(os_) < 1:
                return None
            if op == "Conv":  # weight (O, I/groups, kh, kw), output (N, O, H, W)
                total += os_[2] * os_[3] * ws[0] * ws[1] * ws[2] * ws[3]
            else:  # ConvTranspose weight (I, O/groups, kh, kw): each input pixel scatters into a kh x kw patch
                total += int(np.prod(ws)) * os_[2] * os_[3] // max(1, ws[2] * ws[3])
        return int(total)

    def card(self) -> dict[str, Any] | None:
        """The embedded model card, or None."""
        raw = self.metadata.get(CARD_METADATA_NAME)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError as e:
            raise ModelError(f"{self.path}: the embedded model card is not valid JSON ({e})") from None


def _tensor(buf, span) -> tuple[str, tuple[int, ...], bool]:
    """(name, dims, stored externally) of a TensorProto."""
    name, dims, external = "", [], False
    for num, wt, v in _fields(buf, *span):
        if num == 1 and wt == 0:
            dims.append(_signed(v))
        elif num == 1 and wt == 2:  # packed dims
            pos, end = v
            while pos < end:
                d, pos = _varint(buf, pos, end)
                dims.append(_signed(d))
        elif num == 8 and wt == 2:
            name = _str(buf, v)
        elif num == 14 and wt == 0 and v == 1:  # data_location EXTERNAL
            external = True
    return name, tuple(dims), external


def _node(buf, span) -> tuple[str, list[str], list[str]]:
    op, ins, outs = "", [], []
    for num, wt, v in _fields(buf, *span):
        if wt != 2:
            continue
        if num == 1:
            ins.append(_str(buf, v))
        elif num == 2:
            outs.append(_str(buf, v))
        elif num == 4:
            op = _str(buf, v)
    return op, ins, outs


def inspect_onnx(path: Path, buf, size: int) -> OnnxFileInfo:
    """Validate and describe an ONNX file from its bytes.

    Raises:
        ModelError: Not an ONNX model, truncated, malformed, or with external data.
    """
    try:
        return _walk(path, buf, size)
    except _Truncated as e:
        raise ModelError(f"{path}: truncated or not an ONNX model ({e}); expected a .onnx file written by "
                         "`ocrnet-edge convert --onnx` or another exporter") from None
    except ModelError as e:
        raise ModelError(f"{path}: not an ONNX model ({e})") from None
    except (IndexError, ValueError, OverflowError) as e:
        raise ModelError(f"{path}: malformed ONNX file ({type(e).__name__}: {e})") from None


def _walk(path: Path, buf, size: int) -> OnnxFileInfo:
    ir = None
    producer = []
    opset = None
    graph = None
    metadata: dict[str, str] = {}
    for num, wt, v in _fields(buf, 0, size):
        if num == 1 and wt == 0:
            ir = v
        elif num in (2, 3) and wt == 2:
            producer.append(_str(buf, v))
        elif num == 7 and wt == 2:
            graph = v
        elif num == 8 and wt == 2:
            domain, version = "", None
            for k, kwt, kv in _fields(buf, *v):
                if k == 1 and kwt == 2:
                    domain = _str(buf, kv)
                elif k == 2 and kwt == 0:
                    version = kv
            if domain in ("", "ai.onnx"):
                opset = version
        elif num == 14 and wt == 2:
            key = value = ""
            for k, kwt, kv in _fields(buf, *v):
                if k == 1 and kwt == 2:
                    key = _str(buf, kv)
                elif k == 2 and kwt == 2:
                    value = _str(buf, kv)
            metadata[key] = value
    if ir is None or not IR_VERSIONS[0] <= ir <= IR_VERSIONS[1]:
        raise ModelError(f"no ONNX IR version in [{IR_VERSIONS[0]}, {IR_VERSIONS[1]}] (read {ir})")
    if graph is None:
        raise ModelError("no graph")
    if opset is None:
        raise _Truncated("no default-domain opset (the file ends before its opset_import)")
    nodes, inits, init_shapes, ins, outs, shapes, convs = [], {}, {}, [], [], {}, []
    for num, wt, v in _fields(buf, *graph):
        if wt != 2:
            continue
        if num == 1:
            op, ni, no = _node(buf, v)
            nodes.append(OpInfo(len(nodes), op, (), ()))
            if op in ("Conv", "ConvTranspose") and len(ni) >= 2 and no:
                convs.append((op, ni[1], no[0], ni[2] if len(ni) > 2 else ""))
        elif num == 5:
            name, dims, external = _tensor(buf, v)
            if external:
                raise ModelError(f"initializer {name!r} is stored in an external file; not supported")
            inits[name] = int(np.prod(dims)) if dims else 1
            init_shapes[name] = dims
        elif num in (11, 12, 13):
            t = _value_info(buf, v)
            shapes[t.name] = t.shape
            if num == 11:
                ins.append(t)
            elif num == 12:
                outs.append(t)
    if not nodes or not outs:
        raise ModelError("the graph has no nodes or no outputs")
    inputs = tuple(t for t in ins if t.name not in inits)
    return OnnxFileInfo(
        path=path, size_bytes=size, ir_version=ir, opset=opset, producer=" ".join(p for p in producer if p),
        ops=tuple(nodes), inputs=inputs, outputs=tuple(outs), metadata=metadata, initializer_elements=inits,
        initializer_shapes=init_shapes, conv_weights=tuple(convs), value_shapes=shapes,
    )


def base_name(path: Path) -> str:
    """The model's base name: ``x`` for ``x.onnx``, ``x_int8_qdq.onnx``, ``x_int8.tflite``, ``x_float32.tflite``."""
    stem = path.stem
    for suffix in BUILD_SUFFIXES:
        stem = stem.removesuffix(suffix)
    return stem


def onnx_build(path: Path, int8: bool) -> Path | None:
    """The ONNX file ``convert --onnx`` wrote beside ``path`` for a precision: ``<name>_int8_qdq.onnx`` for
    int8, ``<name>.onnx`` otherwise; ``path`` itself when it is that file; None when there is none."""
    want = path.with_name(base_name(path) + (QDQ_SUFFIX if int8 else "") + ".onnx")
    return want if want.is_file() else None

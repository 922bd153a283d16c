"""Audits of a converted graph: full int8, fused heads, and Edge TPU readiness.

Both read the ``.tflite`` statically (:func:`runtime.modelfile.inspect_model`); nothing is run.
The Edge TPU rules are the Coral compiler's documented ones: every tensor 8-bit, static shapes, at most
three non-unit dimensions per tensor, only mapped ops, a 1-D Softmax of at most 16,000 elements, and
parameters within about 8 MB of on-chip memory (more streams from the host every inference).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ocrnet_edge.runtime.modelfile import ModelFileInfo

FORBIDDEN_OPS = {
    "ASSIGN_VARIABLE": "variable op (BatchNorm ran in training mode during export)",
    "READ_VARIABLE": "variable op (BatchNorm ran in training mode during export)",
    "VAR_HANDLE": "variable op",
    "SHAPE": "shape-dependent op (a dynamic dimension survived export)",
    "TILE": "shape-dependent op (UpSampling2D lowers to TILE; use ops.image.resize)",
    "DEQUANTIZE": "float op (part of the graph stayed float)",
}
EDGETPU_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS", "FULLY_CONNECTED",
    "L2_NORMALIZATION", "LOGISTIC", "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN",
    "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6",
    "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX",
    "SPACE_TO_DEPTH", "SPLIT", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "SQUARED_DIFFERENCE", "TANH",
    "TRANSPOSE", "TRANSPOSE_CONV", "HARD_SWISH",
})
"""Ops the Edge TPU compiler maps (Coral documentation, as listed in FACTS.md)."""
EDGETPU_ONCHIP_BYTES = 8 * 1024 * 1024
SOFTMAX_MAX_ELEMENTS = 16000
EIGHT_BIT = {"int8", "uint8"}


@dataclass(frozen=True)
class GraphAudit:
    """Result of :func:`audit_int8`.

    Attributes:
        problems: One line per problem, naming the op (empty when the graph is clean).
        conv_count: CONV_2D and DEPTHWISE_CONV_2D ops.
        op_counts: Op name to count.
    """

    problems: tuple[str, ...]
    conv_count: int
    op_counts: dict[str, int]

    @property
    def ok(self) -> bool:
        """No problems."""
        return not self.problems


def audit_int8(info: ModelFileInfo, expected_convs: int | None = None, expected_outputs: tuple[str, ...] = ()) -> GraphAudit:
    """Check that a converted graph is full int8, static, one signature, fused.

    Args:
        info: The converted file.
        expected_convs: Convolutions of the Keras model; the graph must hold exactly as many (more
            would mean a branch duplicated the backbone, fewer that a head went missing).
        expected_outputs: Output names the signature must carry.
    """
    problems = []
    counts: dict[str, int] = {}
    for op in info.ops:
        counts[op.name] = counts.get(op.name, 0) + 1
        if op.name in FORBIDDEN_OPS:
            problems.append(f"op {op.index} {op.name}: {FORBIDDEN_OPS[op.name]}")
        for t in op.inputs + op.outputs:
            if t >= 0 and info.tensors[t].dtype in ("float32", "float16"):
                problems.append(f"op {op.index} {op.name}: float tensor '{info.tensors[t].name}' "
                                f"({info.tensors[t].dtype}); the graph must be int8 throughout")
                break
    for t in info.tensors:
        if t.is_variable:
            problems.append(f"tensor '{t.name}' is a variable")
        if any(d < 0 for d in t.shape):
            problems.append(f"tensor '{t.name}' has a dynamic shape {t.shape}")
    if len(info.signatures) != 1:
        problems.append(f"expected one signature, found {sorted(info.signatures)}")
    else:
        (sig,) = info.signatures.values()
        missing = sorted(set(expected_outputs) - set(sig["outputs"]))
        if missing:
            problems.append(f"signature lacks outputs {missing}")
        for name, t in sig["inputs"].items():
            ti = info.tensors[t]
            if ti.dtype != "uint8" or ti.scale != 1.0 or ti.zero_point != 0 or ti.shape[:1] != (1,):
                problems.append(
                    f"input '{name}' must be uint8 with scale 1 and zero point 0 at batch 1 so raw pixels go "
                    f"straight in; got {ti.dtype} scale={ti.scale} zero_point={ti.zero_point} shape={ti.shape}"
                )
        for name, t in sig["outputs"].items():
            ti = info.tensors[t]
            if ti.dtype not in EIGHT_BIT or ti.scale is None:
                problems.append(f"output '{name}' is {ti.dtype} without quantization; expected int8")
    convs = counts.get("CONV_2D", 0) + counts.get("DEPTHWISE_CONV_2D", 0)
    if expected_convs is not None and convs != expected_convs:
        problems.append(
            f"the graph holds {convs} convolutions but the Keras model has {expected_convs}: the heads are not "
            "one fused graph over one backbone"
        )
    return GraphAudit(tuple(problems), convs, counts)


@dataclass(frozen=True)
class EdgeTpuReport:
    """Static Edge TPU readiness of a graph.

    Attributes:
        total_ops: Ops in the graph.
        mapped_ops: Ops on the compiler's list that also meet its tensor rules.
        first_unmapped: ``"op N NAME: reason"`` of the first op where the compiler would cut the graph
            (it and everything after run on the CPU), or None.
        problems: Every rule broken, one line each.
        parameter_bytes: Constant data size.
        onchip_bytes: The on-chip parameter memory assumed.
        already_compiled: The file already holds the Edge TPU custom op.
    """

    total_ops: int
    mapped_ops: int
    first_unmapped: str | None
    problems: tuple[str, ...]
    parameter_bytes: int
    onchip_bytes: int = EDGETPU_ONCHIP_BYTES
    already_compiled: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def mapped_share(self) -> float:
        """Share of ops that map (1.0 for a fully mappable graph)."""
        return self.mapped_ops / self.total_ops if self.total_ops else 0.0

    @property
    def ok(self) -> bool:
        """Every op maps and no rule is broken."""
        return not self.problems

    def as_dict(self) -> dict:
        """JSON-ready."""
        return {
            "ok": self.ok, "total_ops": self.total_ops, "mapped_ops": self.mapped_ops,
            "mapped_share": round(self.mapped_share, 4), "first_unmapped": self.first_unmapped,
            "problems": list(self.problems), "parameter_bytes": self.parameter_bytes,
            "onchip_bytes": self.onchip_bytes, "already_compiled": self.already_compiled, "notes": list(self.notes),
        }


def _op_problem(info: ModelFileInfo, op) -> str | None:
    if op.name not in EDGETPU_OPS:
        return "not an Edge TPU op"
    for t in op.inputs + op.outputs:
        if t < 0:
            continue
        ti = info.tensors[t]
        if ti.buffer_bytes:  # constants (weights, biases, shape arguments) follow the op's own rules
            continue
        if ti.dtype not in EIGHT_BIT:
            return f"tensor '{ti.name}' is {ti.dtype}, not 8-bit"
        if any(d < 0 for d in ti.shape):
            return f"tensor '{ti.name}' has a dynamic shape"
        if sum(1 for d in ti.shape if d != 1) > 3:
            return f"tensor '{ti.name}' of shape {ti.shape} has more than 3 non-unit dimensions"
    if op.name == "SOFTMAX":
        shape = info.tensors[op.inputs[0]].shape
        if sum(1 for d in shape if d != 1) > 1 or int(np.prod(shape)) > SOFTMAX_MAX_ELEMENTS:
            return f"Softmax on {shape}: the Edge TPU maps 1-D Softmax of at most {SOFTMAX_MAX_ELEMENTS} elements"
    return None


def check_edgetpu(info: ModelFileInfo) -> EdgeTpuReport:
    """Check every op against the Edge TPU compiler's op list and rules."""
    if info.is_edgetpu:
        cpu_ops = [op for op in info.ops if op.name != "edgetpu-custom-op"]
        return EdgeTpuReport(
            total_ops=len(info.ops), mapped_ops=len(info.ops) - len(cpu_ops),
            first_unmapped=f"op {cpu_ops[0].index} {cpu_ops[0].name}: left on the CPU by the compiler" if cpu_ops else None,
            problems=tuple(f"op {op.index} {op.name}: left on the CPU by the compiler" for op in cpu_ops),
            parameter_bytes=info.parameter_bytes, already_compiled=True,
            notes=("already compiled: the ops inside edgetpu-custom-op run on the TPU",),
        )
    problems, first, mapped = [], None, 0
    for op in info.ops:
        why = _op_problem(info, op)
        if why is None:
            mapped += 1
            continue
        line = f"op {op.index} {op.name}: {why}"
        problems.append(line)
        first = first or line
    for name, t in ((n, info.tensors[i]) for n, i in [(info.tensors[i].name, i) for i in info.inputs]):
        if t.dtype not in EIGHT_BIT:
            problems.append(f"input '{name}' is {t.dtype}; the Edge TPU needs 8-bit inputs")
    notes = []
    if info.parameter_bytes > EDGETPU_ONCHIP_BYTES:
        notes.append(
            f"parameters take {info.parameter_bytes / 2**20:.1f} MiB, more than the ~8 MiB on chip: the rest streams "
            "from the host every inference (slower, still correct)"
        )
    return EdgeTpuReport(len(info.ops), mapped, first, tuple(problems), info.parameter_bytes, notes=tuple(notes))

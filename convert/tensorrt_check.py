"""Static TensorRT readiness of an ONNX file, per TensorRT version, like the Edge TPU check: nothing is built.

The rules are those of the ONNX parser that each Jetson release ships (onnx-tensorrt's ``operators.md`` of
the release branch, and what was measured, see FACTS.md "ONNX and TensorRT"):

- opset: TensorRT 8.2 (JetPack 4.6, Jetson Nano) parses up to opset 13; 8.5 and 8.6 (JetPack 5) up to 17;
  10.x (JetPack 6: 10.3) from 9 to 20.
- ops: only the ONNX (default-domain) ops on the parser's list; another domain needs a plugin.
- Resize: ``tf_half_pixel_for_nn`` is refused unless ``nearest_mode=round_prefer_floor`` (how tf2onnx writes
  Keras' nearest upsampling before the converter's rewrite).
- Quantize/DequantizeLinear: int8 with zero point 0 (symmetric), scales and zero points constant; no
  uint8 quantization and no int32 (bias) DequantizeLinear.
- inputs: no uint8 input (the float file takes float32 pixels); static shapes (the runtime builds engines
  without optimization profiles).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ocrnet_edge.runtime.errors import InputError


@dataclass(frozen=True)
class TrtTarget:
    """What one TensorRT version's ONNX parser takes.

    Attributes:
        version: ``major.minor``.
        platform: Where users meet it.
        min_opset: Lowest default-domain opset parsed.
        max_opset: Highest default-domain opset parsed.
        extra_ops: Ops added since TensorRT 8.2's list.
        int8: Whether the platform's GPU runs INT8 (Jetson Nano's Maxwell does not).
    """

    version: str
    platform: str
    min_opset: int
    max_opset: int
    extra_ops: frozenset[str] = frozenset()
    int8: bool = True


BASE_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu Clip Concat
Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal
Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
Greater GreaterOrEqual GRU HardSigmoid HardSwish Identity If ImageScaler InstanceNormalization IsInf IsNaN LeakyRelu Less
LessOrEqual Log LogSoftmax Loop LpNormalization LpPool LRN LSTM MatMul Max MaxPool Mean Min Mod Mul Neg Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal
ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu
Reshape Resize ReverseSequence RNN Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign
Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK
Transpose Unsqueeze Upsample Where Xor
""".split())
"""Ops TensorRT 8.2's ONNX parser takes (onnx-tensorrt release/8.2-GA ``operators.md``)."""
JETPACK5_OPS = frozenset({"NonZero", "RoiAlign", "Trilu", "NonMaxSuppression"})
JETPACK6_OPS = JETPACK5_OPS | {"LayerNormalization", "GridSample", "GroupNormalization", "BitwiseAnd", "BitwiseOr",
                               "BitwiseXor", "BitwiseNot", "Mish", "ReduceLogSumExp"}

TARGETS = {
    "8.2": TrtTarget("8.2", "JetPack 4.6 (Jetson Nano, FP16 only)", 7, 13, int8=False),
    "8.5": TrtTarget("8.5", "JetPack 5.1 (Xavier, Orin)", 7, 17, JETPACK5_OPS),
    "8.6": TrtTarget("8.6", "JetPack 5 / x86-64", 7, 17, JETPACK5_OPS | {"LayerNormalization", "GridSample"}),
    "10.3": TrtTarget("10.3", "JetPack 6.1/6.2 (Orin)", 9, 20, JETPACK6_OPS),
}
"""The TensorRT versions checked, by ``major.minor``."""
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
INT8 = 3
UINT8 = 2
INT32 = 6


def target(version: str) -> TrtTarget:
    """The rules for ``version`` (``10.3``; another minor version of a known major takes that major's
    newest rules at or below it).

    Raises:
        InputError: A version this check does not know.
    """
    if version in TARGETS:
        return TARGETS[version]
    try:
        major, minor = (int(p) for p in version.split(".")[:2])
    except ValueError:
        raise InputError(f"--trt takes a TensorRT version such as 10.3. Received: {version!r}") from None
    same = [t for k, t in TARGETS.items() if int(k.split(".")[0]) == major and int(k.split(".")[1]) <= minor]
    if not same:
        raise InputError(f"TensorRT {version} is not among the versions checked ({', '.join(TARGETS)})")
    return same[-1]


@dataclass(frozen=True)
class TrtReport:
    """Static readiness of one ONNX graph for one TensorRT version.

    Attributes:
        version: The TensorRT version's rules applied.
        platform: Where it ships.
        opset: The graph's default-domain opset.
        problems: What the parser (or engine build) would refuse, one line each, naming the node.
        notes: What works but is worth knowing (an INT8 file where the GPU has no INT8).
    """

    version: str
    platform: str
    opset: int | None
    problems: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """Nothing would be refused."""
        return not self.problems

    def as_dict(self) -> dict:
        """JSON-ready."""
        return {"version": self.version, "platform": self.platform, "opset": self.opset, "ok": self.ok,
                "problems": list(self.problems), "notes": list(self.notes)}


def _attr(node, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            if a.type == a.STRING:
                return a.s.decode()
            if a.type == a.INT:
                return a.i
            return a
    return default


def _graph_problems(model) -> list[str]:
    """Problems independent of the TensorRT version (every listed version refuses them)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    consts = set(inits) | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    problems = []
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        t = inp.type.tensor_type
        if t.elem_type == UINT8:
            problems.append(f"input '{inp.name}' is uint8: TensorRT takes float32 or float16 network inputs here "
                            "(export from the float model, not from the int8 .tflite)")
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
        if any(not isinstance(d, int) or d <= 0 for d in dims):
            problems.append(f"input '{inp.name}' has a dynamic shape {dims}: the runtime builds static engines "
                            "(export at batch 1 and a fixed size)")
    for node in model.graph.node:
        where = f"node '{node.name}' ({node.op_type})"
        if node.op_type == "Resize" and _attr(node, "mode", "nearest") == "nearest":
            ctm = _attr(node, "coordinate_transformation_mode", "half_pixel")
            nearest = _attr(node, "nearest_mode", "round_prefer_floor")
            if ctm == "tf_half_pixel_for_nn" and nearest != "round_prefer_floor":
                problems.append(f"{where}: coordinate_transformation_mode=tf_half_pixel_for_nn with nearest_mode="
                                f"{nearest}: TensorRT only supports round_prefer_floor there (for an integer factor "
                                "asymmetric + floor is the same function; convert rewrites it)")
        if node.op_type in QDQ_OPS:
            if len(node.input) < 2 or node.input[1] not in consts:
                problems.append(f"{where}: the scale must be a constant")
            if len(node.input) > 2 and node.input[2]:
                if node.input[2] not in inits:
                    problems.append(f"{where}: the zero point must be a constant")
                else:
                    zp = inits[node.input[2]]
                    values = numpy_helper.to_array(zp)
                    if zp.data_type == UINT8:
                        problems.append(f"{where}: uint8 quantization; TensorRT takes int8 (symmetric) Q/DQ only")
                    elif zp.data_type == INT32:
                        problems.append(f"{where}: int32 DequantizeLinear (a quantized bias); TensorRT wants float "
                                        "biases beside int8 Q/DQ")
                    elif zp.data_type != INT8:
                        problems.append(f"{where}: {zp.data_type} quantization; int8 expected")
                    if np.any(values != 0):
                        problems.append(f"{where}: zero point {int(values.ravel()[np.flatnonzero(values)[0]])} (not 0): "
                                        "TensorRT takes symmetric quantization only")
            elif node.op_type == "DequantizeLinear" and node.input[0] in inits:
                if inits[node.input[0]].data_type == INT32:
                    problems.append(f"{where}: int32 DequantizeLinear (a quantized bias); TensorRT wants float biases")
    return problems


def check_tensorrt(model, versions: list[str] | tuple[str, ...] | None = None) -> dict[str, TrtReport]:
    """Check an ``onnx.ModelProto`` against each TensorRT version's parser rules.

    Args:
        model: The ONNX graph.
        versions: ``major.minor`` versions (default: every one in :data:`TARGETS`).

    Returns:
        One :class:`TrtReport` per version, by version.
    """
    common = _graph_problems(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    has_qdq = any(n.op_type in QDQ_OPS for n in model.graph.node)
    out = {}
    for v in versions or list(TARGETS):
        t = target(v)
        problems = []
        if opset is None or not t.min_opset <= opset <= t.max_opset:
            fix = " (convert --board jetson-nano exports opset 13)" if opset and opset > t.max_opset else ""
            problems.append(f"opset {opset}: TensorRT {t.version}'s parser takes opsets {t.min_opset} to "
                            f"{t.max_opset}{fix}")
        ops = BASE_OPS | t.extra_ops
        seen = set()
        for node in model.graph.node:
            if node.domain not in ("", "ai.onnx"):
                key = f"{node.domain}.{node.op_type}"
                if key not in seen:
                    problems.append(f"node '{node.name}' ({key}): not an ONNX op; TensorRT needs a plugin for it")
                    seen.add(key)
            elif node.op_type not in ops and node.op_type not in seen:
                problems.append(f"node '{node.name}' ({node.op_type}): not on TensorRT {t.version}'s ONNX op list")
                seen.add(node.op_type)
        notes = []
        if has_qdq and not t.int8:
            notes.append(f"{t.platform}: the GPU has no INT8; use the float file there (TensorRT builds it in FP16)")
        out[v] = TrtReport(t.version, t.platform, opset, tuple(problems + common), tuple(notes))
    return out

"""Explicit symmetric QDQ INT8 for TensorRT, built from the float ONNX file: ``<name>_int8_qdq.onnx``.

TensorRT INT8 wants explicit quantization: QuantizeLinear/DequantizeLinear pairs with zero point 0 (int8,
symmetric), per-channel weights, float biases; its implicit calibrator is deprecated since 10.1. The int8
``.tflite`` file is no source for it (converted to ONNX it has non-zero activation zero points, a uint8 input
and int32 bias dequantization, see FACTS.md). So the QDQ graph is made here from the float ONNX file,
calibrated on the same calibration images (the same files, through the runtime's preprocessing) as the
TFLite file.

Which quantizer, decided by measurement (late 2026):

- NVIDIA ModelOpt (``nvidia-modelopt`` 0.47.0, 2.2 MB wheel) requires ``torch>=2.8`` in its base install and,
  for its ONNX quantizer, ``onnx~=1.21`` (this project runs onnx 1.23 beside tf2onnx), ``onnxruntime-gpu~=1.24``
  and ``cupy-cuda12x`` on x86-64 Linux: several GB of torch and CUDA wheels, and a pinned onnx that conflicts
  with ours. Not light, so not used.
- ONNX Runtime's ``quantize_static`` (already in the ``onnx`` extra) with ``QuantFormat.QDQ``, int8
  activations and weights, ``ActivationSymmetric`` and ``WeightSymmetric`` (zero point 0), per-channel
  weights, ``QuantizeBias=False`` (float bias: TensorRT refuses int32 bias DequantizeLinear), and Q/DQ only
  on the inputs of Conv and Add (``OpTypesToExcludeOutputQuantization``): NVIDIA's placement, where TensorRT
  fuses each DQ -> Conv -> (Add) -> Q chain. Quantizing every Conv and Add output as well scored clearly worse
  (FACTS.md: mask prototypes cosine 0.81 against 0.92).

Where it loses, measured on the reference model at 320 (100 held-out scenes, 200 calibration images; drops
from the float ONNX file in points, box AP / mask AP / mIoU; the int8 TFLite file: 0.07 / 0.59 / 0.05):

- MinMax, Q/DQ on the inputs of Conv and Add, everything quantized: 0.44 / 0.46 / -0.02. More box AP lost than
  the TFLite file (less mask AP and mIoU). ONNX Runtime's QDQ loss debugger (:func:`layer_errors`) puts the
  largest local rounding error in the detection head's depthwise outputs and the OCR concatenations, and the
  accumulated error grows through the shared trunk: symmetric int8 spends half its range on the negative side
  of ReLU6 outputs, which TFLite's asymmetric activations do not.
- the detection head (its 21 convolutions over three levels, 16-32 channels: little of the model's compute)
  left unquantized, i.e. FP16 on TensorRT: 0.28 / 0.33 / -0.02; cosine of every detection output up (boxes
  0.99704 -> 0.99721, scores 0.99811 -> 0.99841). The default (:func:`detection_head`).
- the mask prototypes' last one or two convolutions left unquantized: no change (cosine 0.9687 -> 0.9688;
  their error comes from the trunk).
- Q/DQ on Conv inputs only (Adds in FP16): worse, 0.65 / 0.66 / 0.01.
- Percentile calibration: ONNX Runtime's histogram calibrator (entropy shares it) keeps the activations of
  the calibration images; at 320 with the 200 images the TFLite file uses, the process passed 20 GB and was
  killed. ``convert`` uses MinMax; :class:`QdqPlan` still takes the others for small inputs.

TensorRT runs the layers without Q/DQ in FP16 when the FP16 flag is set beside INT8 (the runtime's INT8 build).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ocrnet_edge.runtime.contract import InputSize
from ocrnet_edge.runtime.errors import InputError

QUANTIZED_OPS = ("Conv", "Add")
"""Ops whose inputs get Q/DQ (NVIDIA's placement for TensorRT)."""
METHODS = ("minmax", "percentile", "entropy")
DEFAULT_METHOD = "minmax"
PERCENTILE = 99.999
"""Percentile of the calibration histogram kept as the range, for ``percentile``."""


@dataclass(frozen=True)
class QdqPlan:
    """How the QDQ file is made.

    Attributes:
        method: Calibration: ``minmax``, ``percentile`` or ``entropy``.
        keep_float: Node names left unquantized (TensorRT runs them in FP16).
        ops: Op types whose inputs get Q/DQ.
    """

    method: str = DEFAULT_METHOD
    keep_float: tuple[str, ...] = ()
    ops: tuple[str, ...] = QUANTIZED_OPS

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"QDQ calibration method must be one of {METHODS}. Received: {self.method!r}")


def calibration_reader(files: Sequence[Path], size: InputSize, input_name: str = "image"):
    """An ONNX Runtime ``CalibrationDataReader`` over calibration images, each ``{input_name: (1, S, S, 3)
    float32}`` pixels 0..255, preprocessed exactly as for the TFLite file (:func:`calibration.iter_preprocessed`)."""
    from onnxruntime.quantization import CalibrationDataReader

    from .calibration import iter_preprocessed

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(iter_preprocessed(tuple(files), size))

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {input_name: x}

        def rewind(self) -> None:
            self._it = iter(iter_preprocessed(tuple(files), size))

    return _Reader()


def producers_of(model, output: str, stop_ops: Iterable[str] = ("Conv",), depth: int = 1) -> list[str]:
    """Nodes between ``output`` and the ``depth``-th layer of ``stop_ops`` above it on every path, those
    included: the head that produces one output (e.g. the mask prototypes' last convolutions)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    stops = set(stop_ops)
    found: list[str] = []
    frontier = [(output, 0)]
    seen: set[str] = set()
    while frontier:
        name, convs = frontier.pop()
        node = producer.get(name)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        found.append(node.name)
        here = convs + (node.op_type in stops)
        if here >= depth:
            continue
        frontier.extend((i, here) for i in node.input if i in producer)
    return found


DETECTION_OUTPUTS = ("det_scores", "det_boxes", "det_coeffs")
HEAD_CONVS = 5
"""Convolutions on every path from a detection output up to the shared features: dw, pw, dw, pw, then the
class / box / coefficient convolution."""


def detection_head(model) -> tuple[str, ...]:
    """The detection head's Conv nodes (found from the graph, not by name): the default ``keep_float``."""
    found: set[str] = set()
    names = {o.name for o in model.graph.output}
    for out in DETECTION_OUTPUTS:
        if out in names:
            found.update(producers_of(model, out, depth=HEAD_CONVS))
    return tuple(n.name for n in model.graph.node if n.op_type == "Conv" and n.name in found)


def quantize_qdq(float_model, out: Path, files: Sequence[Path], size: InputSize, plan: QdqPlan = QdqPlan()):
    """Write the explicit symmetric QDQ INT8 graph of ``float_model`` (an ``onnx.ModelProto`` or path).

    Args:
        float_model: The float32 ONNX graph (BatchNorm folded, shapes inferred).
        out: Where to write (the caller renames it into place).
        files: Calibration images (the TFLite file's).
        size: Input size: a side, or ``(width, height)``.
        plan: Calibration method and nodes kept in float.

    Returns:
        The quantized ``onnx.ModelProto`` (also written to ``out``).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from ocrnet_edge.runtime.quiet import native_stderr_quiet

    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[plan.method]
    extra = {
        "ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
        "OpTypesToExcludeOutputQuantization": list(plan.ops),
        "CalibMaxIntermediateOutputs": 16,  # bounds the calibrator's memory; the same ranges result
    }
    if plan.method == "percentile":
        extra["CalibPercentile"] = PERCENTILE
    with tempfile.TemporaryDirectory(prefix="ocrnet-qdq-") as d, native_stderr_quiet():
        src = Path(d) / "float.onnx"  # quantize_static moves a ModelProto's weights out to external data: give a copy
        if isinstance(float_model, (str, Path)):
            shutil.copyfile(float_model, src)
        else:
            onnx.save(float_model, str(src))
        quantize_static(str(src), str(out), calibration_reader(files, size), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(plan.ops), per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=list(plan.keep_float), calibrate_method=method, extra_options=extra)
    return onnx.load(str(out))


def unquantized_nodes(model, ops: Iterable[str] = QUANTIZED_OPS) -> list[str]:
    """Nodes of ``ops`` in a QDQ graph none of whose inputs comes from a DequantizeLinear (they run in FP16
    on TensorRT)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    kinds = set(ops)
    return [n.name for n in model.graph.node if n.op_type in kinds
            and not any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input)]


def qdq_stats(model) -> dict:
    """Counts of a QDQ graph: Q and DQ nodes, and the Conv/Add nodes quantized and not."""
    ops = [n.op_type for n in model.graph.node]
    floats = unquantized_nodes(model)
    total = sum(op in QUANTIZED_OPS for op in ops)
    return {"quantize_linear": ops.count("QuantizeLinear"), "dequantize_linear": ops.count("DequantizeLinear"),
            "quantized_nodes": total - len(floats), "float_nodes": floats}


def zero_points(model) -> dict[str, np.ndarray]:
    """Zero points of every Q/DQ node (initializer values), by node name."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in inits:
            out[n.name] = numpy_helper.to_array(inits[n.input[2]])
    return out


def layer_errors(float_path: Path, qdq_path: Path, files: Sequence[Path], size: InputSize, images: int = 2,
                 top: int = 10) -> list[dict]:
    """Where the QDQ graph loses, per quantized tensor (ONNX Runtime's QDQ loss debugger, the counterpart
    of TensorFlow's quantization debugger used for the TFLite file), over the first ``images`` calibration
    images.

    Returns:
        Up to ``top`` dicts ``{tensor, sqnr_db, local_sqnr_db}``: the signal-to-quantization-noise ratio of
        the tensor in the QDQ graph against the float graph (all error accumulated up to it), and of its own
        Q/DQ rounding alone; lowest local SQNR (the worst placed quantization) first.
    """
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    from ocrnet_edge.runtime.quiet import native_stderr_quiet

    subset = tuple(files)[:images]  # every tensor of both graphs is held: about 0.35 GB per image at 320
    with tempfile.TemporaryDirectory(prefix="ocrnet-qdq-debug-") as d, native_stderr_quiet():
        acts = {}
        for tag, path in (("float", float_path), ("qdq", qdq_path)):
            aug = Path(d) / f"{tag}.onnx"
            modify_model_output_intermediate_tensors(str(path), str(aug))
            acts[tag] = collect_activations(str(aug), calibration_reader(subset, size),
                                            execution_providers=["CPUExecutionProvider"])
    errors = compute_activation_error(create_activation_matching(acts["qdq"], acts["float"]))
    rows = [{"tensor": name, "sqnr_db": float(e.get("xmodel_err", float("nan"))), "local_sqnr_db": float(e["qdq_err"])}
            for name, e in errors.items() if "qdq_err" in e]
    rows.sort(key=lambda r: r["local_sqnr_db"])
    return rows[:top]

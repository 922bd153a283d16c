"""``convert --onnx``: the ONNX files for TensorRT and ONNX Runtime, written beside the TFLite files.

    float32 ONNX (BatchNorm folded, Resize rewritten, card inside) -> symmetric QDQ INT8 (same calibration
    images) -> gate: float vs Keras (noise), FP16 and QDQ vs float (task metrics, same --max-drop)
    -> static TensorRT check per version -> report part

Every file is written through a temporary name; a file that fails the gate is written as
``<name>_gatefailed.onnx`` / ``<name>_int8_qdq_gatefailed.onnx`` and the error is raised after the reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ocrnet_edge.model.config import ModelConfig
from ocrnet_edge.model.data import Dataset
from ocrnet_edge.model.evaluate import Scored
from ocrnet_edge.runtime.errors import GateError

from . import fidelity, onnx_export, onnx_fidelity, onnx_quant, tensorrt_check

QDQ_SUFFIX = "_int8_qdq"


@dataclass
class OnnxOutcome:
    """What the ONNX step wrote and measured.

    Attributes:
        float_path: ``<name>.onnx`` (or its ``_gatefailed`` name).
        qdq_path: ``<name>_int8_qdq.onnx`` (or its ``_gatefailed`` name).
        report: The report part (``onnx`` key of the conversion report).
        error: The gate failure to raise after the reports, or None.
    """

    float_path: Path
    qdq_path: Path
    report: dict = field(default_factory=dict)
    error: GateError | None = None


def export_onnx(net, cfg: ModelConfig, out_dir: Path, name: str, source: Path, calib_files: tuple[Path, ...],
                card_kw: dict, opset: int, gate: tuple[str, Dataset, dict, Scored] | None, tflite_drops: dict | None,
                max_drop: float, work: Path, threads: int = 2, progress: bool = False,
                plan: onnx_quant.QdqPlan | None = None) -> OnnxOutcome:
    """Write, gate and check the ONNX files of a model.

    Args:
        net: The Keras model at batch 1 and the export size.
        cfg: Architecture and export size.
        out_dir: Output folder (writable).
        name: Model name.
        source: The Keras file (its hash goes into the cards).
        calib_files: The TFLite file's calibration images.
        card_kw: ``calibration``, ``gate``, ``pretrained`` entries of the card, as for the TFLite card.
        opset: ONNX opset (17; 13 for Jetson Nano).
        gate: ``(description, gate images, Keras float metrics, their per-image material)``, or None without the
            gate.
        tflite_drops: The int8 TFLite file's drops in points (to compare the QDQ file with), or None.
        max_drop: Allowed drop in points.
        work: Scratch folder.
        threads: ONNX Runtime threads.
        progress: Show progress bars.
        plan: How the QDQ file is calibrated; None: MinMax, the detection head left in float (see
            :mod:`convert.onnx_quant` for the measurements behind that choice).
    """
    import time

    report: dict = {"opset": opset}
    t0 = time.perf_counter()
    static = onnx_export.static_model(net, cfg)
    model, rewritten = onnx_export.to_float_onnx(static, cfg, opset)
    report["export_seconds"] = round(time.perf_counter() - t0, 2)
    report["resize_rewritten"] = rewritten
    staged_float = work / f"{name}.onnx"
    onnx_export.embed_onnx_card(model, onnx_export.onnx_card(model, cfg, name, source, "float32", **card_kw))
    onnx_export.save_onnx_atomic(model, staged_float)

    t0 = time.perf_counter()
    plan = plan or onnx_quant.QdqPlan(keep_float=onnx_quant.detection_head(model))
    staged_qdq = work / f"{name}{QDQ_SUFFIX}.onnx"
    qdq = onnx_quant.quantize_qdq(staged_float, staged_qdq, calib_files, cfg.input_size, plan)
    stats = onnx_quant.qdq_stats(qdq)
    quant_note = {"calibration_method": plan.method, "kept_float": list(plan.keep_float),
                  "float_nodes": stats["float_nodes"], "quantized_nodes": stats["quantized_nodes"],
                  "placement": "Q/DQ on the inputs of " + " and ".join(plan.ops)}
    onnx_export.embed_onnx_card(qdq, onnx_export.onnx_card(qdq, cfg, name, source, "int8_qdq",
                                                            quantization={"symmetric": True, **quant_note}, **card_kw))
    onnx_export.save_onnx_atomic(qdq, staged_qdq)
    report["quantize_seconds"] = round(time.perf_counter() - t0, 2)
    report["qdq"] = {**quant_note, "quantize_linear": stats["quantize_linear"],
                     "dequantize_linear": stats["dequantize_linear"]}

    report["tensorrt"] = {
        staged_float.name: {v: r.as_dict() for v, r in tensorrt_check.check_tensorrt(model).items()},
        staged_qdq.name: {v: r.as_dict() for v, r in tensorrt_check.check_tensorrt(qdq).items()},
    }

    float_ok = qdq_ok = True
    failures = []
    if gate is not None:
        description, heldout, keras_metrics, keras_scored = gate
        t0 = time.perf_counter()
        ref = onnx_fidelity.CachedReference(static)
        size = cfg.input_size
        files = {}
        ag, f_metrics, res, f_scored = onnx_fidelity.check_file(ref, staged_float, size, heldout, keras_metrics,
                                                                max_drop, threads, progress, keras_scored)
        noise = onnx_fidelity.noise_failures(ag)
        files["float32"] = onnx_fidelity.OnnxFidelity(f"{name}.onnx", "float32", "Keras float model", description, ag,
                                                      res, noise)
        ag, _, res, _ = onnx_fidelity.check_file(ref, onnx_fidelity.float16_copy(model), size, heldout, f_metrics,
                                                 max_drop, threads, progress, f_scored)
        files["float16"] = onnx_fidelity.OnnxFidelity(
            f"{name}.onnx as FP16", "float16", "float ONNX", description, ag, res,
            notes={"how": "the float file converted to float16 (inputs and outputs float32), as TensorRT's FP16 "
                          "build computes; no file written"})
        ag, _, res, _ = onnx_fidelity.check_file(ref, staged_qdq, size, heldout, f_metrics, max_drop, threads, progress,
                                                 f_scored)
        files["int8_qdq"] = onnx_fidelity.OnnxFidelity(staged_qdq.name, "int8_qdq", "float ONNX", description, ag,
                                                       res, notes={"quantization": quant_note})
        report["gate_seconds"] = round(time.perf_counter() - t0, 2)
        float_ok = files["float32"].ok and files["float16"].ok
        qdq_ok = files["int8_qdq"].ok
        failures = [f"{f.file}: " + (f.result.failures() or "; ".join(f.noise_failures))
                    for f in files.values() if not f.ok]
        report["fidelity"] = {k: f.as_dict() for k, f in files.items()}
        if tflite_drops is not None:
            qdq_drops = files["int8_qdq"].result.drops
            report["qdq_vs_tflite_int8"] = {k: {"qdq": qdq_drops.get(k), "tflite_int8": tflite_drops.get(k)}
                                            for k in tflite_drops}
            worse = [k for k, v in report["qdq_vs_tflite_int8"].items()
                     if v["qdq"] is not None and v["tflite_int8"] is not None and v["qdq"] > v["tflite_int8"]]
            if worse:  # where the QDQ graph loses (cheap: a few images through both graphs)
                report["qdq_worse_than_tflite_on"] = worse
                report["qdq_layers"] = onnx_quant.layer_errors(staged_float, staged_qdq, calib_files, size)

    float_path = out_dir / (f"{name}.onnx" if float_ok else f"{name}_gatefailed.onnx")
    qdq_path = out_dir / (f"{name}{QDQ_SUFFIX}.onnx" if qdq_ok else f"{name}{QDQ_SUFFIX}_gatefailed.onnx")
    for staged, final in ((staged_float, float_path), (staged_qdq, qdq_path)):
        tmp = final.with_name(final.name + ".partial")
        tmp.write_bytes(staged.read_bytes())
        tmp.replace(final)
    report["files"] = {"float32": {"path": float_path.name, "bytes": float_path.stat().st_size},
                       "int8_qdq": {"path": qdq_path.name, "bytes": qdq_path.stat().st_size}}
    error = None
    if failures:
        hint = fidelity.chance_hint([f.result for f in files.values()], len(heldout))
        error = GateError(f"ONNX fidelity gate failed ({'; '.join(failures)}; at most {max_drop} points allowed){hint}; "
                          f"written as {float_path.name}, {qdq_path.name}")
    return OnnxOutcome(float_path, qdq_path, report, error)

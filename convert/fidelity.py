"""The fidelity gate: how far the int8 file is from the float model, per output and per task.

Per output: cosine similarity, max and mean absolute error of the dequantized int8 output against the
float Keras model on held-out images (the same uint8 pixels into both). Per task: the evaluator's box
AP, mask AP and mIoU of both, side by side. The gate fails when any of the three drops by more than
``max_drop`` points; then the report names the layers with the largest quantization error (TensorFlow's
quantization debugger) and what to try.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from ocrnet_edge.model.data import Dataset
from ocrnet_edge.runtime.engine import Engine
from ocrnet_edge.runtime.preprocess import preprocess_into

GATED = ("box_ap", "mask_ap", "miou")
SUGGESTIONS = (
    "calibrate on more images that look like the deployment scenes and contain objects of every class",
    "check that calibration images reach 0 and 255 (the uint8 input must keep scale 1)",
    "bound wide-range activations inside the graph (ReLU6, sigmoid/tanh on outputs)",
    "keep the layers named below in higher precision by retraining with quantization-aware training",
)


@dataclass(frozen=True)
class OutputAgreement:
    """Agreement of one output over the held-out images.

    Attributes:
        cosine: Cosine similarity of the flattened int8 (dequantized) and float outputs, all images.
        max_abs: Largest absolute difference.
        mean_abs: Mean absolute difference.
        scale: The output's quantization step, to read errors in steps.
    """

    cosine: float
    max_abs: float
    mean_abs: float
    scale: float


@dataclass
class _Acc:
    dot: float = 0.0
    na: float = 0.0
    nb: float = 0.0
    max_abs: float = 0.0
    sum_abs: float = 0.0
    count: int = 0
    scale: float = 0.0


def output_agreement(float_model, engine: Engine, dataset: Dataset, progress: bool = True) -> dict[str, OutputAgreement]:
    """Compare every output of the int8 engine with the float Keras model on ``dataset``'s images."""
    size = engine.input_size
    buf = np.empty((1, size, size, 3), np.uint8)
    accs: dict[str, _Acc] = {}
    for rec in tqdm(dataset.records, desc="fidelity", unit="img", disable=not progress):
        preprocess_into(rec.image(), buf)
        ref = {k: np.asarray(v, np.float64) for k, v in float_model(buf.astype(np.float32), training=False).items()}
        view = engine.backend.input_view()
        view[...] = buf
        del view
        raw = engine.backend.invoke()
        for name, q in raw.items():
            a = engine.quants[name].dequantize(q).astype(np.float64).ravel()
            b = ref[name].ravel()
            acc = accs.setdefault(name, _Acc(scale=float(engine.quants[name].scale or 0.0)))
            acc.dot += float(a @ b)
            acc.na += float(a @ a)
            acc.nb += float(b @ b)
            d = np.abs(a - b)
            acc.max_abs = max(acc.max_abs, float(d.max()))
            acc.sum_abs += float(d.sum())
            acc.count += d.size
        del raw, q  # views into the interpreter's buffers must be gone before the next invoke
    return {
        n: OutputAgreement(
            cosine=a.dot / (np.sqrt(a.na * a.nb) + 1e-12), max_abs=a.max_abs, mean_abs=a.sum_abs / max(a.count, 1),
            scale=a.scale,
        )
        for n, a in sorted(accs.items())
    }


def engine_outputs(engine: Engine, dataset: Dataset, progress: bool = False):
    """Run the engine over a dataset: ``(record, raw outputs by role, transform)`` per image."""
    for rec in dataset.records:
        outputs, transform = engine.invoke_raw(rec.image())
        yield rec, outputs, transform


@dataclass(frozen=True)
class GateResult:
    """Float against int8, per task.

    Attributes:
        float_metrics: Evaluator output of the float model.
        int8_metrics: Evaluator output of the int8 file.
        drops: Points lost per gated metric (positive is worse).
        max_drop: The allowed drop in points.
        failed: Gated metrics that dropped more than allowed.
    """

    float_metrics: dict
    int8_metrics: dict
    drops: dict[str, float]
    max_drop: float
    failed: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """No gated metric dropped more than allowed."""
        return not self.failed


def gate(float_metrics: dict, int8_metrics: dict, max_drop: float = 1.0) -> GateResult:
    """Compare metrics; a drop is ``(float - int8) * 100`` points. Metrics the gate images' labels do not
    support (None) are not gated."""
    drops = {k: round((float_metrics[k] - int8_metrics[k]) * 100, 3) for k in GATED
             if float_metrics.get(k) is not None and int8_metrics.get(k) is not None}
    failed = tuple(k for k, d in drops.items() if d > max_drop)
    return GateResult(float_metrics, int8_metrics, drops, max_drop, failed)


def layer_errors(
    float_model, cfg, representative: Callable[[], Iterable[list[np.ndarray]]], top: int = 10,
) -> list[dict]:
    """Layers with the largest quantization error, from TensorFlow's quantization debugger.

    Returns:
        Up to ``top`` dicts ``{tensor, rmse, mean_error, max_abs_error}``, worst (largest RMSE) first.
    """
    import shutil
    import tempfile
    from pathlib import Path

    import tensorflow as tf

    from .export import _saved_model, export_model

    static = export_model(float_model, cfg)
    workdir = Path(tempfile.mkdtemp(prefix="ocrnet-debug-"))
    try:
        saved = _saved_model(static, cfg.input_size, workdir)
        conv = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=["serving_default"])
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        debugger = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=representative)
        debugger.run()
        rows = [
            {"tensor": name, "rmse": float(np.sqrt(st.get("mean_squared_error", 0.0))),
             "mean_error": float(st.get("mean_error", 0.0)), "max_abs_error": float(st.get("max_abs_error", 0.0))}
            for name, st in debugger.layer_statistics.items()
        ]
        rows.sort(key=lambda r: -r["rmse"])
        return rows[:top]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

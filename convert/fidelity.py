"""The fidelity gate: how far the int8 file is from the float model, per output and per task.

Per output: cosine similarity, max and mean absolute error of the dequantized int8 output against the
float Keras model on held-out images (the same uint8 pixels into both). Per task: the evaluator's box
AP, mask AP and mIoU of both, side by side. The gate fails when any of the three drops by more than
``max_drop`` points; then the report names the layers with the largest quantization error (TensorFlow's
quantization debugger), how far each failed drop moves when the gate images are drawn again (a paired
bootstrap: a few dozen validation photos cannot always tell a drop past the limit from one within it), and
what to try.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import numpy as np
from tqdm import tqdm

from ocrnet_edge.model.data import Dataset
from ocrnet_edge.model.evaluate import DRAWS, LEVEL, Scored, paired_intervals
from ocrnet_edge.runtime.contract import input_wh
from ocrnet_edge.runtime.engine import Engine
from ocrnet_edge.runtime.preprocess import preprocess_into

GATED = ("box_ap", "mask_ap", "miou")


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
    w, h = input_wh(engine.input_size)
    buf = np.empty((1, h, w, 3), np.uint8)
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
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Per failed metric, the :data:`~model.evaluate.LEVEL` interval of its drop over resampled gate images (points)."""

    @property
    def ok(self) -> bool:
        """No gated metric dropped more than allowed."""
        return not self.failed

    def failures(self) -> str:
        """``box_ap dropped 1.004 points``, one per failed metric: three decimals, so that a drop just past
        the limit never reads as the limit itself (``1.00`` against ``at most 1.0``)."""
        return ", ".join(f"{k} dropped {self.drops[k]:.3f} points" + (
            f" ({100 * LEVEL:.0f}% interval over resampled gate images: {self.intervals[k][0]:.1f} to "
            f"{self.intervals[k][1]:.1f})"
            if k in self.intervals else "") for k in self.failed)

    def within_chance(self) -> tuple[str, ...]:
        """Failed metrics whose interval reaches down to the allowed drop: the gate images cannot tell them from a
        drop within the limit."""
        return tuple(k for k in self.failed if k in self.intervals and self.intervals[k][0] <= self.max_drop)


def gate(float_metrics: dict, int8_metrics: dict, max_drop: float = 1.0) -> GateResult:
    """Compare metrics; a drop is ``(float - int8) * 100`` points. Metrics the gate images' labels do not
    support (None) are not gated."""
    drops = {k: round((float_metrics[k] - int8_metrics[k]) * 100, 3) for k in GATED
             if float_metrics.get(k) is not None and int8_metrics.get(k) is not None}
    failed = tuple(k for k, d in drops.items() if d > max_drop)
    return GateResult(float_metrics, int8_metrics, drops, max_drop, failed)


def with_intervals(result: GateResult, dataset: Dataset, float_scored: Scored, int8_scored: Scored,
                   draws: int = DRAWS, level: float = LEVEL, seed: int = 0) -> GateResult:
    """The result with an interval on each failed drop: the gate images drawn again with replacement
    ``draws`` times, the same draw for both files (a paired bootstrap), the drop scored on each draw; the
    interval holds the middle ``level`` of them. A drop whose interval reaches down to the allowed drop is one
    the gate images cannot tell from a drop within the limit."""
    if not result.failed:
        return result
    return replace(result, intervals=paired_intervals(dataset, float_scored, int8_scored, result.failed, draws, level,
                                                      seed))


def chance_hint(results: Iterable[GateResult], images: int) -> str:
    """The error line's clause for failed gates whose interval reaches down into the limit ("" when none does):
    the gate images cannot tell, more of them can."""
    if not any(r.within_chance() for r in results):
        return ""
    return (f"; {images} gate images cannot tell this drop from one within the limit: convert again with --val DIR "
            "holding more labelled photos the model never trained on")


def suggestions(result: GateResult, images: int, calibration_images: int) -> list[str]:
    """What to try after a failed gate, most telling first: more gate images where the drop may lie within the
    limit."""
    out = []
    chance = result.within_chance()
    if chance:
        spans = ", ".join(f"{k} {result.intervals[k][0]:.1f} to {result.intervals[k][1]:.1f}" for k in chance)
        out.append(f"the drop may lie within the limit: over resampled gate images it spans {spans} points "
                   f"({images} images); label more photos the model never trained on and convert again "
                   "with --val DIR, so that the gate can tell; to ship this file as it is, convert with a larger "
                   "--max-drop (this report records the drop)")
    out += [f"calibrate on more images that look like the deployment scenes, objects of every class in them "
            f"(--calib DIR; {calibration_images} used here)",
            "check that calibration images reach 0 and 255 (the uint8 input must keep scale 1)"]
    return out


def quantization_debugger(float_model, cfg, representative: Callable[[], Iterable[list[np.ndarray]]],
                          debug_images: int = 20):
    """TensorFlow's quantization debugger on the shipped conversion: :func:`~convert.export.tflite_converter`
    (uint8 input, int8 outputs) on the same export, calibrated on all of ``representative`` as the shipped
    file is; statistics over its first ``debug_images``."""
    import tensorflow as tf

    from ocrnet_edge.runtime.quiet import native_stderr_quiet

    from .export import exported, tflite_converter

    def debug_subset():
        for i, x in enumerate(representative()):
            if i >= debug_images:
                break
            yield x

    with exported(float_model, cfg) as saved, native_stderr_quiet():
        return tf.lite.experimental.QuantizationDebugger(converter=tflite_converter(saved, representative),
                                                         debug_dataset=debug_subset)


def layer_errors(
    float_model, cfg, representative: Callable[[], Iterable[list[np.ndarray]]], debug_images: int = 20, top: int = 10,
) -> list[dict]:
    """Layers with the largest quantization error in the graph that ships, from TensorFlow's quantization
    debugger.

    The debugger's converter is :func:`~convert.export.tflite_converter` on the same SavedModel export and
    the same calibration images as the shipped file (uint8 input, int8 outputs included), so every quantized
    tensor of its instrumented copy has the shipped file's scale and zero point (tested); only the copy's
    input and output stay float, as TensorFlow's debugger instruments them. Statistics are taken over the
    first ``debug_images`` calibration images.

    Returns:
        Up to ``top`` dicts ``{tensor, rmse, mean_error, max_abs_error}`` in real units, worst (largest RMSE)
        first.
    """
    from ocrnet_edge.runtime.quiet import native_stderr_quiet

    debugger = quantization_debugger(float_model, cfg, representative, debug_images)
    with native_stderr_quiet():
        debugger.run()
    rows = [
        {"tensor": name, "rmse": float(np.sqrt(st.get("mean_squared_error", 0.0))),
         "mean_error": float(st.get("mean_error", 0.0)), "max_abs_error": float(st.get("max_abs_error", 0.0))}
        for name, st in debugger.layer_statistics.items()
    ]
    rows.sort(key=lambda r: -r["rmse"])
    return rows[:top]

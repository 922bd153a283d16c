"""The fidelity gate for the ONNX files, run with ONNX Runtime on the CPU.

No second metrics implementation: an ONNX Runtime session is wrapped in the small surface the TFLite gate
already uses (:func:`convert.fidelity.output_agreement`, :func:`convert.fidelity.engine_outputs`,
:func:`model.evaluate.evaluate_outputs`, :func:`convert.fidelity.gate`), and the gate images are the same.

- float32 ``<name>.onnx`` against the Keras model: must be equal to numerical noise per output
  (:data:`FLOAT_MIN_COSINE`, :data:`FLOAT_MAX_ABS`), and its task metrics within ``max_drop``.
- float16 (what TensorRT builds from the float file with its FP16 flag; emulated on a copy converted with
  ``onnxconverter_common.float16``, inputs and outputs kept float32) against the float ONNX file's metrics.
- ``<name>_int8_qdq.onnx`` against the float ONNX file's metrics, with the same ``max_drop``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ocrnet_edge.model.data import Dataset
from ocrnet_edge.model.evaluate import Scored, evaluate_outputs
from ocrnet_edge.runtime.contract import InputSize, input_wh
from ocrnet_edge.runtime.preprocess import preprocess_into
from ocrnet_edge.runtime.quant import FLOAT

from . import fidelity

FLOAT_MIN_COSINE = 0.99999
"""Float ONNX against Keras: smallest cosine per output (measured 1.000000 on the reference model)."""
FLOAT_MAX_ABS = 1e-3
"""Float ONNX against Keras: largest absolute error per output (measured 1.1e-4 on logits up to 14.4)."""
FLOAT_NOISE_FLOOR = 1e-6
"""Below this largest absolute error an output's cosine is not read: an output near zero everywhere (an
untrained head) has a cosine made of rounding alone."""


class OrtModel:
    """An ONNX Runtime CPU session with the surface of :class:`runtime.engine.Engine` that the gate uses:
    ``input_size``, ``quants`` (all float), ``backend.input_view()``, ``backend.invoke()`` and ``invoke_raw``.

    Args:
        model: ONNX file path or serialized bytes.
        size: Input size, a side or ``(width, height)`` (the graph takes ``image``, float32 (1, H, W, 3),
            RGB 0..255).
        threads: Intra-op threads.
    """

    def __init__(self, model: Path | bytes, size: InputSize, threads: int = 2) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts,
                                            providers=["CPUExecutionProvider"])
        self.input_size = size
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.quants = {n: FLOAT for n in self.output_names}
        self.backend = self
        w, h = input_wh(size)
        self._buf = np.zeros((1, h, w, 3), np.float32)

    def input_view(self) -> np.ndarray:
        """The (1, H, W, 3) float32 input buffer."""
        return self._buf

    def invoke(self) -> dict[str, np.ndarray]:
        """Run on the input buffer: outputs by name, float32."""
        return dict(zip(self.output_names, self.session.run(self.output_names, {self.input_name: self._buf})))

    def invoke_raw(self, frame: np.ndarray):
        """Preprocess ``frame`` (H, W, 3) uint8 RGB as the runtime does, and run: ``(outputs, transform)``."""
        transform = preprocess_into(frame, self._buf)
        return self.invoke(), transform


class CachedReference:
    """The Keras model called once per distinct input; the gate compares several files with it."""

    def __init__(self, model) -> None:
        self.model = model
        self._cache: dict[bytes, dict[str, np.ndarray]] = {}

    def __call__(self, x: np.ndarray, training: bool = False) -> dict[str, np.ndarray]:
        import hashlib

        key = hashlib.sha1(np.ascontiguousarray(x).tobytes()).digest()
        if key not in self._cache:
            self._cache[key] = {k: np.asarray(v) for k, v in self.model(x, training=training).items()}
        return self._cache[key]


def float16_copy(model) -> bytes:
    """A float16 copy of a float32 ``onnx.ModelProto`` (input and outputs kept float32), serialized: how
    TensorRT's FP16 build computes, to measure what FP16 costs."""
    from onnxconverter_common import float16

    from ocrnet_edge.runtime.quiet import native_stderr_quiet

    with native_stderr_quiet():
        half = float16.convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    return half.SerializeToString()


@dataclass(frozen=True)
class OnnxFidelity:
    """One ONNX file against its reference on the gate images.

    Attributes:
        file: File name (or ``float16`` for the FP16 emulation).
        precision: ``float32``, ``float16`` or ``int8_qdq``.
        reference: What it is compared with (``Keras float model`` or ``float ONNX``).
        heldout: The gate images.
        outputs: Per output agreement with the Keras model.
        result: The task-metric gate against the reference's metrics.
        noise_failures: For the float file: outputs beyond numerical noise.
        skipped: Metrics the gate images do not support, with the reason.
        notes: What was done to the file (layers kept in float, calibration).
    """

    file: str
    precision: str
    reference: str
    heldout: str
    outputs: dict[str, fidelity.OutputAgreement]
    result: fidelity.GateResult
    noise_failures: tuple[str, ...] = ()
    skipped: dict = dataclasses.field(default_factory=dict)
    notes: dict = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Task metrics within the allowed drop and, for the float file, every output equal to noise."""
        return self.result.ok and not self.noise_failures

    def as_dict(self) -> dict:
        """JSON-ready, with the keys of the TFLite fidelity section where they mean the same."""
        r = self.result
        return {"file": self.file, "precision": self.precision, "reference": self.reference, "heldout": self.heldout,
                "outputs": {k: dataclasses.asdict(v) for k, v in self.outputs.items()},
                "reference_metrics": r.float_metrics, "metrics": r.int8_metrics, "drops_points": r.drops,
                "max_drop_points": r.max_drop, "passed": self.ok, "failed": list(r.failed),
                "drop_intervals": {k: list(v) for k, v in r.intervals.items()},
                "interval": {"level": fidelity.LEVEL, "draws": fidelity.DRAWS},
                "noise_failures": list(self.noise_failures), "skipped": self.skipped, **self.notes}


def noise_failures(outputs: dict[str, fidelity.OutputAgreement]) -> tuple[str, ...]:
    """Outputs of the float ONNX file beyond numerical noise of the Keras model, one line each."""
    return tuple(f"{k}: cosine {v.cosine:.6f}, max abs error {v.max_abs:.2e}" for k, v in outputs.items()
                 if v.max_abs > FLOAT_MAX_ABS or (v.cosine < FLOAT_MIN_COSINE and v.max_abs > FLOAT_NOISE_FLOOR))


def check_file(reference, model: Path | bytes, size: InputSize, heldout: Dataset, ref_metrics: dict, max_drop: float,
               threads: int = 2, progress: bool = False, ref_scored: Scored | None = None
               ) -> tuple[dict[str, fidelity.OutputAgreement], dict, fidelity.GateResult, Scored]:
    """One file through the gate: ``(per output agreement with reference, its metrics, gate result, the
    per-image material of its metrics)``; a failed drop gets its interval over resampled gate images
    (:func:`convert.fidelity.with_intervals`) where ``ref_scored`` is given.

    Args:
        reference: The float Keras model at batch 1 (or a :class:`CachedReference` of it).
        model: The ONNX file or its bytes.
        size: Input size: a side, or ``(width, height)``.
        heldout: Gate images.
        ref_metrics: Metrics it must stay within ``max_drop`` points of.
        max_drop: Allowed drop in points.
        threads: ONNX Runtime threads.
        progress: Show progress bars.
        ref_scored: The per-image material of ``ref_metrics`` (:class:`model.evaluate.Scored`), or None.
    """
    ort_model = OrtModel(model, size, threads)
    agreement = fidelity.output_agreement(reference, ort_model, heldout, progress)
    scored = Scored()
    metrics = evaluate_outputs(heldout, fidelity.engine_outputs(ort_model, heldout), ort_model.quants, progress=progress,
                               keep=scored)
    result = fidelity.gate(ref_metrics, metrics, max_drop)
    if ref_scored is not None:
        result = fidelity.with_intervals(result, heldout, ref_scored, scored)
    return agreement, metrics, result, scored

"""The device path for one model: open, preprocess into the input tensor, invoke, decode.

``Engine.open`` validates the file before any interpreter sees it, finds its card (embedded, given,
or ``<name>.card.json`` beside it), picks a backend, binds outputs by name, and refuses an Edge TPU
build that cannot run here with a line naming the CPU build to use instead.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import contract
from .backends import BACKENDS, Backend
from .backends.base import Plan
from .card import ModelCard, parse_card, read_card_file
from .decode import DecodeOptions
from .decode.frame import decode_outputs
from .errors import InputError, ModelError, OcrnetError
from .modelfile import ModelFileInfo, inspect_file
from .onnxfile import base_name
from .precision import DEFAULT_PRECISION, PRECISIONS
from .preprocess import preprocess_into
from .results import FrameResult


def sibling_card(path: Path) -> Path | None:
    """``<name>.card.json`` beside ``<name>_int8.tflite``, ``<name>_int8_edgetpu.tflite``, ``<name>.tflite``,
    ``<name>.onnx`` or ``<name>_int8_qdq.onnx``."""
    for s in (base_name(path), path.stem):
        p = path.with_name(f"{s}.card.json")
        if p.is_file():
            return p
    return None


def cpu_build_for(path: Path) -> Path | None:
    """The CPU build of an Edge TPU file (``x_edgetpu.tflite`` -> ``x.tflite``), if it exists."""
    p = path.with_name(path.name.replace("_edgetpu.tflite", ".tflite"))
    return p if p != path and p.is_file() else None


def find_card(path: Path | str, info: ModelFileInfo | None = None, card=None) -> ModelCard:
    """A model file's card: ``card`` when given (a :class:`ModelCard` or a JSON file), else the embedded one,
    else ``<name>.card.json`` beside it.

    Raises:
        ModelError: No card, or a card the strict parser refuses.
    """
    path = Path(path)
    info = info if info is not None else inspect_file(path)
    if isinstance(card, ModelCard):
        return card
    if card is not None:
        return read_card_file(card)
    embedded = info.card()
    if embedded is not None:
        return parse_card(embedded, f"{path} (embedded card)")
    side = sibling_card(path)
    if side is not None:
        return read_card_file(side)
    raise ModelError(
        f"{path}: no model card (neither embedded nor {path.stem}.card.json beside it); models converted by "
        "`ocrnet-edge convert` carry one, for other models write one and pass --card FILE"
    )


@dataclass(frozen=True)
class EngineOptions:
    """How to run a model.

    Attributes:
        backend: ``auto`` or a name of :data:`~runtime.backends.BACKENDS` (``cpu``, ``edgetpu``,
            ``onnxruntime``, ``tensorrt``).
        threads: CPU threads.
        device: Which device of the backend: the Edge TPU (``usb``, ``usb:N``, ``pci``, ``pci:N``), ONNX
            Runtime's execution provider (``cpu``, ``cuda``, ``tensorrt``), TensorRT's GPU index (``0``);
            None for the backend's own choice.
        order: Backends ``auto`` tries, in turn (the board profile's ``backends``); the registry's other
            backends follow, so a file none of them opens still runs where a library for it is installed.
        precision: ``auto`` (by the file and the board: an int8 build runs int8 where the board lists it,
            anything else the board's first float precision), or ``int8``, ``fp16``, ``fp32`` (GPU backends).
        board_precision: Precisions the board's accelerator runs, best first (the profile's ``precision``).
        decode: Detection thresholds replacing the card's; None takes the card's settings.
        decode_overrides: ``(field, value)`` pairs replacing single fields of the card's settings
            (``score_threshold``, ``iou_threshold``, ``max_detections``): ``run --score`` alone keeps
            the card's IoU threshold and detection cap.
        frame_order: Channel order of the frames given to :meth:`Engine.process`.
    """

    backend: str = "auto"
    threads: int = 1
    device: str | None = None
    order: tuple[str, ...] = ()
    precision: str = "auto"
    board_precision: tuple[str, ...] = DEFAULT_PRECISION
    decode: DecodeOptions | None = None
    decode_overrides: tuple[tuple[str, float], ...] = ()
    frame_order: str = "rgb"

    def __post_init__(self) -> None:
        if self.backend != "auto" and self.backend not in BACKENDS:
            raise InputError(f"backend must be auto or one of {sorted(BACKENDS)}. Received: {self.backend!r}")
        if self.threads < 1:
            raise InputError(f"threads must be at least 1. Received: {self.threads}")
        unknown = [b for b in self.order if b not in BACKENDS]
        if unknown:
            raise InputError(f"backend order names unknown backends {unknown}; known: {sorted(BACKENDS)}")
        if self.precision != "auto" and self.precision not in PRECISIONS:
            raise InputError(f"precision must be auto or one of {PRECISIONS}. Received: {self.precision!r}")
        bad = [p for p in self.board_precision if p not in PRECISIONS]
        if bad or not self.board_precision:
            raise InputError(f"board precisions must be a non-empty list of {PRECISIONS}. Received: {self.board_precision}")

    def candidates(self) -> tuple[str, ...]:
        """Backends to try, in turn: the one asked for, or the order then the registry's others."""
        if self.backend != "auto":
            return (self.backend,)
        return tuple(dict.fromkeys((*self.order, *BACKENDS)))


class Engine:
    """One opened model on one backend. Use :meth:`open`."""

    def __init__(self, path: Path, info: ModelFileInfo, card: ModelCard, backend: Backend, options: EngineOptions):
        self.path, self.info, self.card, self.backend, self.options = path, info, card, backend, options
        self.decode_options = options.decode or DecodeOptions.merged(card.decode, **dict(options.decode_overrides))
        self._bind()
        shape = backend.input_shape
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
            raise ModelError(f"{path}: expected a (1, H, W, 3) image input. Received: {shape}")
        if contract.input_size(shape[2], shape[1]) != card.input_size:
            raise ModelError(f"{path}: the card says input size {contract.size_text(card.input_size)} but the model "
                             f"takes {contract.size_text(contract.input_size(shape[2], shape[1]))} (width x height)")

    @classmethod
    def open(cls, path: Path | str, card: Path | str | ModelCard | None = None,
             options: EngineOptions = EngineOptions()) -> Engine:
        """Validate, choose the backend, find the card and load the model.

        Each backend says what it would run (:meth:`~runtime.backends.base.Backend.plan`); ``auto`` takes
        the first in :meth:`EngineOptions.candidates` that plans and opens, and says its choice once when
        one before it could not serve or the choice changed the file or the precision.

        Raises:
            InputError: Missing or unreadable file.
            ModelError: Not a TFLite or ONNX model, malformed, no card, outputs missing, or no backend runs
                this file (an Edge TPU build without an Edge TPU).
            EnvironmentMissing: The backend asked for (or every one that could run the file) lacks its
                library or device.
        """
        path = Path(path)
        info = inspect_file(path)
        backend, plan, model_card, passed = cls._choose(path, info, options, card)
        try:
            for note in plan.notes:
                print(f"note: {path}: {note}", file=sys.stderr)
            if passed and options.backend == "auto":
                print(f"backend: {backend.name} ({backend.served_by}, {backend.precision}); "
                      + "; ".join(passed), file=sys.stderr)
            return cls(plan.path, plan.info, model_card, backend, options)
        except BaseException:
            backend.close()
            raise

    @staticmethod
    def _choose(path: Path, info, options: EngineOptions, card) -> tuple[Backend, Plan, ModelCard, list[str]]:
        """The first backend of the candidates that plans and opens ``path``, its plan, the card of the file it
        runs (found before anything loads: a TensorRT build takes minutes), and why the ones before it could not
        serve (refusals of the file's format are not listed: they are no choice)."""
        explicit = options.backend != "auto"
        refused: list[OcrnetError] = []
        failed: list[tuple[str, OcrnetError]] = []
        for name in options.candidates():
            cls_ = BACKENDS[name]
            try:
                plan = cls_.plan(path, info, options)
            except ModelError as e:
                if explicit:
                    raise
                refused.append(e)
                continue
            model_card = find_card(plan.path, plan.info, card)
            try:
                return cls_.open(plan, options), plan, model_card, [f"{n}: {e}" for n, e in failed]
            except OcrnetError as e:  # missing library or device, refused model, a --device it does not take
                if explicit:
                    raise
                failed.append((name, e))
        if failed:  # a backend that runs this file exists but could not open it here
            if len(failed) == 1:
                raise failed[0][1]
            kind = type(failed[0][1])
            raise kind(f"no backend here runs {path}: " + "; ".join(f"{n}: {e}" for n, e in failed))
        raise ModelError(f"no backend runs {path}: " + "; ".join(str(e) for e in refused))

    def _bind(self) -> None:
        b = self.backend
        index = {}
        for name, spec in self.card.outputs.items():
            if spec.tensor is not None:
                if spec.tensor not in b.tensor_index:
                    raise ModelError(
                        f"{self.path}: the card binds {name!r} to tensor {spec.tensor!r}, which the model lacks")
                index[spec.role] = b.tensor_index[spec.tensor]
            else:
                if name not in b.signature_outputs:
                    have = sorted(b.signature_outputs) or "no signature"
                    raise ModelError(f"{self.path}: output {name!r} of the card is not in the model's signature ({have})")
                index[spec.role] = b.signature_outputs[name]
        b.bind(index)
        self.quants = {role: b.output_quant(role) for role in index}

    @property
    def input_size(self) -> contract.InputSize:
        """Model input size: a side, or ``(width, height)``."""
        return self.card.input_size

    def process(self, frame: np.ndarray) -> FrameResult:
        """Run one (H, W, 3) uint8 frame through preprocess, invoke and decode.

        Returns:
            The frame's result, with ``times_ms`` for ``preprocess``, ``invoke`` and ``decode``.
        """
        t0 = time.perf_counter()
        transform = self._preprocess(frame)
        t1 = time.perf_counter()
        outputs = self.backend.invoke()
        t2 = time.perf_counter()
        result = self.decode(outputs, transform)
        t3 = time.perf_counter()
        times = {"preprocess": (t1 - t0) * 1e3, "invoke": (t2 - t1) * 1e3, "decode": (t3 - t2) * 1e3}
        return dataclasses.replace(result, times_ms=times)

    def _preprocess(self, frame: np.ndarray):
        view = self.backend.input_view()
        transform = preprocess_into(frame, view, self.card.resize, self.options.frame_order, self.card.colour_order)
        del view  # the interpreter refuses to invoke while a view of its tensors is alive
        return transform

    def invoke_raw(self, frame: np.ndarray) -> tuple[dict[str, np.ndarray], object]:
        """Preprocess and invoke only: copies of the raw outputs (by role) and the transform."""
        transform = self._preprocess(frame)
        return {k: np.array(v) for k, v in self.backend.invoke().items()}, transform

    def decode(self, outputs: dict[str, np.ndarray], transform) -> FrameResult:
        """Decode raw outputs (keyed by role) with this model's card."""
        return decode_outputs(
            outputs, transform, self.card.class_names or contract.THING_CLASSES, self.decode_options, self.quants,
            self.card.strides, self.card.seg_stride,
        )

    def close(self) -> None:
        """Release the backend."""
        self.backend.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""CPU backend: the LiteRT interpreter with XNNPACK, falling back to ``tflite_runtime``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import EnvironmentMissing, ModelError
from ..quant import FLOAT, Quant
from ..quiet import native_stderr_quiet
from .base import Plan


def edgetpu_message(path: Path, reason: str) -> str:
    """The line that refuses an Edge TPU build where it cannot run, naming the CPU build to use instead."""
    cpu = path.with_name(path.name.replace("_edgetpu.tflite", ".tflite"))
    hint = (f"run the CPU build {cpu} instead" if cpu != path and cpu.is_file()
            else "run the CPU build of the model (the file without _edgetpu)")
    return (f"{path} is compiled for the Edge TPU (edgetpu-custom-op) and needs the TPU and libedgetpu.so.1 "
            f"({reason}); {hint}")


def tflite_precision(info) -> str:
    """``int8`` for a quantized TFLite file (8-bit input), else ``float32``."""
    dtype = info.tensors[info.inputs[0]].dtype if info.inputs else "float32"
    return "int8" if dtype in ("int8", "uint8") else "float32"


def interpreter_class() -> tuple[type, Callable, str]:
    """``(Interpreter, load_delegate, "package version")`` from LiteRT, else tflite_runtime."""
    try:
        import ai_edge_litert
        from ai_edge_litert.interpreter import Interpreter, load_delegate

        return Interpreter, load_delegate, f"ai-edge-litert {getattr(ai_edge_litert, '__version__', '?')}"
    except ImportError:
        pass
    try:
        import tflite_runtime
        from tflite_runtime.interpreter import Interpreter, load_delegate

        return Interpreter, load_delegate, f"tflite-runtime {getattr(tflite_runtime, '__version__', '?')}"
    except ImportError:
        raise EnvironmentMissing("no TFLite interpreter: pip install ai-edge-litert (or tflite-runtime)") from None


class CpuBackend:
    """Runs a ``.tflite`` file on the CPU (XNNPACK, ``threads`` threads).

    Args:
        path: The model file (opened by path, so the runtime memory-maps it).
        threads: Interpreter threads.
        delegates: Extra delegates (the Edge TPU backend passes its own).
        reference_kernels: Run on LiteRT's reference kernels, without XNNPACK.
    """

    name: ClassVar[str] = "cpu"
    formats: ClassVar[tuple[str, ...]] = ("tflite",)
    runtime_version: str
    precision: str = "float32"
    served_by: str = "XNNPACK"
    threads: int
    tensor_index: dict[str, int]
    signature_outputs: dict[str, int]

    @staticmethod
    def is_available() -> str | None:
        """None when a TFLite interpreter can be imported, else why not."""
        try:
            interpreter_class()
        except EnvironmentMissing as e:
            return str(e)
        return None

    @classmethod
    def plan(cls, path: Path, info: Any, options: Any) -> Plan:
        """Runs a ``.tflite`` file as it is; refuses other formats and Edge TPU builds."""
        from ..modelfile import xnnpack_refusals

        if info.format not in cls.formats:
            raise ModelError(f"{path}: the {cls.name} backend runs .tflite files, not {info.format}")
        if info.is_edgetpu:
            raise ModelError(edgetpu_message(path, f"backend {cls.name!r} was asked for"))
        refusals = xnnpack_refusals(info)
        notes = ()
        if refusals:
            notes = (f"{len(refusals)} convolution(s) with requantization scales XNNPACK refuses (first: {refusals[0]}; "
                     "degenerate activations: an untrained or barely trained model?); running on LiteRT's reference "
                     "kernels, which are slower",)
        return Plan(path, info, tflite_precision(info), notes, {"reference_kernels": bool(refusals)})

    @classmethod
    def open(cls, plan: Plan, options: Any) -> CpuBackend:
        """The interpreter for ``plan`` with ``options.threads`` threads."""
        backend = cls(plan.path, options.threads, reference_kernels=bool((plan.extra or {}).get("reference_kernels")))
        backend.precision = plan.precision
        return backend

    def device_memory_mb(self) -> float | None:
        """None: everything is in the process's RSS."""
        return None

    def __init__(self, path: Path | str, threads: int = 1, delegates: list | None = None,
                 reference_kernels: bool = False):
        interp_cls, _, self.runtime_version = interpreter_class()
        self.path = Path(path)
        self.reference_kernels = reference_kernels
        self.served_by = "reference kernels" if reference_kernels else ("delegate" if delegates else "XNNPACK")
        extra = {}
        if reference_kernels:  # without XNNPACK (see modelfile.xnnpack_refusals)
            module = __import__(interp_cls.__module__, fromlist=["OpResolverType"])
            extra["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            with native_stderr_quiet():  # LiteRT's "Created TensorFlow Lite XNNPACK delegate" line
                self.interpreter = interp_cls(model_path=str(self.path), num_threads=int(threads),
                                              experimental_delegates=delegates or None, **extra)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{self.path}: the interpreter refused the model ({str(e).strip().splitlines()[0]})") from None
        self.threads = int(threads)
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1:
            raise ModelError(f"{self.path}: expected one input tensor, found {len(inputs)}")
        self.input_details = inputs[0]
        self._input = self.interpreter.tensor(self.input_details["index"])
        self.tensor_index: dict[str, int] = {}
        self._quant: dict[int, Quant] = {}
        for d in self.interpreter.get_tensor_details():
            self.tensor_index.setdefault(d["name"], d["index"])
        self.signature_outputs: dict[str, int] = {}
        sigs = self.interpreter.get_signature_list()
        if sigs:
            key = "serving_default" if "serving_default" in sigs else next(iter(sigs))
            runner = self.interpreter.get_signature_runner(key)
            self.signature_outputs = {n: d["index"] for n, d in runner.get_output_details().items()}
        self._bound: dict[str, Callable[[], np.ndarray]] = {}

    def bind(self, names_to_index: Mapping[str, int]) -> None:
        """Choose which output tensors :meth:`invoke` returns, by name."""
        self._bound = {n: self.interpreter.tensor(i) for n, i in names_to_index.items()}
        details = {d["index"]: d for d in self.interpreter.get_tensor_details()}
        for i in names_to_index.values():
            scale, zp = details[i]["quantization"]
            self._quant[i] = Quant(float(scale), int(zp)) if scale else FLOAT
        self._bound_index = dict(names_to_index)

    def output_quant(self, name: str) -> Quant:
        """Quantization of a bound output."""
        return self._quant[self._bound_index[name]]

    def input_view(self) -> np.ndarray:
        """A writable view of the input tensor; drop it before :meth:`invoke`."""
        return self._input()

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.input_details["shape"])

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self.input_details["dtype"])

    def invoke(self) -> dict[str, np.ndarray]:
        """Run the model; returns views of the bound outputs, valid until the next invoke."""
        try:
            self.interpreter.invoke()
        except (RuntimeError, ValueError) as e:
            raise ModelError(f"{self.path}: invoke failed ({str(e).strip().splitlines()[0]})") from None
        return {n: f() for n, f in self._bound.items()}

    def close(self) -> None:
        """Release the interpreter."""
        self._bound = {}
        self._input = None
        self.interpreter = None

"""ONNX Runtime backend: an ONNX file on whichever execution providers are installed, tried in turn.

Providers in order: TensorRT (engines cached beside the model, as the ``tensorrt`` backend's), CUDA, CPU;
the first that serves is reported. ``--device cpu|cuda|tensorrt`` pins one. ``onnxruntime`` (CPU) comes
from the package index; on a Jetson, ``onnxruntime-gpu`` comes from NVIDIA's Jetson builds (the README says
which). Inputs and outputs are bound by name through an I/O binding onto preallocated arrays, so a steady
stream allocates nothing per frame.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .. import trtcache
from ..errors import EnvironmentMissing, InputError, ModelError
from ..modelfile import inspect_file
from ..precision import GpuCaps, choose_precision, gpu_file, is_int8_build
from ..quant import FLOAT, Quant
from ..quiet import native_stderr_quiet
from .base import Plan

INSTALL_HINT = ("pip install onnxruntime (CPU); on a Jetson, onnxruntime-gpu from NVIDIA's Jetson builds "
                "(see the README); on an x86-64 machine with CUDA, pip install onnxruntime-gpu")
PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
"""``--device`` values to execution providers, in the order they are tried."""
ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
             "tensor(int8)": np.int8, "tensor(int32)": np.int32, "tensor(int64)": np.int64}


def _ort():
    try:
        with native_stderr_quiet():
            import onnxruntime as ort  # type: ignore
    except ImportError:
        raise EnvironmentMissing(f"ONNX Runtime is not installed: {INSTALL_HINT}") from None
    return ort


def providers_for(device: str | None, available: list[str]) -> list[str]:
    """Execution providers to try, in order: the one ``device`` names, or every known one installed.

    Raises:
        InputError: ``device`` is not ``cpu``, ``cuda`` or ``tensorrt``.
        EnvironmentMissing: The provider ``device`` names is not in this ONNX Runtime build.
    """
    if device is None:
        return [p for p in PROVIDERS.values() if p in available]
    if device not in PROVIDERS:
        raise InputError(f"ONNX Runtime device must be one of {list(PROVIDERS)}. Received: {device!r}")
    if PROVIDERS[device] not in available:
        raise EnvironmentMissing(f"this ONNX Runtime has no {PROVIDERS[device]} (it has {', '.join(available)}): "
                                 f"{INSTALL_HINT}")
    return [PROVIDERS[device]]


def _provider_options(name: str, model: Path, precision: str) -> dict[str, Any]:
    if name != PROVIDERS["tensorrt"]:
        return {}
    from ..system.gpu import first_gpu, tensorrt_library_version

    dev = first_gpu()
    folder = trtcache.ort_cache_dir(model, dev.name if dev else "gpu", tensorrt_library_version())
    return {"trt_fp16_enable": precision in ("fp16", "int8"), "trt_int8_enable": precision == "int8",
            "trt_engine_cache_enable": True, "trt_engine_cache_path": str(folder),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(folder)}


class OnnxRuntimeBackend:
    """Runs an ``.onnx`` file with ONNX Runtime.

    Args:
        path: The ONNX file.
        threads: CPU threads (intra-op) for the CPU provider.
        providers: Execution providers to try, in order.
        precision: Asked precision (the TensorRT provider's FP16/INT8 flags).
    """

    name: ClassVar[str] = "onnxruntime"
    formats: ClassVar[tuple[str, ...]] = ("onnx",)
    runtime_version: str
    precision: str
    served_by: str
    threads: int
    tensor_index: dict[str, int]
    signature_outputs: dict[str, int]

    @staticmethod
    def is_available() -> str | None:
        """None when ONNX Runtime imports, else why not."""
        try:
            _ort()
        except EnvironmentMissing as e:
            return str(e)
        return None

    @classmethod
    def plan(cls, path: Path, info: Any, options: Any) -> Plan:
        """An ONNX file runs as it is; a ``.tflite`` given runs the ONNX build beside it at the precision the
        board and the file say (:mod:`runtime.precision`). FP16 and INT8 of a float file need the TensorRT
        provider; without it the float file runs FP32."""
        from ..onnxfile import onnx_build

        if info.format != "onnx" and onnx_build(path, False) is None and onnx_build(path, True) is None:
            raise ModelError(f"{path}: the {cls.name} backend runs .onnx files and finds no ONNX build beside it")
        try:
            trt_ep = PROVIDERS["tensorrt"] in _ort().get_available_providers() and options.device in (None, "tensorrt")
        except EnvironmentMissing:
            trt_ep = False
        precision, notes = choose_precision(is_int8_build(info), options.precision, options.board_precision, GpuCaps())
        if info.format == "onnx" and (info.is_qdq or not trt_ep):
            return Plan(path, info, "int8" if info.is_qdq else "fp32")
        f, precision, more = gpu_file(path, info, precision, cls.name)
        if precision == "fp16" and not trt_ep:
            precision, notes = "fp32", []  # the float file on the CPU or CUDA provider
        notes = [*notes, *more] + ([f"running {f.name} ({precision}) for {path.name}"] if f != path else [])
        return Plan(f, info if f == path else inspect_file(f), precision, tuple(notes))

    @classmethod
    def open(cls, plan: Plan, options: Any) -> OnnxRuntimeBackend:
        """A session on the first provider that serves.

        Raises:
            EnvironmentMissing: ONNX Runtime (or the provider ``--device`` names) is missing.
            ModelError: ONNX Runtime refused the model.
        """
        ort = _ort()
        providers = providers_for(options.device, ort.get_available_providers())
        return cls(plan.path, options.threads, providers, plan.precision)

    def __init__(self, path: Path | str, threads: int = 1, providers: list[str] | None = None,
                 precision: str = "fp32"):
        ort = _ort()
        self.path, self.threads = Path(path), int(threads)
        self.runtime_version = f"onnxruntime {ort.__version__}"
        providers = providers or ["CPUExecutionProvider"]
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3  # errors only: a provider that cannot serve is reported by us, once
        errors = []
        self.session = None
        self._cuda = self._free_before = None
        if any(p != PROVIDERS["cpu"] for p in providers):  # GPU memory is measured as CUDA's free-memory drop
            from ..system import gpu

            if gpu.gpu_reason() is None:
                self._cuda = gpu.cuda()
                self._free_before = self._cuda.mem_info()[0]
        for i, p in enumerate(providers):  # tried in turn; ORT itself would fall back silently
            chain = [(q, _provider_options(q, self.path, precision)) for q in providers[i:]]
            try:
                with native_stderr_quiet():
                    self.session = ort.InferenceSession(str(self.path), so, providers=chain)
            except Exception as e:  # ORT raises its own Fail / InvalidGraph / NoSuchFile types
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                if "INVALID_PROTOBUF" in first or "InvalidProtobuf" in type(e).__name__ or "INVALID_GRAPH" in first:
                    raise ModelError(f"{self.path}: ONNX Runtime refused the model ({first[:200]})") from None
                errors.append(f"{p}: {first[:160]}")
                continue
            if self.session.get_providers()[0] == p:
                break
            errors.append(f"{p}: did not register")
        if self.session is None:
            raise ModelError(f"{self.path}: ONNX Runtime could not load the model ({'; '.join(errors)})")
        served = self.session.get_providers()[0]
        self.served_by = served + (f" (after {'; '.join(errors)})" if errors else "")
        if errors:
            print(f"onnxruntime: {served} serves; " + "; ".join(errors), file=sys.stderr)
        int8 = bool(inspect_file(self.path).is_qdq) if precision == "int8" else False
        if served == PROVIDERS["tensorrt"]:
            self.precision = precision
        else:
            self.precision = "int8" if int8 else "fp32"
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"{self.path}: expected one input tensor, found {len(inputs)}")
        self._in = inputs[0]
        shape = tuple(d if isinstance(d, int) else -1 for d in self._in.shape)
        if min(shape, default=1) < 1:
            raise ModelError(f"{self.path}: input {self._in.name!r} has a dynamic shape {self._in.shape}; "
                             "export at a fixed size")
        self._input = np.zeros(shape, ORT_TYPES.get(self._in.type, np.float32))
        outs = self.session.get_outputs()
        self.tensor_index = {o.name: i for i, o in enumerate(outs)}
        self.signature_outputs = dict(self.tensor_index)
        self._outs = outs
        self._bound: dict[str, np.ndarray] = {}
        self._binding = None

    def bind(self, names_to_index: Mapping[str, int]) -> None:
        """Choose which outputs :meth:`invoke` returns (by name), onto preallocated arrays where shapes are static."""
        ort = _ort()
        self._bound = {}
        self._binding = self.session.io_binding()
        self._binding.bind_cpu_input(self._in.name, self._input)
        for role, i in names_to_index.items():
            o = self._outs[i]
            shape = tuple(d if isinstance(d, int) else -1 for d in o.shape)
            if min(shape, default=1) < 1:
                self._binding.bind_output(o.name, "cpu")
                self._bound[role] = None
                continue
            arr = np.empty(shape, ORT_TYPES.get(o.type, np.float32))
            self._binding.bind_ortvalue_output(o.name, ort.OrtValue.ortvalue_from_numpy(arr))
            self._bound[role] = arr
        self._order = list(names_to_index)

    def output_quant(self, name: str) -> Quant:
        """Outputs are float32 (a QDQ file keeps float inputs and outputs)."""
        return FLOAT

    def input_view(self) -> np.ndarray:
        """The input array, bound to the session."""
        return self._input

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self._input.shape)

    @property
    def input_dtype(self) -> np.dtype:
        return self._input.dtype

    def invoke(self) -> dict[str, np.ndarray]:
        """Run; the bound outputs, valid until the next invoke."""
        try:
            self.session.run_with_iobinding(self._binding)
        except Exception as e:
            raise ModelError(f"{self.path}: invoke failed ({str(e).strip().splitlines()[0][:200]})") from None
        if any(v is None for v in self._bound.values()):
            got = self._binding.copy_outputs_to_cpu()
            return {role: (arr if arr is not None else got[k]) for k, (role, arr) in enumerate(self._bound.items())}
        return dict(self._bound)

    def device_memory_mb(self) -> float | None:
        """GPU memory taken since the session was created (CUDA's free-memory drop) when a GPU provider serves;
        None on the CPU provider."""
        if self._cuda is None or self.session is None or self.session.get_providers()[0] == PROVIDERS["cpu"]:
            return None
        return round(max(0.0, self._free_before - self._cuda.mem_info()[0]), 1)

    def close(self) -> None:
        """Release the session."""
        self._binding = None
        self._bound = {}
        self.session = None

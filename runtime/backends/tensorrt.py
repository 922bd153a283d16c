"""TensorRT backend: an engine built on the board from the ONNX file, cached beside it, run on the GPU.

The engine is built on first use (FP16 by default; INT8 from the explicit QDQ file where the board and
the GPU have it; see :mod:`runtime.precision`) and cached by :mod:`runtime.trtcache` under a name that says
which GPU, TensorRT version and precision it is for, with the model's checksum beside it; a stale engine is
rebuilt, said in one line, with the build's progress shown (minutes on a Jetson Nano).

Buffers: page-locked host arrays (the preprocessed frame is written straight into the input one) and device
memory, through ``libcudart`` (:mod:`runtime.system.gpu`). Inputs and outputs are bound by tensor name:
TensorRT 8.5+ and 10.x (``set_tensor_address`` / ``execute_async_v3``), and the bindings API of 8.2
(``execute_async_v2``) for Jetson Nano's JetPack 4.6 where bindings for a newer Python were built.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .. import trtcache
from ..errors import EnvironmentMissing, InputError, ModelError
from ..modelfile import inspect_file
from ..precision import GpuCaps, choose_precision, gpu_file, is_int8_build
from ..quant import FLOAT, Quant
from ..system import gpu
from .base import Plan

INSTALL_HINT = (
    "on a Jetson TensorRT's Python bindings come with JetPack (`sudo apt-get install python3-libnvinfer`; make the "
    "venv with --system-site-packages to see them); on an x86-64 or aarch64 server with CUDA: pip install tensorrt"
)
WORKSPACE_MB = 1024
"""Builder scratch memory: enough for this model's tactics, small enough for a 4 GB Nano."""
PROGRESS_EVERY_S = 15.0
"""A line during a build this often when stderr is not a terminal (a terminal gets a live line)."""


def _trt():
    try:
        import tensorrt as trt  # type: ignore
    except ImportError:
        raise EnvironmentMissing(f"TensorRT's Python bindings are not installed: {INSTALL_HINT}") from None
    return trt


def gpu_index(device: str | None) -> int:
    """``--device`` for TensorRT: a CUDA device index (``0``, ``cuda:1``); None is 0."""
    if device is None:
        return 0
    text = device.removeprefix("cuda:")
    if not text.isdigit():
        raise InputError(f"TensorRT device must be a CUDA device index such as 0 or cuda:0. Received: {device!r}")
    return int(text)


def gpu_caps(index: int = 0) -> GpuCaps:
    """What GPU ``index`` runs fast; unknown (no fallback decided) where there is no GPU here."""
    dev = gpu.first_gpu(index)
    if dev is None:
        return GpuCaps()
    return GpuCaps(f"{dev.name} (sm {dev.compute[0]}.{dev.compute[1]})", dev.fast_int8, dev.fast_fp16)


class _Ticker:
    """Shows that a build is alive: elapsed time and TensorRT's phase (10.x reports phases)."""

    def __init__(self, what: str, out=None):
        self.what, self.out, self.phase = what, out or sys.stderr, ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.start = time.monotonic()

    def _run(self) -> None:
        tty = getattr(self.out, "isatty", lambda: False)()
        last = 0.0
        while not self._stop.wait(1.0):
            t = time.monotonic() - self.start
            if tty:
                self.out.write(f"\r{self.what}: {t:4.0f} s {self.phase[:60]:60s}")
                self.out.flush()
            elif t - last >= PROGRESS_EVERY_S:
                self.out.write(f"{self.what}: {t:.0f} s{' (' + self.phase + ')' if self.phase else ''}\n")
                last = t

    def __enter__(self) -> _Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if getattr(self.out, "isatty", lambda: False)():
            self.out.write("\n")


def _progress_monitor(trt, ticker: _Ticker):
    """A TensorRT 10 ``IProgressMonitor`` feeding the ticker's phase; None before 10."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            ticker.phase = f"{phase_name} (0/{num_steps})"

        def step_complete(self, phase_name, step):
            ticker.phase = f"{phase_name} ({step + 1})"
            return True

        def phase_finish(self, phase_name):
            ticker.phase = ""

    return Monitor()


def build_engine(onnx: Path, precision: str, out=None) -> bytes:
    """Parse ``onnx`` and build a serialized engine at ``precision``, showing progress on ``out``.

    Raises:
        ModelError: The parser refused the file, or the build failed (one line).
    """
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx.read_bytes()):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)] or ["no detail"]
        raise ModelError(f"{onnx}: TensorRT {trt.__version__}'s ONNX parser refused it ({errors[0]}); "
                         f"`ocrnet-edge check-tensorrt {onnx}` lists what it does not accept")
    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):  # 8.4+
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_MB << 20)
    else:  # 8.2 (Jetson Nano)
        config.max_workspace_size = WORKSPACE_MB << 20
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # layers the QDQ file leaves in float run in FP16
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: the scales come from the QDQ nodes
    with _Ticker(f"building TensorRT {precision} engine for {onnx.name}", out) as ticker:
        monitor = _progress_monitor(trt, ticker)
        if monitor is not None:
            config.progress_monitor = monitor
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(f"{onnx}: TensorRT {trt.__version__} could not build a {precision} engine (its log above says why)")
    return bytes(serialized)


def _io_tensors(trt, engine) -> list[tuple[str, bool, tuple[int, ...], np.dtype]]:
    """``(name, is_input, shape, dtype)`` of every I/O tensor, by the 8.5+/10.x API or 8.2's bindings."""
    out = []
    if hasattr(engine, "num_io_tensors"):
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            out.append((name, is_input, tuple(engine.get_tensor_shape(name)),
                        np.dtype(trt.nptype(engine.get_tensor_dtype(name)))))
    else:
        for i in range(engine.num_bindings):
            out.append((engine.get_binding_name(i), engine.binding_is_input(i), tuple(engine.get_binding_shape(i)),
                        np.dtype(trt.nptype(engine.get_binding_dtype(i)))))
    return out


class TensorRtBackend:
    """Runs an ONNX file's TensorRT engine on an NVIDIA GPU.

    Use :meth:`plan` and :meth:`open` (the engine chooses them through the registry).

    Args:
        path: The ONNX file the engine is built from.
        precision: ``fp32``, ``fp16`` or ``int8``.
        device: CUDA device index.
        out: Where build progress and the cache's line go (stderr by default).
    """

    name: ClassVar[str] = "tensorrt"
    formats: ClassVar[tuple[str, ...]] = ("onnx",)
    runtime_version: str
    precision: str
    served_by: str
    threads: int
    tensor_index: dict[str, int]
    signature_outputs: dict[str, int]

    @staticmethod
    def is_available() -> str | None:
        """None when TensorRT's Python bindings import and a CUDA GPU is present, else why not."""
        try:
            _trt()
        except EnvironmentMissing as e:
            return str(e)
        return gpu.gpu_reason()

    @classmethod
    def plan(cls, path: Path, info: Any, options: Any) -> Plan:
        """The ONNX file and precision for ``path``: see :mod:`runtime.precision`; an ``.tflite`` given runs
        the ONNX build ``convert --onnx`` wrote beside it."""
        if info.format not in cls.formats:
            from ..onnxfile import onnx_build

            if onnx_build(path, False) is None and onnx_build(path, True) is None:
                raise ModelError(f"{path}: the {cls.name} backend runs .onnx files and finds no ONNX build beside it")
        caps = gpu_caps(gpu_index(options.device)) if cls.is_available() is None else GpuCaps()
        precision, notes = choose_precision(is_int8_build(info), options.precision, options.board_precision, caps)
        f, precision, more = gpu_file(path, info, precision, cls.name)
        notes += more
        if f != path:
            notes.append(f"running {f.name} ({precision}) for {path.name}")
        return Plan(f, info if f == path else inspect_file(f), precision, tuple(notes))

    @classmethod
    def open(cls, plan: Plan, options: Any) -> TensorRtBackend:
        """Build or reuse the engine and allocate its buffers.

        Raises:
            EnvironmentMissing: No TensorRT or no GPU (exit 6, with what to install).
        """
        reason = cls.is_available()
        if reason:
            raise EnvironmentMissing(f"tensorrt backend unavailable: {reason}")
        return cls(plan.path, plan.precision, gpu_index(options.device))

    def __init__(self, path: Path | str, precision: str = "fp16", device: int = 0, out=None):
        trt = _trt()
        out = out or sys.stderr
        self.path, self.precision, self.threads = Path(path), precision, 1
        self.runtime_version = f"tensorrt {trt.__version__}"
        self.cuda = gpu.cuda()
        self.device = self.cuda.device(device)
        self.served_by = f"{self.device.name} GPU"
        self._free_before, _ = self.cuda.mem_info()
        key = trtcache.EngineKey(trtcache.sha256_file(self.path), self.device.name,
                                 f"{self.device.compute[0]}.{self.device.compute[1]}", trt.__version__, precision)
        found = trtcache.lookup(self.path, key)
        print(found.message, file=out)
        self.engine_path = found.path
        data = found.path.read_bytes() if found.status == "reuse" else None
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(data) if data else None
        if data and engine is None:  # "Version tag does not match" and kin: the checksum matched but the file is bad
            print(f"rebuilding {found.path.name}: TensorRT could not load it", file=out)
        if engine is None:
            t = time.monotonic()
            data = build_engine(self.path, precision, out)
            trtcache.store(found.path, data, key, time.monotonic() - t)
            print(f"built {found.path.name} in {time.monotonic() - t:.0f} s", file=out)
            engine = self._runtime.deserialize_cuda_engine(data)
            if engine is None:
                raise ModelError(f"{found.path}: TensorRT could not load the engine it just built")
        self._engine = engine
        self._context = engine.create_execution_context()
        self._v3 = hasattr(engine, "num_io_tensors")
        self._stream = self.cuda.stream()
        self._io = _io_tensors(trt, engine)
        inputs = [t for t in self._io if t[1]]
        if len(inputs) != 1:
            raise ModelError(f"{self.path}: expected one input tensor, found {len(inputs)}")
        self._host: dict[str, np.ndarray] = {}
        self._device: dict[str, int] = {}
        for name, _, shape, dtype in self._io:
            if min(shape, default=1) < 1:
                raise ModelError(f"{self.path}: tensor {name!r} has a dynamic shape {shape}; export at a fixed size")
            self._host[name] = self.cuda.host_array(shape, dtype)
            self._device[name] = self.cuda.malloc(self._host[name].nbytes)
            if self._v3:
                self._context.set_tensor_address(name, self._device[name])
        self._input_name = inputs[0][0]
        names = [t[0] for t in self._io]
        self.tensor_index = {n: i for i, n in enumerate(names)}
        self.signature_outputs = {t[0]: self.tensor_index[t[0]] for t in self._io if not t[1]}
        self._bindings = [self._device[n] for n in names]
        self._bound: dict[str, str] = {}

    def bind(self, names_to_index: Mapping[str, int]) -> None:
        """Choose which outputs :meth:`invoke` returns, by name."""
        by_index = {i: n for n, i in self.tensor_index.items()}
        self._bound = {role: by_index[i] for role, i in names_to_index.items()}

    def output_quant(self, name: str) -> Quant:
        """Outputs are float32 at every precision (the engine converts at its edges)."""
        return FLOAT

    def input_view(self) -> np.ndarray:
        """The page-locked input array; the next invoke copies it to the GPU."""
        return self._host[self._input_name]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self._host[self._input_name].shape)

    @property
    def input_dtype(self) -> np.dtype:
        return self._host[self._input_name].dtype

    def invoke(self) -> dict[str, np.ndarray]:
        """Copy in, run, copy the bound outputs back; views valid until the next invoke."""
        c, s = self.cuda, self._stream
        c.h2d(self._device[self._input_name], self._host[self._input_name], s)
        ok = self._context.execute_async_v3(s) if self._v3 else self._context.execute_async_v2(self._bindings, s)
        if not ok:
            raise ModelError(f"{self.path}: TensorRT execution failed")
        for tensor in self._bound.values():
            c.d2h(self._host[tensor], self._device[tensor], s)
        c.sync(s)
        return {role: self._host[tensor] for role, tensor in self._bound.items()}

    def device_memory_mb(self) -> float | None:
        """GPU memory taken since loading began (engine weights, activations, buffers): the drop in CUDA's free
        memory (on a Jetson this also counts what other processes took meanwhile; measure on a quiet board)."""
        free_now, _ = self.cuda.mem_info()
        return round(max(0.0, self._free_before - free_now), 1)

    def close(self) -> None:
        """Free the buffers, the stream, the context and the engine."""
        if getattr(self, "_context", None) is None:
            return
        for ptr in self._device.values():
            self.cuda.free(ptr)
        for arr in self._host.values():
            self.cuda.free_host(arr)
        self.cuda.destroy_stream(self._stream)
        self._device, self._host, self._bound = {}, {}, {}
        self._context = self._engine = None

"""The NVIDIA GPU through the CUDA runtime library itself (``libcudart``, by ctypes): no PyTorch, no pycuda.

JetPack ships ``libcudart`` with CUDA (``/usr/local/cuda/lib64``); the ``tensorrt`` wheels for servers bring it
as ``nvidia-cuda-runtime-cu12``. pycuda is not part of JetPack and cuda-python's wheels follow the newest CUDA,
so the few calls the TensorRT backend needs (device facts, memory, buffers, a stream, copies) are made here.

Nothing here creates a CUDA context unless asked: :func:`cuda` only loads the library; the first call that
touches a device does (about 100 MB of RSS on a Jetson, which is why a CPU run never calls it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import EnvironmentMissing

CUDART_NAMES = ("libcudart.so", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so.10.2")
CUDART_DIRS = ("/usr/local/cuda/lib64", "/usr/local/cuda/targets/aarch64-linux/lib",
               "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/lib/aarch64-linux-gnu", "/usr/lib/x86_64-linux-gnu")
ATTR_INTEGRATED, ATTR_CC_MAJOR, ATTR_CC_MINOR = 18, 75, 76
"""``cudaDeviceAttr`` values (stable since CUDA 5)."""
H2D, D2H = 1, 2
"""``cudaMemcpyKind``."""


@dataclass(frozen=True)
class GpuDevice:
    """One CUDA device.

    Attributes:
        index: CUDA device index.
        name: The name CUDA reports (``Orin``, ``NVIDIA Tegra X1``, ``NVIDIA H200``).
        compute: Compute capability, ``(major, minor)``.
        integrated: Shares the board's memory with the CPU (every Jetson).
        total_mb: Memory the device sees, in MiB (on a Jetson: the board's).
    """

    index: int
    name: str
    compute: tuple[int, int]
    integrated: bool
    total_mb: float

    @property
    def fast_int8(self) -> bool:
        """INT8 tensor math (DP4A or tensor cores): compute 6.1 and up, except Jetson TX2's 6.2."""
        return self.compute >= (6, 1) and self.compute != (6, 2)

    @property
    def fast_fp16(self) -> bool:
        """Full-rate FP16: 5.3 (Jetson Nano, TX1), 6.0, 6.2 (TX2) and 7.0 and up (not desktop Pascal 6.1)."""
        return self.compute in ((5, 3), (6, 0), (6, 2)) or self.compute >= (7, 0)


def _candidates() -> list[str]:
    found = []
    lib = ctypes.util.find_library("cudart")
    if lib:
        found.append(lib)
    for d in CUDART_DIRS:
        found += [str(Path(d) / n) for n in CUDART_NAMES if (Path(d) / n).exists()]
    for site in sys.path:  # pip's nvidia-cuda-runtime-cu12 (a dependency of the tensorrt wheels)
        found += sorted(glob.glob(os.path.join(site, "nvidia", "cuda_runtime", "lib", "libcudart.so*")))
    return found + list(CUDART_NAMES)


class Cuda:
    """The calls of the CUDA runtime the GPU backends need, on ``libcudart`` loaded by ctypes.

    Raises:
        EnvironmentMissing: From any call that fails (with CUDA's own error string).
    """

    def __init__(self, lib: ctypes.CDLL, path: str):
        self.lib, self.path = lib, path
        lib.cudaGetErrorString.restype = ctypes.c_char_p
        for fn in ("cudaMalloc", "cudaHostAlloc", "cudaMemcpyAsync", "cudaStreamCreate", "cudaMemGetInfo"):
            getattr(lib, fn).restype = ctypes.c_int
        lib.cudaMemcpyAsync.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]

    def _check(self, err: int, what: str) -> None:
        if err:
            msg = self.lib.cudaGetErrorString(err).decode(errors="replace")
            raise EnvironmentMissing(f"CUDA {what} failed: {msg} (error {err})")

    def runtime_version(self) -> str:
        """CUDA runtime version, ``12.6``."""
        v = ctypes.c_int()
        self._check(self.lib.cudaRuntimeGetVersion(ctypes.byref(v)), "cudaRuntimeGetVersion")
        return f"{v.value // 1000}.{v.value % 1000 // 10}"

    def device_count(self) -> int:
        """CUDA devices visible (0 when the driver is missing)."""
        n = ctypes.c_int()
        return n.value if self.lib.cudaGetDeviceCount(ctypes.byref(n)) == 0 else 0

    def device(self, index: int = 0) -> GpuDevice:
        """Facts of device ``index`` (makes it current)."""
        self._check(self.lib.cudaSetDevice(index), "cudaSetDevice")
        props = ctypes.create_string_buffer(16384)  # cudaDeviceProp starts with char name[256] in every version
        try:  # CUDA 12 renamed it (the old name stays exported for older binaries)
            get_props = self.lib.cudaGetDeviceProperties_v2
        except AttributeError:
            get_props = self.lib.cudaGetDeviceProperties
        self._check(get_props(props, index), "cudaGetDeviceProperties")
        attrs = {}
        for key, attr in (("major", ATTR_CC_MAJOR), ("minor", ATTR_CC_MINOR), ("integrated", ATTR_INTEGRATED)):
            v = ctypes.c_int()
            self._check(self.lib.cudaDeviceGetAttribute(ctypes.byref(v), attr, index), "cudaDeviceGetAttribute")
            attrs[key] = v.value
        _, total = self.mem_info()
        return GpuDevice(index, props.raw[:256].split(b"\0", 1)[0].decode(errors="replace"),
                         (attrs["major"], attrs["minor"]), bool(attrs["integrated"]), total)

    def mem_info(self) -> tuple[float, float]:
        """``(free, total)`` memory of the current device in MiB."""
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        self._check(self.lib.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)), "cudaMemGetInfo")
        return free.value / 2**20, total.value / 2**20

    def malloc(self, nbytes: int) -> int:
        """Device memory; its address."""
        p = ctypes.c_void_p()
        self._check(self.lib.cudaMalloc(ctypes.byref(p), ctypes.c_size_t(max(1, nbytes))), f"cudaMalloc({nbytes})")
        return int(p.value)

    def free(self, ptr: int) -> None:
        """Release device memory."""
        self.lib.cudaFree(ctypes.c_void_p(ptr))

    def host_array(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        """Page-locked host memory as a numpy array (copies to and from it run at full speed, asynchronously);
        freed with :meth:`free_host`."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        p = ctypes.c_void_p()
        self._check(self.lib.cudaHostAlloc(ctypes.byref(p), ctypes.c_size_t(max(1, nbytes)), 0), "cudaHostAlloc")
        buf = (ctypes.c_byte * max(1, nbytes)).from_address(p.value)
        return np.frombuffer(buf, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def free_host(self, arr: np.ndarray) -> None:
        """Release an array from :meth:`host_array`."""
        self.lib.cudaFreeHost(ctypes.c_void_p(arr.ctypes.data))

    def stream(self) -> int:
        """A new stream."""
        s = ctypes.c_void_p()
        self._check(self.lib.cudaStreamCreate(ctypes.byref(s)), "cudaStreamCreate")
        return int(s.value or 0)

    def destroy_stream(self, stream: int) -> None:
        """Release a stream."""
        self.lib.cudaStreamDestroy(ctypes.c_void_p(stream))

    def h2d(self, dst: int, src: np.ndarray, stream: int) -> None:
        """Queue a host-to-device copy of ``src``."""
        self._check(self.lib.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, H2D, stream), "cudaMemcpyAsync")

    def d2h(self, dst: np.ndarray, src: int, stream: int) -> None:
        """Queue a device-to-host copy into ``dst``."""
        self._check(self.lib.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, D2H, stream), "cudaMemcpyAsync")

    def sync(self, stream: int) -> None:
        """Wait for the stream."""
        self._check(self.lib.cudaStreamSynchronize(ctypes.c_void_p(stream)), "cudaStreamSynchronize")


@lru_cache(maxsize=1)
def _load() -> Cuda | str:
    errors = []
    for name in _candidates():
        try:
            return Cuda(ctypes.CDLL(name), name)
        except OSError as e:
            errors.append(str(e).split(":")[-1].strip())
    return "libcudart not found (CUDA runtime: JetPack's CUDA, or pip's nvidia-cuda-runtime-cu12 beside tensorrt)"


def cuda() -> Cuda:
    """The CUDA runtime library, loaded once.

    Raises:
        EnvironmentMissing: No ``libcudart`` here.
    """
    got = _load()
    if isinstance(got, str):
        raise EnvironmentMissing(got)
    return got


def gpu_reason() -> str | None:
    """None when a CUDA GPU is usable here, else why not (one line). Creates no context on failure paths
    beyond ``cudaGetDeviceCount``."""
    try:
        c = cuda()
    except EnvironmentMissing as e:
        return str(e)
    if c.device_count() < 1:
        return "no CUDA GPU found (cudaGetDeviceCount returned 0 devices: no GPU, or its driver is not loaded)"
    return None


def first_gpu(index: int = 0) -> GpuDevice | None:
    """Facts of GPU ``index``, or None when there is none (this creates a CUDA context)."""
    if gpu_reason() is not None:
        return None
    try:
        return cuda().device(index)
    except EnvironmentMissing:
        return None


def tensorrt_library_version() -> str | None:
    """The version of ``libnvinfer`` (TensorRT's library, which ONNX Runtime's TensorRT provider also loads),
    from ``getInferLibVersion``; None when the library is not found."""
    for name in ("libnvinfer.so", "libnvinfer.so.10", "libnvinfer.so.8"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        v = int(lib.getInferLibVersion())
        # 8.x encodes major*1000 + minor*100 + patch; 10.x major*10000 + minor*100 + patch
        return f"{v // 10000}.{v // 100 % 100}.{v % 100}" if v >= 10000 else f"{v // 1000}.{v // 100 % 10}.{v % 100}"
    return None

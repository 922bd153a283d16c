"""Edge TPU backend: the CPU interpreter with the ``libedgetpu.so.1`` delegate.

What Google's pycoral does for the Edge TPU is this one call (pycoral itself is not on PyPI, and
the PyPI package named ``pycoral`` is an unrelated tool): ``load_delegate("libedgetpu.so.1",
{"device": "usb:0"})``, then an interpreter with that delegate.
"""

from __future__ import annotations

import ctypes.util
import re
from pathlib import Path
from typing import Any, ClassVar

from ..errors import EnvironmentMissing, InputError, ModelError
from .base import Plan
from .cpu import CpuBackend, edgetpu_message, interpreter_class, tflite_precision

LIBRARY = "libedgetpu.so.1"
INSTALL_HINT = (
    "install the Edge TPU runtime: on Debian/Raspberry Pi OS add the Coral apt repository and "
    "`apt-get install libedgetpu1-std`"
)
DEVICE_PATTERN = re.compile(r"^(usb|pci)(:\d+)?$")


def _library_present() -> bool:
    if ctypes.util.find_library("edgetpu"):
        return True
    for d in ("/usr/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/local/lib"):
        if (Path(d) / LIBRARY).exists():
            return True
    return False


def edgetpu_devices() -> list[str]:
    """Edge TPUs visible to the OS: ``usb`` for a Coral USB Accelerator, ``pci:N`` for PCIe/M.2 ones."""
    found = []
    usb = Path("/sys/bus/usb/devices")
    if usb.is_dir():
        for dev in usb.iterdir():
            try:
                vid = (dev / "idVendor").read_text().strip()
                pid = (dev / "idProduct").read_text().strip()
            except OSError:
                continue
            # 1a6e:089a before the runtime loads its firmware, 18d1:9302 after.
            if (vid, pid) in (("1a6e", "089a"), ("18d1", "9302")):
                found.append("usb")
    found += [f"pci:{i}" for i, _ in enumerate(sorted(Path("/dev").glob("apex_*")))]
    return found


class EdgeTpuBackend(CpuBackend):
    """Runs an ``*_edgetpu.tflite`` file on a Coral Edge TPU.

    Args:
        path: The compiled model.
        threads: CPU threads for ops left outside the TPU.
        device: ``usb``, ``usb:N``, ``pci`` or ``pci:N``; None for the first found.
    """

    name: ClassVar[str] = "edgetpu"
    served_by: str = "Edge TPU"

    @classmethod
    def plan(cls, path: Path, info: Any, options: Any) -> Plan:
        """Runs a ``.tflite`` file; when chosen automatically, only one compiled for the Edge TPU."""
        if info.format not in cls.formats:
            raise ModelError(f"{path}: the {cls.name} backend runs .tflite files, not {info.format}")
        if options.backend == "auto" and not info.is_edgetpu:
            raise ModelError(f"{path} is not compiled for the Edge TPU (no edgetpu-custom-op)")
        return Plan(path, info, tflite_precision(info))

    @classmethod
    def open(cls, plan: Plan, options: Any) -> EdgeTpuBackend:
        """The interpreter with the Edge TPU delegate.

        Raises:
            ModelError: An Edge TPU build where the TPU or its library is missing (naming the CPU build).
            EnvironmentMissing: The TPU or its library is missing for a file that is not an Edge TPU build.
        """
        reason = cls.is_available()
        if reason:
            if plan.info.is_edgetpu:
                raise ModelError(edgetpu_message(plan.path, reason))
            raise EnvironmentMissing(f"Edge TPU backend unavailable: {reason}")
        backend = cls(plan.path, options.threads, options.device)
        backend.precision = plan.precision
        return backend

    @staticmethod
    def is_available() -> str | None:
        """None when the library loads and a device is present, else why not."""
        reason = CpuBackend.is_available()
        if reason:
            return reason
        if not _library_present():
            return f"{LIBRARY} not found; {INSTALL_HINT}"
        if not edgetpu_devices():
            return "no Edge TPU found on USB or PCIe"
        return None

    def __init__(self, path: Path | str, threads: int = 1, device: str | None = None):
        if device is not None and not DEVICE_PATTERN.match(device):
            raise InputError(f"Edge TPU device must be usb, usb:N, pci or pci:N. Received: {device!r}")
        _, load_delegate, _ = interpreter_class()
        options = {"device": device} if device else {}
        try:
            delegate = load_delegate(LIBRARY, options)
        except (OSError, ValueError) as e:
            raise EnvironmentMissing(f"cannot load the Edge TPU delegate ({e}); {INSTALL_HINT}") from None
        super().__init__(path, threads, delegates=[delegate])

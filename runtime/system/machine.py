"""What machine a benchmark ran on: CPU, cores, governor, frequency, temperature, throttling, board.

Everything is read from files the system exposes (``/proc``, ``/sys``) or from the board vendors'
tools when present (``vcgencmd`` on a Raspberry Pi, ``nvpmodel`` on a Jetson); what is not exposed is
reported as None, never guessed.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

from .boards import detect_board, detected_model_string


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def cpu_model() -> str:
    """The CPU's name (x86 ``model name``; on Arm the implementer/part pair and its known name)."""
    info = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Model"):
        for line in info.splitlines():
            if line.startswith(key) and ":" in line:
                return line.split(":", 1)[1].strip()
    parts = {line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("CPU part")}
    names = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd07": "Cortex-A57", "0xd08": "Cortex-A72",
             "0xd0b": "Cortex-A76", "0xd42": "Cortex-A78AE"}
    if parts:
        return "+".join(sorted(names.get(p, p) for p in parts))
    return platform.processor() or platform.machine()


INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm", "sve")
"""CPU features that change int8 (and float) kernel speed: x86 AVX2 / AVX-512 VNNI / AMX, Arm dot
product (``asimddp``), int8 matrix multiply (``i8mm``), SVE."""


def cpu_flags() -> list[str]:
    """The features of :data:`INT8_FLAGS` this CPU has (from ``/proc/cpuinfo`` flags or Features)."""
    info = _read("/proc/cpuinfo") or ""
    have: set[str] = set()
    for line in info.splitlines():
        if line.startswith(("flags", "Features")) and ":" in line:
            have |= set(line.split(":", 1)[1].split())
    return [f for f in INT8_FLAGS if f in have]


def os_image() -> str | None:
    """The OS image (``PRETTY_NAME`` of ``/etc/os-release``), or None."""
    for line in (_read("/etc/os-release") or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return None


def emulated() -> bool:
    """True under user-mode emulation (``OCRNET_EMULATED`` set by the emulation check, or QEMU seen)."""
    if os.environ.get("OCRNET_EMULATED"):
        return True
    maps = _read("/proc/self/maps") or ""
    return "qemu" in maps.lower()


def temperatures() -> dict[str, float]:
    """Thermal zone temperatures in degrees Celsius, by zone type."""
    out = {}
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        t = _read(str(zone / "temp"))
        kind = _read(str(zone / "type")) or zone.name
        if t and t.lstrip("-").isdigit():
            out[kind] = int(t) / 1000
    return out


def _tool(cmd: list[str]) -> str | None:
    if not shutil.which(cmd[0]):
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (subprocess.SubprocessError, OSError):
        return None


def machine_info(declared_board: str | None = None) -> dict:
    """A JSON-ready description of this machine for benchmark records."""
    cpu0 = "/sys/devices/system/cpu/cpu0/cpufreq/"
    freq = _read(cpu0 + "scaling_cur_freq")
    return {
        "board_declared": declared_board,
        "board_detected": detect_board(),
        "device_tree_model": detected_model_string() or None,
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "os": os_image(),
        "arch": platform.machine(),
        "governor": _read(cpu0 + "scaling_governor"),
        "frequency_mhz": int(freq) / 1000 if freq and freq.isdigit() else None,
        "temperatures_c": temperatures() or None,
        "rpi_throttled": _tool(["vcgencmd", "get_throttled"]),
        "jetson_power_mode": _tool(["nvpmodel", "-q"]),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "emulated": emulated(),
        "gpu": gpu_info(),
    }


def gpu_info() -> dict | None:
    """The CUDA GPU a GPU backend would use (name, compute capability, memory, shared with the CPU), or None."""
    from .gpu import first_gpu, gpu_reason

    if gpu_reason() is not None:
        return None
    dev = first_gpu()
    return None if dev is None else {"name": dev.name, "compute": f"{dev.compute[0]}.{dev.compute[1]}",
                                     "memory_mb": round(dev.total_mb), "shared_memory": dev.integrated}

"""The Edge TPU compiler: run it when installed, and parse its log into figures.

Never installed by this project (it comes from Coral's apt repository on an x86-64 Linux workstation).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ocrnet_edge.runtime.errors import EnvironmentMissing, OcrnetError

COMPILER = "edgetpu_compiler"
INSTALL_HINT = (
    "edgetpu_compiler is not on PATH: on an x86-64 Debian/Ubuntu workstation add Coral's apt repository and "
    "`apt-get install edgetpu-compiler` (ocrnet-edge never installs it)"
)

_SIZE = re.compile(r"([\d.]+)\s*([KMG]?i?B)")
_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3}


def _bytes(text: str) -> int | None:
    m = _SIZE.search(text)
    return int(float(m.group(1)) * _UNITS.get(m.group(2), 1)) if m else None


@dataclass(frozen=True)
class CompilerLog:
    """Figures from an ``edgetpu_compiler`` log.

    Attributes:
        version: Compiler version.
        succeeded: Whether the model compiled.
        total_ops: Operations in the model.
        tpu_ops: Operations mapped to the Edge TPU.
        cpu_ops: Operations left on the CPU.
        subgraphs: Edge TPU subgraphs.
        onchip_bytes: On-chip memory used for caching parameters.
        onchip_remaining_bytes: On-chip memory left.
        offchip_bytes: Off-chip memory for streaming uncached parameters.
        operators: ``(name, count, status)`` rows of the operator table.
    """

    version: str | None
    succeeded: bool
    total_ops: int | None
    tpu_ops: int | None
    cpu_ops: int | None
    subgraphs: int | None
    onchip_bytes: int | None
    onchip_remaining_bytes: int | None
    offchip_bytes: int | None
    operators: tuple[tuple[str, int, str], ...] = field(default=())

    @property
    def cpu_operators(self) -> list[tuple[str, int, str]]:
        """Operator rows not mapped to the Edge TPU."""
        return [r for r in self.operators if "Mapped to Edge TPU" not in r[2]]

    def as_dict(self) -> dict:
        """JSON-ready."""
        return {**{k: getattr(self, k) for k in ("version", "succeeded", "total_ops", "tpu_ops", "cpu_ops", "subgraphs",
                                                  "onchip_bytes", "onchip_remaining_bytes", "offchip_bytes")},
                "operators": [list(r) for r in self.operators]}


def parse_log(text: str) -> CompilerLog:
    """Parse the compiler's stdout (its documented format)."""
    def find(pattern: str) -> str | None:
        m = re.search(pattern, text, re.MULTILINE)
        return m.group(1) if m else None

    def num(pattern: str) -> int | None:
        v = find(pattern)
        return int(v) if v is not None else None

    total = num(r"^Total number of operations:\s*(\d+)")
    tpu = num(r"^Number of operations that will run on Edge TPU:\s*(\d+)")
    cpu = num(r"^Number of operations that will run on CPU:\s*(\d+)")
    if tpu is None and total is not None and "compiled successfully" in text and cpu is None:
        tpu, cpu = total, 0
    rows = []
    table = re.search(r"^Operator\s+Count\s+Status\s*$(.*)", text, re.MULTILINE | re.DOTALL)
    if table:
        for line in table.group(1).splitlines():
            m = re.match(r"^\s*([A-Z_0-9]+)\s+(\d+)\s+(.+?)\s*$", line)
            if m:
                rows.append((m.group(1), int(m.group(2)), m.group(3)))
    return CompilerLog(
        version=find(r"Edge TPU Compiler version\s+(\S+)"),
        succeeded=bool(re.search(r"compiled successfully", text)),
        total_ops=total, tpu_ops=tpu, cpu_ops=cpu,
        subgraphs=num(r"^Number of Edge TPU subgraphs:\s*(\d+)"),
        onchip_bytes=_bytes(find(r"^On-chip memory used for caching model parameters:\s*(.+)$") or ""),
        onchip_remaining_bytes=_bytes(find(r"^On-chip memory remaining for caching model parameters:\s*(.+)$") or ""),
        offchip_bytes=_bytes(find(r"^Off-chip memory used for streaming uncached model parameters:\s*(.+)$") or ""),
        operators=tuple(rows),
    )


def compiler_available() -> str | None:
    """None when the compiler is on PATH, else the line saying how to install it."""
    return None if shutil.which(COMPILER) else INSTALL_HINT


def compile_edgetpu(model: Path, out_dir: Path, timeout_s: int = 600) -> tuple[Path, CompilerLog]:
    """Compile ``model`` for the Edge TPU into ``out_dir``.

    Returns:
        The compiled file (``<stem>_edgetpu.tflite``) and the parsed log.

    Raises:
        EnvironmentMissing: The compiler is not installed.
        OcrnetError: The compiler failed (its last log line is quoted).
    """
    reason = compiler_available()
    if reason:
        raise EnvironmentMissing(reason)
    try:
        p = subprocess.run([COMPILER, "--show_operations", "--out_dir", str(out_dir), str(model)],
                           check=True, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.CalledProcessError as e:
        last = (e.stdout + e.stderr).strip().splitlines()[-1:] or ["(no output)"]
        raise OcrnetError(f"{COMPILER} failed on {model}: {last[0]}") from None
    log = parse_log(p.stdout)
    return out_dir / f"{model.stem}_edgetpu.tflite", log

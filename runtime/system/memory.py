"""The process's own memory, from ``/proc/self/status`` (Linux; the boards all run Linux)."""

from __future__ import annotations

import resource
from dataclasses import dataclass


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float:
    """Resident set size now, in MB (MiB)."""
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of the process so far, in MB (MiB)."""
    kb = _status_kb("VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024


@dataclass(frozen=True)
class MemoryFigures:
    """Memory at the milestones of starting a model, in MB.

    Attributes:
        after_import: RSS once the runtime is imported.
        after_load: RSS once the model file is opened by the interpreter.
        after_allocate: RSS once tensors are allocated and a first frame ran.
        peak: Peak RSS so far.
        budget: The board's budget for this process.
        emulated: Measured under user-mode emulation, where the RSS is the emulator's (its translation
            cache included), not what the board would show.
        gpu: GPU memory the model took (engine, activations, buffers), or None without a GPU backend.
        shared: The GPU shares the board's memory (a Jetson): the budget counts ``peak + gpu``, because
            memory the GPU allocates is not in the process's RSS but comes from the same DRAM. On a
            discrete GPU the budget counts ``peak`` only and ``gpu`` is reported beside it.
    """

    after_import: float
    after_load: float
    after_allocate: float
    peak: float
    budget: float
    emulated: bool = False
    gpu: float | None = None
    shared: bool = False

    @property
    def counted(self) -> float:
        """What the budget is held against: peak RSS, plus GPU memory where the GPU shares the board's."""
        return self.peak + ((self.gpu or 0.0) if self.shared else 0.0)

    def as_dict(self) -> dict[str, float | bool]:
        """JSON-ready, rounded to 0.1 MB."""
        out = {k: v if isinstance(v, bool) or v is None else round(v, 1) for k, v in self.__dict__.items()}
        out["counted"] = round(self.counted, 1)
        return out

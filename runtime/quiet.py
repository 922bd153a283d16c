"""Keep native libraries' own log lines off the terminal.

LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." and TensorFlow's converter
"fully_quantize: 0, inference_type: 6, ..." straight to the process's stderr from C++, past Python's
logging. While a native call runs, file descriptor 2 goes through a pipe that drops those lines and
passes everything else (progress bars, errors) on at once. ``--debug`` (``OCRNET_DEBUG=1``) lets
everything through.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import threading
from collections.abc import Iterator

DEBUG_ENV = "OCRNET_DEBUG"
NOISE = re.compile(rb"^(INFO: Created TensorFlow Lite .*delegate|fully_quantize: \d|[IW]\d{4} \d\d:\d\d:\d\d\.)")
"""Native log lines that say nothing to a user: LiteRT's delegate notice, the converter's settings line, and
absl's INFO/WARNING lines."""


def _forward(read_fd: int, out_fd: int) -> None:
    pending = b""
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if not NOISE.match(line):
                os.write(out_fd, line + b"\n")
        if b"\r" in pending:  # a progress bar redrawing its line: show it now
            os.write(out_fd, pending)
            pending = b""
    if pending and not NOISE.match(pending):
        os.write(out_fd, pending)


@contextlib.contextmanager
def native_stderr_quiet() -> Iterator[None]:
    """Filter file descriptor 2 for the duration (nothing changes under ``--debug``, or when stderr is not a
    real file descriptor, as under a test's capture)."""
    if os.environ.get(DEBUG_ENV):
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    read_fd, write_fd = os.pipe()
    worker = threading.Thread(target=_forward, args=(read_fd, saved), daemon=True)
    worker.start()
    os.dup2(write_fd, fd)
    os.close(write_fd)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, fd)  # closes the pipe's last writer: the worker sees the end
        worker.join(timeout=5)
        os.close(read_fd)
        os.close(saved)

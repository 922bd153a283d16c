"""Errors that reach the user as one clear line and a documented exit code.

Every command of the CLI catches :class:`OcrnetError` and prints ``error: <message>`` on stderr
with the error's exit code; ``--debug`` shows the traceback as well. Anything else escaping a
command is a bug and exits with :data:`EXIT_INTERNAL`.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
"""An unexpected exception: a bug, reported with a traceback hint."""
EXIT_USAGE = 2
"""Bad command-line usage (argparse's own code)."""
EXIT_INPUT = 3
"""A file or folder given by the user is missing, unreadable or malformed."""
EXIT_MODEL = 4
"""A model file is not what the command needs (not a model, wrong contract, float where int8 is needed)."""
EXIT_GATE = 5
"""A quality gate failed (fidelity after quantization, Edge TPU mapping); outputs were still written."""
EXIT_ENVIRONMENT = 6
"""Something the command needs is not installed or not present (an extra, a library, a device)."""
EXIT_OUTPUT = 7
"""An output could not be written (unwritable folder, disk full)."""
EXIT_INTERRUPTED = 130
"""Stopped by SIGINT or SIGTERM after a clean shutdown."""


class OcrnetError(Exception):
    """Base class of errors meant for the user. ``exit_code`` says which kind it is."""

    exit_code = EXIT_INTERNAL


class InputError(OcrnetError, ValueError):
    """A user-supplied file, folder or value is missing or malformed."""

    exit_code = EXIT_INPUT


class ModelError(OcrnetError, ValueError):
    """A model file does not meet what the command needs."""

    exit_code = EXIT_MODEL


class GateError(OcrnetError):
    """A quality gate failed; the outputs that explain why were written."""

    exit_code = EXIT_GATE


class EnvironmentMissing(OcrnetError, RuntimeError):
    """A package, library or device that the command needs is missing."""

    exit_code = EXIT_ENVIRONMENT


class OutputError(OcrnetError, OSError):
    """An output could not be written."""

    exit_code = EXIT_OUTPUT

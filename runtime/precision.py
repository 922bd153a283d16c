"""Which ONNX file a GPU backend runs, at which precision: decided from the file given, the board and the GPU.

The rule (the README's "Jetson" section says it for users):

- ``--precision auto``: an int8 build given (``x_int8.tflite``, ``x_int8_qdq.onnx``) runs INT8 where the
  board's ``precision`` lists ``int8``; anything else runs at the board's first float precision (``fp16`` on
  both Jetson profiles). ``--precision int8|fp16|fp32`` asks for one.
- The GPU has the last word: INT8 on a GPU without fast INT8 (Jetson Nano's Maxwell) falls back to FP16, and
  FP16 on one without fast FP16 to FP32, each said once.
- INT8 runs the explicit, symmetric QDQ file (``x_int8_qdq.onnx``; TensorRT refuses the QDQ of a converted
  ``.tflite``), FP16 and FP32 the float file (``x.onnx``), found beside the file given; INT8 without a QDQ file
  runs FP16 from the float file, said.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError
from .onnxfile import QDQ_SUFFIX, base_name, onnx_build

PRECISIONS = ("int8", "fp16", "fp32")
"""Precisions a GPU backend runs at."""
DEFAULT_PRECISION = ("fp16", "fp32")
"""A board profile without ``precision``: float only (INT8 only where a profile says the board has it)."""


@dataclass(frozen=True)
class GpuCaps:
    """What the GPU runs fast (None: not known here, no fallback decided on it).

    Attributes:
        name: The GPU's name.
        int8: Fast INT8 (compute capability 6.1 and up, except Jetson TX2's 6.2).
        fp16: Fast FP16 (5.3, 6.0, 6.2, 7.0 and up).
    """

    name: str = "GPU"
    int8: bool | None = None
    fp16: bool | None = None


def is_int8_build(info) -> bool:
    """Whether a model file is an int8 build: a QDQ ONNX file, or a TFLite file with an 8-bit input."""
    if info.format == "onnx":
        return info.is_qdq
    dtype = info.tensors[info.inputs[0]].dtype if info.inputs else "float32"
    return dtype in ("int8", "uint8")


def choose_precision(int8_build: bool, asked: str, board: tuple[str, ...], caps: GpuCaps,
                     board_name: str = "the board") -> tuple[str, list[str]]:
    """The precision to run and the notes that say why it is not the one asked for.

    Args:
        int8_build: The file given is an int8 build.
        asked: ``auto`` or one of :data:`PRECISIONS`.
        board: The board profile's precisions, best first.
        caps: What the GPU runs fast.
        board_name: For the notes.
    """
    notes: list[str] = []
    floats = [p for p in board if p != "int8"] or ["fp32"]
    if asked != "auto":
        precision = asked
    elif int8_build and "int8" in board:
        precision = "int8"
    else:
        precision = floats[0]
        if int8_build:
            notes.append(f"{board_name} lists no int8 precision ({', '.join(board)}): {precision} from the float model")
    if precision == "int8" and caps.int8 is False:
        notes.append(f"INT8 asked but {caps.name} has no fast INT8: FP16 instead")
        precision = "fp16"
    if precision == "fp16" and caps.fp16 is False:
        notes.append(f"FP16 asked but {caps.name} has no fast FP16: FP32 instead")
        precision = "fp32"
    return precision, notes


def gpu_file(path: Path, info, precision: str, backend: str) -> tuple[Path, str, list[str]]:
    """The ONNX file to run at ``precision`` for the file given: ``(file, precision, notes)``.

    Raises:
        ModelError: No ONNX build for it (naming the file expected and the command that writes it).
    """
    notes: list[str] = []
    given_onnx = info.format == "onnx"
    if precision == "int8":
        f = path if given_onnx and info.is_qdq else onnx_build(path, True)
        if f is not None:
            return f, precision, notes
        notes.append(f"no {base_name(path)}{QDQ_SUFFIX}.onnx beside {path.name} for INT8: the float model instead")
        precision = "fp16"
    f = path if given_onnx and not info.is_qdq else onnx_build(path, False)
    if f is None:
        what = "an int8 QDQ file" if given_onnx else f"a {info.format} file"
        raise ModelError(f"{path} is {what}; the {backend} backend runs {precision} from the float ONNX file "
                         f"{base_name(path)}.onnx beside it, which is missing (`ocrnet-edge convert MODEL.keras --onnx` "
                         "writes both)")
    return f, precision, notes

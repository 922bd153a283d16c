"""The model card: everything the runtime needs to run a ``.tflite`` file, parsed strictly.

Written by the converter into the file's TFLite metadata (and beside it as ``<name>.card.json``);
for models from elsewhere a small hand-written card is given with ``--card``. Minimal example, for
Coral's DeepLab (argmax inside the graph, no signature, so the output is bound by tensor name)::

    {"format": "ocrnet-edge-card/1", "name": "deeplabv3_mnv2_pascal",
     "input": {"size": 513, "resize": "stretch", "colour_order": "rgb"},
     "outputs": {"labels": {"role": "seg_labels", "tensor": "ArgMax"}},
     "semantic_classes": ["background", "aeroplane", ...]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import contract
from .errors import InputError, ModelError
from .preprocess import COLOUR_ORDERS, RESIZE_MODES

CARD_FORMAT = "ocrnet-edge-card/1"
ROLES = (contract.DET_SCORES, contract.DET_BOXES, contract.DET_COEFFS, contract.SEG_LOGITS, contract.MASK_PROTOS,
         "seg_labels")
"""Output roles the decoders understand; ``seg_labels`` is a class-id map computed inside the graph."""


@dataclass(frozen=True)
class OutputSpec:
    """One output of the model.

    Attributes:
        name: Signature output name (or a free name when bound by tensor).
        role: What the decoders do with it (one of :data:`ROLES`).
        tensor: Tensor name to bind when the file has no signature; None to bind by signature name.
        shape: Expected shape, or None to accept the file's.
    """

    name: str
    role: str
    tensor: str | None = None
    shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ModelCard:
    """The parsed card.

    Attributes:
        name: Model name.
        input_size: Input size: the side of a square input, or ``(width, height)`` (the card's
            ``input.size``: ``320`` or ``[416, 320]``).
        resize: ``letterbox`` or ``stretch``.
        colour_order: Channel order the model expects (``rgb`` or ``bgr``).
        outputs: Outputs by name.
        class_names: Thing classes (detection), in id order (the card's ``thing_classes``).
        semantic_classes: Semantic classes, background first.
        strides: Detection strides.
        seg_stride: Stride of semantic logits and prototypes relative to the input.
        decode: Default thresholds (``score_threshold``, ``iou_threshold``, ``max_detections``).
        raw: The whole card as read (hashes, versions, quantization...).
    """

    name: str
    input_size: contract.InputSize
    resize: str
    colour_order: str
    outputs: dict[str, OutputSpec]
    class_names: tuple[str, ...] = ()
    semantic_classes: tuple[str, ...] = ()
    strides: tuple[int, ...] = contract.DEFAULT_STRIDES
    seg_stride: int = contract.SEG_STRIDE
    decode: dict[str, float] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def by_role(self, role: str) -> OutputSpec | None:
        """The output with ``role``, or None."""
        return next((o for o in self.outputs.values() if o.role == role), None)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks this model answers."""
        roles = {o.role for o in self.outputs.values()}
        out = []
        if contract.DET_SCORES in roles:
            out.append("detect")
        if contract.SEG_LOGITS in roles or "seg_labels" in roles:
            out.append("semantic")
        if contract.DET_COEFFS in roles and contract.MASK_PROTOS in roles:
            out.append("instance")
        return tuple(out)


_TOP_KEYS = {"format", "name", "input", "outputs", "class_names", "thing_classes", "semantic_classes", "strides",
             "seg_stride", "decode", "model_sha256", "source_sha256", "versions", "created", "quantization", "task",
             "tasks", "float_reference", "notes", "calibration", "gate"}
_INPUT_KEYS = {"size", "resize", "colour_order", "dtype", "scale", "zero_point", "name", "pad_value"}
_OUTPUT_KEYS = {"role", "tensor", "shape", "dtype", "scale", "zero_point", "range", "meaning"}


def _fail(where: str, msg: str) -> ModelError:
    return ModelError(f"{where}: model card: {msg}")


def parse_card(doc: Any, where: str = "card") -> ModelCard:
    """Validate a card document and build a :class:`ModelCard`.

    Raises:
        ModelError: One line saying which key is wrong and what was expected.
    """
    if not isinstance(doc, dict):
        raise _fail(where, f"expected a JSON object. Received: {type(doc).__name__}")
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise _fail(where, f"unknown keys {unknown}")
    if doc.get("format") != CARD_FORMAT:
        raise _fail(where, f"format must be {CARD_FORMAT!r}. Received: {doc.get('format')!r}")
    inp = doc.get("input")
    if not isinstance(inp, dict):
        raise _fail(where, "'input' must be an object with at least 'size'")
    unknown = sorted(set(inp) - _INPUT_KEYS)
    if unknown:
        raise _fail(where, f"unknown input keys {unknown}")
    size = inp.get("size")
    sides = [size] if isinstance(size, int) else size if isinstance(size, list) and len(size) == 2 else None
    if sides is None or not all(isinstance(v, int) and not isinstance(v, bool) and 16 <= v <= 4096 for v in sides):
        raise _fail(where, "input.size must be an integer in [16, 4096] (a square input) or [width, height]. "
                           f"Received: {size!r}")
    size = contract.input_size(sides[0], sides[-1])
    resize = inp.get("resize", "letterbox")
    if resize not in RESIZE_MODES:
        raise _fail(where, f"input.resize must be one of {RESIZE_MODES}. Received: {resize!r}")
    order = inp.get("colour_order", "rgb")
    if order not in COLOUR_ORDERS:
        raise _fail(where, f"input.colour_order must be one of {COLOUR_ORDERS}. Received: {order!r}")
    outs = doc.get("outputs")
    if not isinstance(outs, dict) or not outs:
        raise _fail(where, "'outputs' must be a non-empty object of name -> {role, ...}")
    outputs = {}
    for name, o in outs.items():
        if not isinstance(o, dict):
            raise _fail(where, f"output {name!r} must be an object")
        unknown = sorted(set(o) - _OUTPUT_KEYS)
        if unknown:
            raise _fail(where, f"unknown keys {unknown} in output {name!r}")
        if o.get("role") not in ROLES:
            raise _fail(where, f"output {name!r} has role {o.get('role')!r}; expected one of {ROLES}")
        tensor = o.get("tensor")
        if tensor is not None and not isinstance(tensor, str):
            raise _fail(where, f"output {name!r}: 'tensor' must be a string")
        shape = o.get("shape")
        if shape is not None and (not isinstance(shape, list) or not all(isinstance(d, int) and d > 0 for d in shape)):
            raise _fail(where, f"output {name!r}: 'shape' must be a list of positive integers")
        outputs[name] = OutputSpec(name, o["role"], tensor, tuple(shape) if shape else None)
    roles = [o.role for o in outputs.values()]
    if len(set(roles)) != len(roles):
        raise _fail(where, f"each role may appear once. Received: {roles}")
    if contract.DET_SCORES in roles and contract.DET_BOXES not in roles:
        raise _fail(where, "det_scores needs det_boxes")
    if (contract.DET_COEFFS in roles) != (contract.MASK_PROTOS in roles):
        raise _fail(where, "det_coeffs and mask_protos come together")

    def names(key: str) -> tuple[str, ...]:
        v = doc.get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise _fail(where, f"{key!r} must be a list of strings")
        return tuple(v)

    if "thing_classes" in doc and "class_names" in doc and doc["thing_classes"] != doc["class_names"]:
        raise _fail(where, "'thing_classes' and 'class_names' (its older name) disagree")
    class_names = names("thing_classes" if "thing_classes" in doc else "class_names")
    if contract.DET_SCORES in roles and not class_names:
        raise _fail(where, "a detection model needs 'thing_classes'")
    seg = next((o for o in outputs.values() if o.role == contract.SEG_LOGITS and o.shape), None)
    sem = names("semantic_classes")
    if seg is not None and sem and seg.shape[-1] != len(sem):
        raise _fail(where, f"seg_logits has {seg.shape[-1]} classes but 'semantic_classes' names {len(sem)}")
    det = next((o for o in outputs.values() if o.role == contract.DET_SCORES and o.shape), None)
    if det is not None and det.shape[-1] != len(class_names):
        raise _fail(where, f"det_scores has {det.shape[-1]} classes but 'thing_classes' names {len(class_names)}")
    strides = doc.get("strides", list(contract.DEFAULT_STRIDES))
    if not isinstance(strides, list) or not all(isinstance(s, int) and s > 0 for s in strides):
        raise _fail(where, "'strides' must be a list of positive integers")
    seg_stride = doc.get("seg_stride", contract.SEG_STRIDE)
    if not isinstance(seg_stride, int) or seg_stride <= 0:
        raise _fail(where, "'seg_stride' must be a positive integer")
    decode = doc.get("decode", {})
    if not isinstance(decode, dict) or not all(isinstance(v, (int, float)) for v in decode.values()):
        raise _fail(where, "'decode' must map names to numbers")
    name = doc.get("name", "model")
    if not isinstance(name, str):
        raise _fail(where, "'name' must be a string")
    return ModelCard(
        name=name, input_size=size, resize=resize, colour_order=order, outputs=outputs,
        class_names=class_names, semantic_classes=names("semantic_classes"), strides=tuple(strides),
        seg_stride=seg_stride, decode=dict(decode), raw=doc,
    )


def read_card_file(path: Path | str) -> ModelCard:
    """Read and parse a card JSON file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: card file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: not a JSON model card ({e})") from None
    return parse_card(doc, str(path))

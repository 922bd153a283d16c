"""Keras to a float32 ONNX file that TensorRT's parser takes, with the model card inside.

The working path (measured, see FACTS.md "ONNX and TensorRT"): the model rebuilt with a static batch of 1
at the export size goes through ``tf2onnx.convert.from_function`` on ``model(image, training=False)``, so
the graph keeps the contract's output names and takes ``image``, float32 ``(1, S, S, 3)`` RGB 0..255, exactly
the Keras model's input. Then two rewrites:

- BatchNorm folded: tf2onnx leaves the BatchNorm after each depthwise convolution as a per-channel ``Mul``
  and ``Add``; ONNX Runtime's basic graph optimizations (through ``quant_pre_process``, which also infers
  every shape) fold them into the convolution. Quantizing an unfolded Mul/Add would add a rounding step
  TensorRT never sees in the TFLite file.
- Resize: tf2onnx writes Keras' nearest upsampling as ``coordinate_transformation_mode=tf_half_pixel_for_nn``
  with ``nearest_mode=floor``, which every TensorRT parser from 8.2 to 10.x refuses. For an integer factor k,
  ``floor((i + 0.5) / k) = floor(i / k)``, so ``asymmetric`` + ``floor`` is the same function (bit-identical
  outputs in ONNX Runtime); other factors are left alone (the TensorRT check then names them).

The card (the same document as the TFLite file's, outputs without quantization; ``quantization`` says the
format, precision and opset) is stored in the ONNX ``metadata_props`` under :data:`CARD_METADATA_NAME`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from ocrnet_edge.model.config import ModelConfig
from ocrnet_edge.runtime.errors import EnvironmentMissing, InputError, ModelError, OutputError
from ocrnet_edge.runtime.modelfile import CARD_METADATA_NAME

ONNX_EXTRA = "pip install 'ocrnet-edge[onnx]'"
DEFAULT_OPSET = 17
NANO_OPSET = 13
"""Jetson Nano (JetPack 4.6, TensorRT 8.2): its parser is surest at opset 13."""
INPUT_NAME = "image"
NN_RESIZE_MODE = b"tf_half_pixel_for_nn"
ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 10: "float16", 11: "float64"}
"""``onnx.TensorProto`` element types by number (the ones our graphs hold)."""


def require_onnx() -> None:
    """Fail with one line naming the extra when onnx, tf2onnx or onnxruntime is missing.

    Raises:
        EnvironmentMissing: A library of the ``onnx`` extra is not installed (exit 6).
    """
    missing = []
    for mod in ("onnx", "tf2onnx", "onnxruntime"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise EnvironmentMissing(f"the ONNX export needs {', '.join(missing)}: {ONNX_EXTRA}")


def static_model(net, cfg: ModelConfig):
    """``net`` itself when it already takes ``(1, H, W, 3)`` at ``cfg``'s size, else its copy rebuilt at batch 1
    and that size."""
    w, h = cfg.input_wh
    if tuple(net.input_shape) == (1, h, w, 3):
        return net
    from .export import export_model

    return export_model(net, cfg)


def tf2onnx_model(net, cfg: ModelConfig, opset: int = DEFAULT_OPSET):
    """The model as tf2onnx writes it (no rewrites): an ``onnx.ModelProto`` with input ``image``."""
    import tensorflow as tf
    import tf2onnx

    from ocrnet_edge.runtime.quiet import native_stderr_quiet

    static = static_model(net, cfg)
    w, h = cfg.input_wh
    fn = tf.function(lambda image: static(image, training=False))
    spec = [tf.TensorSpec((1, h, w, 3), tf.float32, name=INPUT_NAME)]
    with native_stderr_quiet():
        model, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=opset)
    return model


def fold_batchnorm(model):
    """Fold per-channel ``Mul``/``Add`` (BatchNorm) into the convolutions before them and infer every shape
    (ONNX Runtime's basic optimizations, which keep standard ONNX ops only). Returns a new ModelProto."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="ocrnet-onnx-") as d:
        src, dst = Path(d) / "in.onnx", Path(d) / "out.onnx"
        onnx.save(model, str(src))
        # Symbolic shape inference needs sympy and adds nothing here: every shape is static.
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        folded = onnx.load(str(dst))
    used = {n.domain for n in folded.graph.node} | {""}
    keep = [o for o in folded.opset_import if o.domain in used]  # the optimizer lists every domain it knows
    del folded.opset_import[:]
    folded.opset_import.extend(keep)
    return folded


def _shape(model, name: str) -> list[int] | None:
    for vi in (*model.graph.value_info, *model.graph.input, *model.graph.output):
        if vi.name == name:
            dims = vi.type.tensor_type.shape.dim
            return [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    return None


def resize_factors(model, node) -> list[float] | None:
    """Per-axis scale factors of a Resize node, from its ``scales`` constant or its ``sizes`` constant and
    input shape; None when they are not constants."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    if len(node.input) > 2 and node.input[2] in inits:
        scales = numpy_helper.to_array(inits[node.input[2]])
        if scales.size:
            return [float(s) for s in scales]
    if len(node.input) > 3 and node.input[3] in inits:
        sizes = numpy_helper.to_array(inits[node.input[3]])
        shape = _shape(model, node.input[0])
        if shape and len(shape) == sizes.size and all(d > 0 for d in shape):
            return [float(o) / float(i) for o, i in zip(sizes, shape)]
    return None


def rewrite_resize(model) -> list[str]:
    """Rewrite nearest-neighbour Resize nodes from ``tf_half_pixel_for_nn`` + ``floor`` to ``asymmetric`` +
    ``floor`` where every scale factor is an integer (the same function then; see the module docstring).
    Edits ``model`` in place; returns the names of the nodes rewritten."""
    done = []
    for node in model.graph.node:
        if node.op_type != "Resize":
            continue
        attrs = {a.name: a for a in node.attribute}
        ctm = attrs.get("coordinate_transformation_mode")
        mode = attrs.get("mode")
        nearest = attrs.get("nearest_mode")
        if ctm is None or ctm.s != NN_RESIZE_MODE or mode is None or mode.s != b"nearest":
            continue
        if nearest is not None and nearest.s != b"floor":
            continue
        factors = resize_factors(model, node)
        if not factors or any(f < 1 or f != int(f) for f in factors):
            continue
        ctm.s = b"asymmetric"
        done.append(node.name)
    return done


def graph_io(model) -> tuple[dict, dict[str, dict]]:
    """``(input, outputs)`` of a graph as the card describes them (float tensors: scale None, zero point 0)."""
    def describe(vi) -> dict:
        t = vi.type.tensor_type
        return {"shape": [d.dim_value for d in t.shape.dim], "dtype": ONNX_DTYPES.get(t.elem_type, str(t.elem_type)),
                "scale": None, "zero_point": 0}

    (inp,) = [i for i in model.graph.input if i.name not in {x.name for x in model.graph.initializer}]
    return {"name": inp.name, **describe(inp)}, {o.name: describe(o) for o in model.graph.output}


def onnx_versions() -> dict[str, str]:
    """Versions of the ONNX tools that made a file (merged into the card's ``versions``)."""
    import onnx
    import onnxruntime
    import tf2onnx

    return {"onnx": onnx.__version__, "tf2onnx": tf2onnx.__version__, "onnxruntime": onnxruntime.__version__}


def onnx_card(model, cfg: ModelConfig, name: str, source: Path, precision: str, **card_kw: Any) -> dict[str, Any]:
    """The card of an ONNX file, built as the TFLite file's (:func:`convert.card.card_from_io`).

    Args:
        model: The ONNX graph (its input and outputs give the card's).
        cfg: Architecture and export size.
        name: Model name.
        source: The Keras file whose hash the card records.
        precision: ``float32``, ``float16`` or ``int8_qdq``, written in the card's ``quantization``.
        **card_kw: ``calibration``, ``gate``, ``pretrained``, ``quantization`` (merged) as for the TFLite card.
    """
    from .card import card_from_io

    inp, outputs = graph_io(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    quant = {"format": "onnx", "precision": precision, "opset": opset, **card_kw.pop("quantization", {})}
    return card_from_io(cfg, name, source, inp, outputs, quantization=quant, extra_versions=onnx_versions(), **card_kw)


def embed_onnx_card(model, card: dict[str, Any]) -> None:
    """Store ``card`` as JSON in ``model``'s ``metadata_props`` (replacing an earlier card), in place."""
    keep = [p for p in model.metadata_props if p.key != CARD_METADATA_NAME]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    entry = model.metadata_props.add()
    entry.key = CARD_METADATA_NAME
    entry.value = json.dumps(card, separators=(",", ":"), sort_keys=True)


def load_onnx(path: Path | str):
    """Load an ONNX file, refusing one that is missing, truncated or not ONNX with one line.

    Raises:
        InputError: The file is missing.
        ModelError: The file is not a readable ONNX model.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: ONNX file not found")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf's DecodeError and friends: the file is not (all) there
        raise ModelError(f"{path}: not an ONNX model or truncated ({type(e).__name__}: {str(e)[:120]})") from None
    if not model.graph.node or not model.graph.output:
        raise ModelError(f"{path}: not an ONNX model (no graph nodes or outputs)")
    return model


def read_onnx_card(path: Path | str) -> dict[str, Any] | None:
    """The card stored in an ONNX file's metadata, or None when it has none.

    Raises:
        InputError, ModelError: The file is missing, not ONNX, or its card is not JSON.
    """
    from ocrnet_edge.runtime.modelfile import inspect_file

    return inspect_file(path).card()  # the runtime's reader: one parser of the embedded card


def save_onnx_atomic(model, out: Path) -> Path:
    """Write ``model`` to ``out`` through a temporary name (``out.partial``, then renamed)."""
    import onnx

    tmp = out.with_name(out.name + ".partial")
    try:
        onnx.save(model, str(tmp))
        tmp.replace(out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{out}: cannot write ({e.strerror or e})") from None
    return out


def to_float_onnx(net, cfg: ModelConfig, opset: int = DEFAULT_OPSET):
    """The float32 graph with BatchNorm folded and the Resize rewrite: ``(ModelProto, rewritten Resize names)``.

    Raises:
        ModelError: The exported graph lacks an output of the contract (bound by name on the device).
    """
    import onnx

    from ocrnet_edge.model.network import output_spec

    # Rewrite first (shapes inferred for Resize nodes given sizes), so that no tool ever loads the refused mode.
    model = onnx.shape_inference.infer_shapes(tf2onnx_model(net, cfg, opset))
    rewritten = rewrite_resize(model)
    model = fold_batchnorm(model)
    names = {o.name for o in model.graph.output}
    missing = sorted(set(output_spec(cfg)) - names)
    if missing:
        raise ModelError(f"the ONNX graph lacks outputs {missing} (has {sorted(names)})")
    return model, rewritten


def keras_to_onnx(net, cfg: ModelConfig, out: Path, opset: int = DEFAULT_OPSET, card: dict | None = None) -> Path:
    """Write the float32 ONNX file of a Keras model.

    Args:
        net: The Keras model (rebuilt with batch 1 at ``cfg.input_size`` when it is not already).
        cfg: Architecture and export size.
        out: The ``.onnx`` path (written through a temporary name).
        opset: ONNX opset (17; 13 for Jetson Nano's TensorRT 8.2).
        card: The card to embed; None builds a plain one (no calibration or gate record) with the model
            name taken from ``out``'s stem, the source hash being that of ``out`` itself.

    Returns:
        ``out``: input ``image`` float32 (1, S, S, 3) RGB 0..255; outputs named as the contract
        (``det_scores`` (1, N, C), ``det_boxes`` (1, N, 4), ``det_coeffs`` (1, N, K), ``seg_logits``
        (1, S/4, S/4, 1+C+R), ``mask_protos`` (1, S/4, S/4, K), float32, or the subset the model has).
    """
    require_onnx()
    if opset < 13:
        raise InputError(f"opset must be at least 13 (Resize with integer scales, per-channel QDQ). Received: {opset}")
    out = Path(out)
    model, _ = to_float_onnx(net, cfg, opset)
    if card is None:
        save_onnx_atomic(model, out)  # the card's hash needs a file; the plain card records the ONNX file's own
        card = onnx_card(model, cfg, out.stem, out, "float32")
    embed_onnx_card(model, card)
    return save_onnx_atomic(model, out)

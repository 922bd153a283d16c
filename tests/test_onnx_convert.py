"""``convert --onnx``: the float and QDQ ONNX files, their gate, the static TensorRT check and bad input.

One ONNX step (:func:`convert.onnx_step.export_onnx`, what ``convert --onnx`` runs after the TFLite files) on
the session's tiny model feeds every test here, at opset 13 (what ``--board jetson-nano`` writes), so that
every TensorRT version listed must take its files. The TFLite files compared with come from the session's
``converted`` fixture (the same model through the real pipeline).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from ocrnet_edge.cli import main
from ocrnet_edge.convert import onnx_export, onnx_fidelity, onnx_quant, tensorrt_check
from ocrnet_edge.runtime import contract, errors

from .conftest import SMALL, TINY

OPSET = 13
ATOL, RTOL = 1e-6, 1e-4
"""Float ONNX against Keras / LiteRT float32: numerical noise (an untrained model's outputs are near 0)."""
PROBE_IMAGES = 3
GATE_IMAGES = 2
FP16_TOLERANCE = 1e-2
HEAD_CONVS_PER_LEVEL = 7
CALIB_IMAGES = 8
TFLITE_DROPS = {"box_ap": -1.0, "mask_ap": -1.0, "miou": -1.0}
"""As if the int8 TFLite file had gained a point on each metric: the QDQ file then loses more, and the report
must say where."""
NN_MODE = "tf_half_pixel_for_nn"
ONNX_LINE = "pip install 'ocrnet-edge[onnx]'"


@pytest.fixture(scope="module")
def keras_static(tiny_model):
    """The tiny model rebuilt at batch 1, as convert rebuilds it."""
    from ocrnet_edge.convert.export import export_model
    from ocrnet_edge.model.io import load_model

    return export_model(load_model(tiny_model), TINY)


@pytest.fixture(scope="module")
def step_inputs(keras_static, tiny_model, calib_dir, small_dataset):
    """What ``convert`` hands the ONNX step: calibration files, card entries, the gate images and Keras metrics."""
    from ocrnet_edge.convert import calibration
    from ocrnet_edge.model.data import load_dataset
    from ocrnet_edge.model.evaluate import Scored, evaluate_keras

    data = load_dataset(small_dataset, TINY.class_names)
    heldout = data.subset(data.records[:GATE_IMAGES])
    files = calibration.scan(calib_dir, min_images=1).files[:CALIB_IMAGES]
    card_kw = {"calibration": {"source": str(calib_dir), "images": len(files)}, "gate": {"source": "scenes"}}
    scored = Scored()
    return files, card_kw, ("scenes", heldout, evaluate_keras(keras_static, heldout, progress=False, keep=scored), scored)


@pytest.fixture(scope="module")
def onnx_out(keras_static, tiny_model, step_inputs, tmp_path_factory):
    """The ONNX step on the tiny model: both files written, gated on a few scenes, checked for TensorRT."""
    from ocrnet_edge.convert.onnx_step import export_onnx

    files, card_kw, gate = step_inputs
    # An untrained model's metrics are noise: any drop passes here; the gate's verdicts are tested below.
    return export_onnx(keras_static, TINY, tmp_path_factory.mktemp("onnx"), "tiny", tiny_model, files, card_kw, OPSET,
                       gate, TFLITE_DROPS, 100.0, tmp_path_factory.mktemp("onnx_work"))


@pytest.fixture(scope="module")
def float_model(onnx_out):
    import onnx

    return onnx.load(str(onnx_out.float_path))


def _session(model):
    import onnxruntime as ort

    data = model if isinstance(model, (str, bytes)) else model.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def _run(session, x: np.ndarray) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"image": x})))


def _probes() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (1, SMALL, SMALL, 3)).astype(np.float32) for _ in range(PROBE_IMAGES)]


def test_files_report_part_and_markdown(onnx_out):
    from ocrnet_edge.convert.report import render_markdown

    assert {p.name for p in onnx_out.float_path.parent.iterdir()} == {"tiny.onnx", "tiny_int8_qdq.onnx"}
    assert onnx_out.error is None
    part = onnx_out.report
    assert part["opset"] == OPSET and set(part["fidelity"]) == {"float32", "float16", "int8_qdq"}
    assert all(f["passed"] for f in part["fidelity"].values())
    assert set(part["qdq_vs_tflite_int8"]) == {"box_ap", "mask_ap", "miou"}
    assert part["qdq_worse_than_tflite_on"] and part["qdq_layers"]
    local = [r["local_sqnr_db"] for r in part["qdq_layers"]]
    assert local == sorted(local) and all(np.isfinite(local))
    assert set(part["tensorrt"]) == {"tiny.onnx", "tiny_int8_qdq.onnx"}
    report = {"name": "tiny", "model": "m", "input_size": SMALL, "calibration": {"images": 8, "source": "s", "skipped": []},
              "onnx": part}
    md = render_markdown(report)
    for heading in ("## ONNX files", "### tiny.onnx (float32) against the Keras float model",
                    "### tiny.onnx as FP16 (float16) against the float ONNX",
                    "### tiny_int8_qdq.onnx (int8_qdq) against the float ONNX", "### TensorRT readiness",
                    "The QDQ file loses more than the int8 TFLite file on"):
        assert heading in md


def test_card_has_the_tflite_cards_structure(onnx_out, converted):
    card = onnx_export.read_onnx_card(onnx_out.float_path)
    tflite_card = json.loads(converted.card.read_text())
    assert set(card) == set(tflite_card) | {"quantization"}
    assert card["quantization"] == {"format": "onnx", "precision": "float32", "opset": OPSET}
    assert card["input"] == {**tflite_card["input"], "dtype": "float32", "scale": None}
    assert {k: v["shape"] for k, v in card["outputs"].items()} == {k: v["shape"] for k, v in tflite_card["outputs"].items()}
    assert all(v["dtype"] == "float32" and v["scale"] is None for v in card["outputs"].values())
    assert {k: v["role"] for k, v in card["outputs"].items()} == {k: v["role"] for k, v in tflite_card["outputs"].items()}
    qdq_card = onnx_export.read_onnx_card(onnx_out.qdq_path)
    assert qdq_card["quantization"]["precision"] == "int8_qdq" and qdq_card["quantization"]["symmetric"] is True


def test_float_onnx_equals_keras_and_litert_float(float_model, keras_static, converted):
    from ai_edge_litert.interpreter import Interpreter

    assert [i.name for i in float_model.graph.input] == ["image"]
    assert {o.name for o in float_model.graph.output} == set(contract.OUTPUT_NAMES)
    assert not [n for n in float_model.graph.node if n.op_type == "BatchNormalization"]
    litert = Interpreter(model_path=str(converted.float32)).get_signature_runner("serving_default")
    session = _session(float_model)
    for x in _probes():
        got = _run(session, x)
        for ref in ({k: np.asarray(v) for k, v in keras_static(x, training=False).items()}, litert(image=x)):
            assert set(ref) == set(got) == set(contract.OUTPUT_NAMES)
            for name, want in ref.items():
                np.testing.assert_allclose(got[name], want, rtol=RTOL, atol=ATOL, err_msg=name)


def _unrewritten(model):
    """A copy with the converter's Resize rewrite undone (as tf2onnx wrote the graph)."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    n = 0
    for node in copy.graph.node:
        for a in node.attribute:
            if node.op_type == "Resize" and a.name == "coordinate_transformation_mode" and a.s == b"asymmetric":
                a.s = NN_MODE.encode()
                n += 1
    return copy, n


def test_resize_rewrite_changes_no_output_and_the_check_refuses_it_undone(float_model, onnx_out):
    rewritten = onnx_out.report["resize_rewritten"]
    original, undone = _unrewritten(float_model)
    assert undone == len(rewritten) >= 1
    before, after = _session(original), _session(float_model)
    for x in _probes():
        a, b = _run(before, x), _run(after, x)
        assert all(np.array_equal(a[k], b[k]) for k in a), "the rewrite must be the same function"
    for v, r in tensorrt_check.check_tensorrt(original).items():
        assert not r.ok and sum(NN_MODE in p for p in r.problems) == undone, v
    assert onnx_export.rewrite_resize(original) == rewritten


def test_qdq_is_symmetric_int8_with_float_biases(onnx_out, float_model):
    import onnx

    qdq = onnx.load(str(onnx_out.qdq_path))
    zps = onnx_quant.zero_points(qdq)
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps.values())
    inits = {i.name: i for i in qdq.graph.initializer}
    dq_inputs = [inits[n.input[0]] for n in qdq.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert dq_inputs and all(t.data_type == onnx.TensorProto.INT8 for t in dq_inputs), "weights int8, no int32 bias"
    stats = onnx_quant.qdq_stats(qdq)
    head = onnx_quant.detection_head(float_model)
    assert len(head) == HEAD_CONVS_PER_LEVEL * len(TINY.strides), "dw, pw, dw, pw, then scores / boxes / coefficients"
    float_convs = [n for n in stats["float_nodes"] if n in {x.name for x in qdq.graph.node if x.op_type == "Conv"}]
    assert stats["quantized_nodes"] > 0 and sorted(float_convs) == sorted(head), "only the detection head stays float"
    assert onnx_out.report["qdq"]["kept_float"] == list(head)
    assert qdq.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_static_check_passes_our_files_for_every_version(onnx_out, float_model):
    import onnx

    for model in (float_model, onnx.load(str(onnx_out.qdq_path))):
        reports = tensorrt_check.check_tensorrt(model)
        assert set(reports) == set(tensorrt_check.TARGETS)
        assert all(r.ok for r in reports.values()), {v: r.problems for v, r in reports.items()}
    qdq_notes = tensorrt_check.check_tensorrt(onnx.load(str(onnx_out.qdq_path)), ["8.2"])["8.2"].notes
    assert any("no INT8" in n for n in qdq_notes)


def test_static_check_refuses_what_tensorrt_refuses(onnx_out):
    import onnx
    from onnx import helper, numpy_helper

    qdq = onnx.load(str(onnx_out.qdq_path))
    name, zp = next(iter(onnx_quant.zero_points(qdq).items()))
    node = next(n for n in qdq.graph.node if n.name == name)
    init = next(i for i in qdq.graph.initializer if i.name == node.input[2])
    init.CopyFrom(numpy_helper.from_array(np.full_like(zp, 3), init.name))
    qdq.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    qdq.opset_import[0].version = 17
    qdq.graph.node.append(helper.make_node("Gelu", ["image"], ["g"], name="custom", domain="com.microsoft"))
    reports = tensorrt_check.check_tensorrt(qdq)
    for v, r in reports.items():
        assert any(f"node '{name}'" in p and "zero point 3" in p for p in r.problems), v
        assert any("dynamic shape" in p for p in r.problems)
        assert any("com.microsoft.Gelu" in p and "plugin" in p for p in r.problems)
    assert [v for v, r in reports.items() if any(p.startswith("opset 17") for p in r.problems)] == ["8.2"]
    with pytest.raises(errors.InputError, match="not among the versions checked"):
        tensorrt_check.target("7.1")
    assert tensorrt_check.target("10.8").version == "10.3"


def test_gate_verdicts_and_failed_files(onnx_out, float_model, keras_static, tiny_model, step_inputs, tmp_path,
                                        monkeypatch):
    from ocrnet_edge.convert import fidelity
    from ocrnet_edge.convert.onnx_step import export_onnx

    fid = onnx_out.report["fidelity"]
    assert set(fid["float32"]["outputs"]) == set(contract.OUTPUT_NAMES) and fid["float32"]["noise_failures"] == []
    qdq = fid["int8_qdq"]
    better = {k: (v + 0.5 if isinstance(v, float) else v) for k, v in qdq["reference_metrics"].items()}
    verdict = fidelity.gate(better, qdq["metrics"], 1.0)
    assert verdict.failed and set(verdict.failed) == set(qdq["drops_points"])
    far = {k: fidelity.OutputAgreement(0.99, 0.5, 0.1, 0.0) for k in contract.OUTPUT_NAMES}
    assert len(onnx_fidelity.noise_failures(far)) == len(contract.OUTPUT_NAMES)
    # FP16 emulation: the float graph computed in float16, float32 at its edges.
    half = _session(onnx_fidelity.float16_copy(float_model))
    assert half.get_inputs()[0].type == "tensor(float)"
    a, b = _run(half, _probes()[0]), _run(_session(float_model), _probes()[0])
    assert all(np.abs(a[k] - b[k]).max() < FP16_TOLERANCE for k in a)
    # A failed gate still writes both files, under names that say so, and the error comes back to raise.
    monkeypatch.setattr(onnx_export, "to_float_onnx", lambda *a, **k: (float_model, []))  # skip tf2onnx: same graph
    files, card_kw, gate = step_inputs
    (tmp_path / "work").mkdir()
    failed = export_onnx(keras_static, TINY, tmp_path, "tiny", tiny_model, files, card_kw, OPSET, gate, TFLITE_DROPS,
                         -1.0, tmp_path / "work")
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == ["tiny_gatefailed.onnx", "tiny_int8_qdq_gatefailed.onnx"]
    with pytest.raises(errors.GateError, match=r"ONNX fidelity gate failed \(tiny.onnx: .*dropped"):
        raise failed.error
    # each failed drop gets its interval over resampled gate images, as the TFLite gate's do
    for f in failed.report["fidelity"].values():
        assert set(f["drop_intervals"]) == set(f["failed"]) and all(lo <= hi for lo, hi in f["drop_intervals"].values())
    assert "over resampled gate images" in str(failed.error)


def test_check_tensorrt_cli(onnx_out, float_model, tmp_path, capsys):
    import onnx

    assert main(["check-tensorrt", str(onnx_out.float_path)]) == 0
    assert capsys.readouterr().out.count(": ok") == len(tensorrt_check.TARGETS)
    bad = tmp_path / "tf2onnx.onnx"
    onnx.save(_unrewritten(float_model)[0], str(bad))
    assert main(["check-tensorrt", str(bad), "--trt", "10.3"]) == errors.EXIT_GATE
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("TensorRT 10.3: node") and NN_MODE in err[0]
    assert err[-1].startswith("error: ") and "refused by TensorRT 10.3" in err[-1]


@pytest.mark.parametrize("case, code, message", [
    ("missing", errors.EXIT_INPUT, "ONNX file not found"),
    ("not_onnx", errors.EXIT_MODEL, "not an ONNX model"),
    ("truncated", errors.EXIT_MODEL, "not an ONNX model or truncated"),
    ("unknown_version", errors.EXIT_INPUT, "not among the versions checked"),
])
def test_check_tensorrt_bad_input(case, code, message, onnx_out, tmp_path, capsys):
    path = tmp_path / "x.onnx"
    if case == "not_onnx":
        path.write_text("this is not a model\n")
    elif case == "truncated":
        path.write_bytes(onnx_out.float_path.read_bytes()[: onnx_out.float_path.stat().st_size // 2])
    elif case == "unknown_version":
        path = onnx_out.float_path
    argv = ["check-tensorrt", str(path)] + (["--trt", "7.1"] if case == "unknown_version" else [])
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_missing_onnx_library_is_exit_6_with_the_install_line(tiny_model, onnx_out, tmp_path, capsys,
                                                               monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    assert main(["check-tensorrt", str(onnx_out.float_path)]) == errors.EXIT_ENVIRONMENT
    assert ONNX_LINE in capsys.readouterr().err
    assert main(["convert", str(tiny_model), "--out", str(tmp_path / "o"), "--onnx"]) == errors.EXIT_ENVIRONMENT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ONNX_LINE in err[0]
    assert not (tmp_path / "o").exists()


def test_opset_is_checked_when_options_are_built():
    from ocrnet_edge.convert.pipeline import ConvertOptions

    with pytest.raises(errors.InputError, match="ONNX opset must be 13 to 20"):
        ConvertOptions(onnx=True, onnx_opset=11)


@pytest.mark.parametrize("argv, opset", [([], 17), (["--board", "jetson-nano"], 13), (["--opset", "15"], 15)])
def test_convert_onnx_opset_per_board(argv, opset, tiny_model, tmp_path, monkeypatch):
    from ocrnet_edge.convert import pipeline

    seen = {}

    def fake(model, out, options):
        seen["options"] = options
        raise errors.InputError("stopped before converting")

    monkeypatch.setattr(pipeline, "convert_model", fake)
    assert main(["convert", str(tiny_model), "--out", str(tmp_path), "--onnx", *argv]) == errors.EXIT_INPUT
    assert seen["options"].onnx and seen["options"].onnx_opset == opset


@pytest.mark.slow  # a conversion of its own, through the whole pipeline
@pytest.mark.long
def test_convert_onnx_through_the_pipeline(tiny_model, calib_dir, tmp_path, capsys):
    """``convert --onnx`` end to end: the TFLite files, then both ONNX files gated on the same images, checked for
    every TensorRT version, with the card in their metadata and a section of the report for each."""
    out = tmp_path / "conv"
    assert main(["convert", str(tiny_model), "--out", str(out), "--name", "tiny", "--calib", str(calib_dir),
                 "--min-calib", "10", "--heldout-images", "4", "--max-drop", "100", "--onnx", "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "wrote tiny.onnx and tiny_int8_qdq.onnx (opset 17)" in said
    assert {p.name for p in out.iterdir()} == {"tiny_int8.tflite", "tiny_float32.tflite", "tiny.card.json", "tiny.onnx",
                                              "tiny_int8_qdq.onnx", "tiny.report.json", "tiny.report.md"}
    report = json.loads((out / "tiny.report.json").read_text())
    part = report["onnx"]
    assert set(part["fidelity"]) == {"float32", "float16", "int8_qdq"}
    for name, gate in part["fidelity"].items():
        assert gate["passed"] and gate["heldout"] == report["fidelity"]["heldout"], name
    # equal to numerical noise (an untrained model's outputs are near 0, so its cosines say little)
    assert max(o["max_abs"] for o in part["fidelity"]["float32"]["outputs"].values()) < 1e-5
    for file in ("tiny.onnx", "tiny_int8_qdq.onnx"):
        verdicts = part["tensorrt"][file]
        assert all(verdicts[v]["ok"] for v in ("8.5", "8.6", "10.3")), file
        assert not verdicts["8.2"]["ok"] and "opset 17" in verdicts["8.2"]["problems"][0], "8.2 wants opset 13"
    card = json.loads((out / "tiny.card.json").read_text())
    for file in ("tiny.onnx", "tiny_int8_qdq.onnx"):
        onnx_card = onnx_export.read_onnx_card(out / file)
        same = ("format", "tasks", "thing_classes", "semantic_classes", "strides", "decode", "source_sha256", "gate")
        assert {k: onnx_card[k] for k in same} == {k: card[k] for k in same}, file
        assert onnx_card["input"]["size"] == card["input"]["size"] and onnx_card["input"]["dtype"] == "float32"
    assert "## ONNX files (TensorRT, ONNX Runtime)" in (out / "tiny.report.md").read_text()

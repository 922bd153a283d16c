"""The device runtime: model validation, cards, backends, Edge TPU refusals, memory, decoding speed path."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ocrnet_edge.cli import main
from ocrnet_edge.runtime import errors
from ocrnet_edge.runtime.card import parse_card
from ocrnet_edge.runtime.contract import size_text
from ocrnet_edge.runtime.engine import Engine, EngineOptions
from ocrnet_edge.runtime.modelfile import inspect_model
from ocrnet_edge.runtime.run import MemoryBudgetError, check_budget
from ocrnet_edge.runtime.system.boards import load_board

from .conftest import PEERS, REPO, SMALL

CLIP = REPO / "samples" / "clip.mp4"


def test_random_bytes_truncated_and_empty_files_are_refused(converted, tmp_path):
    rnd = tmp_path / "random.tflite"
    rnd.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(errors.ModelError, match="not a TFLite model"):
        inspect_model(rnd)
    data = converted.int8.read_bytes()
    for cut in (16, 200, len(data) // 3, len(data) - 100):
        trunc = tmp_path / f"trunc{cut}.tflite"
        trunc.write_bytes(data[:cut])
        with pytest.raises(errors.ModelError, match="truncated or malformed|outside the file|out of range|refers to"):
            Engine.open(trunc)
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    with pytest.raises(errors.ModelError, match="not a TFLite model"):
        inspect_model(empty)
    with pytest.raises(errors.InputError, match="model file not found"):
        inspect_model(tmp_path / "missing.tflite")


def test_mutated_flatbuffers_never_crash_the_process(converted, tmp_path):
    data = bytearray(converted.int8.read_bytes())
    rng = np.random.default_rng(1)
    for i in range(40):
        mutated = bytearray(data)
        for pos in rng.integers(8, 2048, 8):
            mutated[pos] = rng.integers(0, 256)
        p = tmp_path / f"m{i}.tflite"
        p.write_bytes(bytes(mutated))
        try:
            with Engine.open(p) as engine:
                engine.process(np.zeros((32, 32, 3), np.uint8))
        except errors.OcrnetError:
            pass  # a clear refusal is fine; a crash would end the test process


def test_model_without_card_is_refused_unless_given(converted, tmp_path):
    bare = tmp_path / "bare.tflite"
    shutil.copy(converted.float32, bare)  # the float build carries no card
    with pytest.raises(errors.ModelError, match="no model card.*--card FILE"):
        Engine.open(bare)
    with Engine.open(bare, card=converted.card) as engine:
        res = engine.process(np.zeros((SMALL, SMALL, 3), np.uint8))
    assert res.semantic.shape == (SMALL // 4, SMALL // 4)


def test_card_beside_the_file_is_found(converted, tmp_path):
    shutil.copy(converted.float32, tmp_path / "tiny_float32.tflite")
    shutil.copy(converted.card, tmp_path / "tiny.card.json")
    with Engine.open(tmp_path / "tiny_float32.tflite") as engine:
        assert engine.card.name == "tiny"


def test_int8_and_float_builds_agree(converted):
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 255, (96, 160, 3), np.uint8)
    with Engine.open(converted.int8) as q, Engine.open(converted.float32, card=converted.card) as f:
        rq, tq = q.invoke_raw(frame)
        rf, _ = f.invoke_raw(frame)
        for name in rq:
            a, b = q.quants[name].dequantize(rq[name]), rf[name]
            if np.abs(b).max() < 1e-3:  # an untrained head can be all but zero (dead ReLUs)
                continue
            cos = float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))
            assert cos > 0.98, name
    assert tq.frame_w == 160


@pytest.mark.skipif(not (PEERS / "deeplabv3_mnv2_pascal_quant_edgetpu.tflite").exists(), reason="no ../shared/peers")
def test_edgetpu_build_without_tpu_names_the_cpu_build(tmp_path):
    src = PEERS / "deeplabv3_mnv2_pascal_quant_edgetpu.tflite"
    shutil.copy(src, tmp_path / src.name)
    shutil.copy(PEERS / "deeplabv3_mnv2_pascal_quant.tflite", tmp_path / "deeplabv3_mnv2_pascal_quant.tflite")
    card = tmp_path / "c.json"
    card.write_text(json.dumps(DEEPLAB_CARD))
    expected = r"compiled for the Edge TPU.*run the CPU build .*deeplabv3_mnv2_pascal_quant\.tflite"
    with pytest.raises(errors.ModelError, match=expected):
        Engine.open(tmp_path / src.name, card=card, options=EngineOptions(backend="cpu"))
    with pytest.raises(errors.ModelError, match="needs the TPU"):
        Engine.open(tmp_path / src.name, card=card)


@pytest.mark.skipif(not (PEERS / "invalid_model_invoking_error.tflite").exists(), reason="no ../shared/peers")
def test_coral_invalid_model_is_refused_when_loaded():
    """Coral's "invoking error" model holds a custom op no runtime here resolves: LiteRT refuses it at load,
    before any binding or invoke."""
    card = {"format": "ocrnet-edge-card/1", "input": {"size": 16}, "outputs": {"x": {"role": "seg_labels", "tensor": ""}}}
    with pytest.raises(errors.ModelError, match="the interpreter refused the model .*unresolved custom op: fake-op-double"):
        Engine.open(PEERS / "invalid_model_invoking_error.tflite", card=parse_card(card))


def test_a_failing_invoke_is_one_model_error(converted, monkeypatch):
    import numpy as np

    with Engine.open(converted.int8) as engine:
        def fail():
            raise RuntimeError("Node number 3 (CONV_2D) failed to invoke.\nmore detail")
        monkeypatch.setattr(engine.backend.interpreter, "invoke", fail)
        with pytest.raises(errors.ModelError, match=r"invoke failed \(Node number 3 \(CONV_2D\) failed to invoke\.\)$"):
            engine.process(np.zeros((48, 64, 3), np.uint8))


DEEPLAB_CARD = {
    "format": "ocrnet-edge-card/1", "name": "deeplabv3_mnv2_pascal",
    "input": {"size": 513, "resize": "stretch", "colour_order": "rgb"},
    "outputs": {"labels": {"role": "seg_labels", "tensor": "ArgMax"}},
    "semantic_classes": ["background"] + [f"c{i}" for i in range(1, 21)],
}


@pytest.mark.skipif(not (PEERS / "bird_segmentation.bmp").exists(), reason="no ../shared/peers")
@pytest.mark.parametrize("model, minimum", [("deeplabv3_mnv2_pascal_quant.tflite", 0.90),
                                            ("deeplabv3_mnv2_dm05_pascal_quant.tflite", 0.90)])
def test_coral_deeplab_agrees_with_reference_label_map(model, minimum, roomy_board, tmp_path):
    import cv2

    card = tmp_path / "deeplab.card.json"
    card.write_text(json.dumps(DEEPLAB_CARD))
    out = tmp_path / "sem"
    rc = main(["run", str(PEERS / model), "--card", str(card), "--source", str(PEERS / "bird_segmentation.bmp"),
               "--save-semantic", str(out), "--board", str(roomy_board), "--quiet"])
    assert rc == 0
    ours = cv2.imread(str(out / "bird_segmentation.png"), cv2.IMREAD_UNCHANGED)
    ref = cv2.imread(str(PEERS / "bird_segmentation_mask.bmp"), cv2.IMREAD_UNCHANGED)
    ref = ref if ref.ndim == 2 else ref[..., 0]
    photo = cv2.imread(str(PEERS / "bird_segmentation.bmp"))
    assert ours.shape == photo.shape[:2] and ours.dtype == np.uint8
    ref = cv2.resize(ref, (ours.shape[1], ours.shape[0]), interpolation=cv2.INTER_NEAREST)
    same = int((ours == ref).sum())
    agreement = same / (ours.size + ref.size - same)  # pycocotools' segment_test measure
    assert agreement > minimum, agreement


def test_memory_budget_refusal_names_figures_and_is_not_enforced_under_emulation(converted, tmp_path, monkeypatch):
    board_file = tmp_path / "tight.yaml"
    text = (load_board("host").__dict__ | {"memory_budget_mb": 1, "name": None})
    lines = []
    for k, v in text.items():
        if k == "name":
            continue
        if k in ("input_size", "sizes"):  # 320 or 384x288, as a profile writes them
            v = f"[{', '.join(size_text(x) for x in v)}]" if k == "sizes" else size_text(v)
        lines.append(f"{k}: {v if k in ('input_size', 'sizes') else list(v) if isinstance(v, tuple) else json.dumps(v)}")
    board_file.write_text("\n".join(lines) + "\n")
    board = load_board(board_file)
    assert board.sizes == load_board("host").sizes
    with Engine.open(converted.int8) as engine, pytest.raises(MemoryBudgetError, match=r"needs \d+ MB .* allows 1 MB"):
        check_budget(engine, board, 1.0)
    # Under user-mode emulation the RSS is the emulator's: recorded and marked, not enforced.
    monkeypatch.setenv("OCRNET_EMULATED", "1")
    with Engine.open(converted.int8) as engine:
        figures = check_budget(engine, board, 1.0)
    assert figures.emulated and figures.peak > figures.budget == 1.0
    assert figures.as_dict()["emulated"] is True


def test_every_backend_satisfies_the_backend_protocol(converted):
    from ocrnet_edge.runtime.backends import BACKENDS, Backend

    members = [n for n in vars(Backend) if not n.startswith("_")] + list(Backend.__annotations__)
    for name, cls in BACKENDS.items():
        declared = {k for c in cls.__mro__ for k in getattr(c, "__annotations__", {})}
        missing = [m for m in members if not hasattr(cls, m) and m not in declared]
        assert not missing, (name, missing)
        assert cls.name == name
    with Engine.open(converted.int8) as engine:
        assert isinstance(engine.backend, Backend)  # every member present on an opened backend
        assert not isinstance(object(), Backend)


class RecordingSink:
    """A user's own sink: what it was given, and whether the run closed it."""

    def __init__(self, stop_after: int | None = None):
        self.seen, self.closed, self.stop_after = [], 0, stop_after

    def write(self, frame, result) -> None:
        from ocrnet_edge.runtime.io.sinks import StopRun

        self.seen.append((frame.index, result.sequence, set(result.times_ms)))
        if self.stop_after is not None and len(self.seen) >= self.stop_after:
            raise StopRun

    def close(self) -> None:
        self.closed += 1


def test_run_writes_a_list_of_sinks_and_closes_each_once(converted, roomy_board, tmp_path):
    from ocrnet_edge.runtime.io.sinks import JsonLinesSink, Sink
    from ocrnet_edge.runtime.run import RunOptions, run

    # A file source: a live one (synthetic://) drops frames when the machine is loaded, and this test counts them.
    options = RunOptions(source=str(CLIP), board=load_board(roomy_board), max_frames=5,
                         engine=EngineOptions(threads=1), json_out=str(tmp_path / "r.jsonl"), status=False)
    mine = RecordingSink()
    assert isinstance(mine, Sink) and isinstance(JsonLinesSink(str(tmp_path / "x.jsonl")), Sink)
    summary = run(converted.int8, options, sinks=[mine])
    assert summary.frames == 5 and mine.closed == 1
    assert [s for _, s, _ in mine.seen] == [0, 1, 2, 3, 4]
    assert all({"capture", "preprocess", "invoke", "decode", "total", "latency"} <= keys for *_, keys in mine.seen)
    lines = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [x["frame"] for x in lines] == [0, 1, 2, 3, 4]
    assert [x["source_frame"] for x in lines] == [i for i, _, _ in mine.seen]
    # A sink may end the run (a window's q): the frames before it are kept, every sink is closed.
    stopper = RecordingSink(stop_after=2)
    summary = run(converted.int8, options, sinks=[stopper])
    assert summary.frames == 2 - 1 and stopper.closed == 1  # the frame that stopped the run is not counted

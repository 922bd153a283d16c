"""The command line: one clear line and a documented exit code for bad input; extras named."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ocrnet_edge.cli import main
from ocrnet_edge.runtime import errors

from .conftest import SMALL


def test_generate_then_eval_untrained_model(tmp_path, capsys):
    data = tmp_path / "d"
    assert main(["generate", "--out", str(data), "--count", "3", "--seed", "4", "--size", str(SMALL), "--quiet"]) == 0
    from ocrnet_edge.model.config import ModelConfig
    from ocrnet_edge.model.network import build_ocrnet

    model = tmp_path / "m.keras"
    build_ocrnet(ModelConfig(input_size=SMALL)).save(model)
    out = tmp_path / "metrics.json"
    assert main(["eval", str(model), "--data", str(data), "--json", str(out), "--quiet"]) == 0
    metrics = json.loads(out.read_text())
    for key in ("box_ap", "box_ap50", "mask_ap", "mask_ap50", "miou", "precision_at_recall50", "recall_at_precision50"):
        assert 0.0 <= metrics[key] <= 1.0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["miou"] == pytest.approx(metrics["miou"], abs=1e-4)


def test_eval_against_another_model_gives_paired_intervals(converted, tiny_model, small_dataset, tmp_path, capsys):
    """The int8 file against its float model on the same images: a difference per metric with its interval; a model
    against itself: every difference and interval 0 (the draws are paired); other classes: one line, exit 3."""
    out = tmp_path / "m.json"
    assert main(["eval", str(converted.int8), "--data", str(small_dataset), "--against", str(tiny_model), "--json",
                 str(out), "--quiet"]) == 0
    a = json.loads(out.read_text())["against"]
    assert a["model"] == str(tiny_model) and a["images"] == 12 and set(a["intervals"]) == set(a["difference_points"])
    assert {"box_ap", "box_ap50", "mask_ap", "miou"} <= set(a["intervals"])
    assert all(lo <= hi for lo, hi in a["intervals"].values())
    assert sum(ln.startswith(f"against {tiny_model}: ") for ln in capsys.readouterr().out.splitlines()) == len(
        a["intervals"])
    assert main(["eval", str(converted.int8), "--data", str(small_dataset), "--against", str(converted.int8), "--json",
                 str(out), "--quiet"]) == 0
    same = json.loads(out.read_text())["against"]
    assert set(same["difference_points"].values()) == {0.0}
    assert all(v == [0.0, 0.0] for v in same["intervals"].values())
    assert "these images cannot tell which is better" in capsys.readouterr().out

    from ocrnet_edge.model.config import ModelConfig
    from ocrnet_edge.model.io import save_model
    from ocrnet_edge.model.network import build_ocrnet

    cfg = ModelConfig(input_size=SMALL, class_names=("cat", "dog"))
    save_model(build_ocrnet(cfg), cfg, tmp_path / "pets.keras")
    assert main(["eval", str(converted.int8), "--data", str(small_dataset), "--against", str(tmp_path / "pets.keras"),
                 "--quiet"]) == errors.EXIT_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pets.keras: its classes (cat, dog) are not" in err[0], err


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["eval", "{tmp}/none.keras", "--data", "{data}"], errors.EXIT_INPUT, "none.keras: model file not found"),
        (["eval", "{tmp}/junk.keras", "--data", "{data}"], errors.EXIT_MODEL, "junk.keras: not a Keras model"),
        (["eval", "{tmp}/junk.keras", "--data", "{tmp}/nodata"], errors.EXIT_INPUT, "nodata: dataset folder not found"),
        (["eval", "{tmp}/junk.keras", "--data", "{data}", "--against", "{tmp}/none.keras"], errors.EXIT_INPUT,
         "none.keras: model file not found"),
        (["train", "--data", "{tmp}", "--out", "{tmp}/run"], errors.EXIT_INPUT, "no dataset found"),
        (["generate", "--out", "{data}", "--count", "1"], errors.EXIT_OUTPUT, "already exists"),
    ],
)
def test_bad_input_gives_one_line(argv, code, message, tmp_path, small_dataset, capsys):
    (tmp_path / "junk.keras").write_bytes(b"\x00" * 64)
    argv = [a.format(tmp=tmp_path, data=small_dataset) for a in argv]
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_workstation_command_without_extra_names_it(tmp_path):
    # Simulate a device install: TensorFlow and Keras cannot be imported.
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
        "from ocrnet_edge.cli import main\n"
        f"sys.exit(main(['train', '--data', {str(tmp_path)!r}, '--out', {str(tmp_path / 'o')!r}]))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == errors.EXIT_ENVIRONMENT
    assert "pip install 'ocrnet-edge[convert]'" in p.stderr
    assert "Traceback" not in p.stderr


def test_debug_shows_traceback(tmp_path, capsys):
    assert main(["--debug", "eval", str(tmp_path / "x.keras"), "--data", str(tmp_path)]) == errors.EXIT_INPUT
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["run", "{model}", "--source", "synthetic://?frames=1", "--score", "2"], errors.EXIT_INPUT,
     "score threshold (--score) must lie in [0, 1]. Received: 2.0"),
    (["run", "{model}", "--source", "synthetic://?frames=1", "--iou", "0"], errors.EXIT_INPUT,
     "NMS IoU threshold (--iou) must lie in (0, 1]. Received: 0.0"),
    (["run", "{model}", "--source", "synthetic://?frames=1", "--max-det", "0"], errors.EXIT_INPUT,
     "max detections (--max-det) and pre_nms_top_k must be positive. Received: 0"),
    (["run", "{model}", "--source", "synthetic://?size=abc"], errors.EXIT_INPUT, "expected synthetic://?seed=N"),
    (["run", "{model}", "--source", "picam://x"], errors.EXIT_INPUT, "expected picam://N with N a camera number"),
    (["run", "{model}", "--source", "csi://x"], errors.EXIT_INPUT, "expected csi://N with N a camera number"),
    (["run", "{model}", "--source", "synthetic://?frames=1", "--summary", "{tmp}/no/such/dir/s.json"],
     errors.EXIT_OUTPUT, "cannot write here"),
    (["bench", "{model}", "--frames", "1", "--warmup", "0", "--json", "{tmp}/no/such/b.json"], errors.EXIT_OUTPUT,
     "cannot write here"),
    (["train", "--data", "{tmp}", "--out", "{tmp}/r", "--config", "{tmp}/missing.json"], errors.EXIT_INPUT,
     "missing.json: configuration file not found"),
    (["train", "--data", "{tmp}", "--out", "{tmp}/r", "--config", "{tmp}/bad.json"], errors.EXIT_INPUT,
     "bad.json: not a training configuration JSON"),
])
def test_every_user_error_is_one_line(argv, code, message, converted, roomy_board, tmp_path, capsys):
    (tmp_path / "bad.json").write_text("{nope")
    argv = [a.format(model=converted.int8, tmp=tmp_path) for a in argv]
    if argv[0] in ("run", "bench"):
        argv += ["--board", str(roomy_board)]
    assert main(argv) == code
    err = [x for x in capsys.readouterr().err.strip().splitlines() if not x.startswith("INFO:")]
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


@pytest.mark.parametrize("argv, message", [
    (["bench", "m.tflite", "--sizes", "320,3x0"], "each side of the input size must be a multiple of 32"),
    (["bench", "m.tflite", "--sizes", "320;416"], "width x height (416x320)"),
    (["train", "--data", "d", "--out", "o", "--size", "416x300"], "multiple of 32"),
    (["convert", "m.keras", "--out", "o", "--size", "big"], "width x height (416x320)"),
    (["bench", "m.tflite", "--threads", "two"], "expected comma-separated positive integers"),
])
def test_list_arguments_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == errors.EXIT_USAGE and message in capsys.readouterr().err


def test_one_override_keeps_the_cards_other_decode_settings(converted):
    from ocrnet_edge.runtime.engine import Engine, EngineOptions

    with Engine.open(converted.int8) as plain:
        card = plain.card.decode
    with Engine.open(converted.int8, options=EngineOptions(decode_overrides=(("score_threshold", 0.55),))) as e:
        assert e.decode_options.score_threshold == 0.55
        assert e.decode_options.iou_threshold == card["iou_threshold"]
        assert e.decode_options.max_detections == card["max_detections"]

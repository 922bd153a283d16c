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


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["eval", "{tmp}/none.keras", "--data", "{data}"], errors.EXIT_INPUT, "none.keras: model file not found"),
        (["eval", "{tmp}/junk.keras", "--data", "{data}"], errors.EXIT_MODEL, "junk.keras: not a Keras model"),
        (["eval", "{tmp}/junk.keras", "--data", "{tmp}/nodata"], errors.EXIT_INPUT, "nodata: dataset folder not found"),
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

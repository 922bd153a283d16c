"""The base package alone (no extras) installs into a fresh virtual environment and runs a converted model."""

from __future__ import annotations

import json
import subprocess
import sys
import venv

import pytest

from .conftest import REPO


@pytest.mark.slow
def test_base_install_runs_a_converted_model(converted, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", str(REPO)], capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stderr[-2000:]
    listed = subprocess.run([str(py), "-m", "pip", "list", "--format=json"], capture_output=True, text=True).stdout
    names = {p["name"].lower() for p in json.loads(listed)}
    assert "ai-edge-litert" in names and "opencv-python-headless" in names
    assert not names & {"tensorflow", "tensorflow-cpu", "keras", "tf-keras", "pycocotools"}, names
    # The checkout does not shadow what is installed: importing from the repository root finds the install.
    here = subprocess.run([str(py), "-c", "import ocrnet_edge.runtime.engine, ocrnet_edge; print(ocrnet_edge.__file__)"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert here.returncode == 0 and str(env_dir) in here.stdout, here.stderr
    exe = env_dir / "bin" / "ocrnet-edge"
    image = REPO / "calibration_data" / "photo_bird.jpg"
    p = subprocess.run([str(exe), "run", str(converted.int8), "--source", str(image), "--board", "host",
                        "--json-out", "-", "--quiet"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout.strip().splitlines()[-1])
    assert rec["frame"] == 0 and "semantic" in rec
    # A workstation command names the extra instead of failing with a traceback.
    w = subprocess.run([str(exe), "train", "--data", str(tmp_path), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120)
    assert w.returncode == 6 and "pip install 'ocrnet-edge[convert]'" in w.stderr and "Traceback" not in w.stderr
    # The measured references are package data: an installed `report` finds them (and compares like with like).
    bench = json.loads((REPO / "boards" / "reference" / "host.json").read_text())
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    r = subprocess.run([str(exe), "report", str(tmp_path / "bench.json"), "-o", str(tmp_path / "rep"), "--no-charts"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    md = next((tmp_path / "rep").glob("*.md")).read_text()
    assert "vs reference" in md or "reference does not record its CPU flags" in md
    assert sys.prefix != str(env_dir)


def test_every_python_folder_is_packaged():
    import tomllib

    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = cfg["package-dir"]
    packaged = set(cfg["packages"])
    for top, folder in mapping.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            name = ".".join([top, *rel.parts]) if rel.parts else top
            assert name in packaged, f"{init.parent} is not listed in pyproject's packages as {name}"

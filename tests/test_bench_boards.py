"""Boards (strict loader, detection), doctor, bench JSON and the report."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from ocrnet_edge.cli import main
from ocrnet_edge.runtime import errors
from ocrnet_edge.runtime.bench import BenchConfig, bench_subprocess, percentiles
from ocrnet_edge.runtime.system.boards import board_names, detect_board, load_board

from .conftest import TINY

REQUIRED_BOARDS = {"rpi4", "rpi5", "rpi-zero-2w", "coral-usb", "coral-devboard", "coral-devboard-mini", "jetson-nano",
                   "jetson-orin-nano", "host"}

BENCH_SCHEMA = {
    "type": "object",
    "required": ["schema", "date", "board", "machine", "emulated", "results"],
    "properties": {
        "schema": {"const": "ocrnet-edge-bench/1"},
        "machine": {"type": "object", "required": ["cpu", "cores", "board_detected", "emulated"]},
        "results": {"type": "array", "items": {
            "type": "object", "required": ["config", "ok"],
            "if": {"properties": {"ok": {"const": True}}},
            "then": {"required": ["stages_ms", "fps", "memory_mb", "model", "runtime"]},
            "else": {"required": ["reason"]},
        }},
    },
}


def test_every_board_loads():
    assert REQUIRED_BOARDS <= set(board_names())
    for name in board_names():
        b = load_board(name)
        assert b.memory_budget_mb <= b.ram_mb and b.threads >= 1 and b.input_size % 32 == 0
        assert b.basis
    assert load_board("coral-usb").prefers_edgetpu and not load_board("rpi5").prefers_edgetpu


@pytest.mark.parametrize("text, match", [
    ("colour: blue\n", r"bad\.yaml:1: unknown key 'colour'"),
    ("threads: four\n", r"bad\.yaml:1: threads must be a int"),
    ("description: x\n", r"bad\.yaml:1: missing fields"),
    ("backends: [gpu]\n", r"bad\.yaml:1: unknown backends \['gpu'\]"),
    ("- a\n- b\n", r"bad\.yaml:1: a board file must be a mapping"),
    ("threads: [1\n", r"bad\.yaml:\d+: not valid YAML"),
])
def test_malformed_board_files_name_file_and_line(text, match, tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(errors.InputError, match=match):
        load_board(f)


def test_wrong_type_on_a_later_line(tmp_path):
    src = (Path(__file__).resolve().parents[1] / "boards" / "rpi5.yaml").read_text()
    f = tmp_path / "rpi5.yaml"
    f.write_text(src.replace("threads: 4", "threads: 4.5"))
    line = next(i for i, ln in enumerate(f.read_text().splitlines(), 1) if ln.startswith("threads"))
    with pytest.raises(errors.InputError, match=rf"rpi5\.yaml:{line}: threads must be a int"):
        load_board(f)


def test_unknown_board_lists_known_ones():
    with pytest.raises(errors.InputError, match="unknown board 'rpi9'; known boards: .*rpi5"):
        load_board("rpi9")


@pytest.mark.parametrize("model, expected", [
    ("Raspberry Pi 5 Model B Rev 1.0", "rpi5"),
    ("Raspberry Pi 4 Model B Rev 1.4", "rpi4"),
    ("Raspberry Pi Zero 2 W Rev 1.0", "rpi-zero-2w"),
    ("Freescale i.MX8MQ Phanbell", "coral-devboard"),
    ("MediaTek MT8167S Coral Dev Board Mini", "coral-devboard-mini"),
    ("NVIDIA Jetson Orin Nano Developer Kit", "jetson-orin-nano"),
    ("NVIDIA Jetson Nano Developer Kit", "jetson-nano"),
])
def test_board_detection_from_device_tree(model, expected, tmp_path):
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    (tmp_path / "proc" / "device-tree" / "model").write_bytes(model.encode() + b"\x00")
    assert detect_board(str(tmp_path)) == expected
    assert detect_board(str(tmp_path / "empty")) == "host"


def test_doctor_reports_board_backends_and_cameras(tmp_path, capsys, monkeypatch):
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    (tmp_path / "proc" / "device-tree" / "model").write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    monkeypatch.setenv("OCRNET_SYSROOT", str(tmp_path))
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "board: rpi5" in out and "Raspberry Pi 5 Model B Rev 1.0" in out
    # What the host has decides the lines: a host with libedgetpu, a GStreamer OpenCV or picamera2 passes too.
    from ocrnet_edge.runtime.backends.edgetpu import EdgeTpuBackend
    from ocrnet_edge.runtime.io.sources import gstreamer_available, picamera2_available

    reason = EdgeTpuBackend.is_available()
    assert "cpu: available" in out
    assert (f"edgetpu: unavailable: {reason}" if reason else "edgetpu: available") in out
    assert f"GStreamer: {'yes' if gstreamer_available() else 'no'}" in out and "FFMPEG: yes" in out
    assert f"picamera2: {'yes' if picamera2_available() else 'no'}" in out


def test_percentiles_are_ordered():
    v = list(np.random.default_rng(0).exponential(5, 500))
    p = percentiles(v)
    assert p["median"] <= p["p90"] <= p["p99"]


def test_bench_json_validates_and_a_failing_configuration_is_recorded(converted, tmp_path, capsys):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"\x00" * 64)
    out = tmp_path / "b.json"
    rc = main(["bench", str(converted.int8), str(broken), "--board", "host", "--frames", "12", "--warmup", "2",
               "--threads", "1,2", "--json", str(out), "--quiet", "--source", "synthetic://?seed=1&size=160x120"])
    assert rc == 0
    doc = json.loads(out.read_text())
    jsonschema.validate(doc, BENCH_SCHEMA)
    ok = [r for r in doc["results"] if r["ok"]]
    bad = [r for r in doc["results"] if not r["ok"]]
    assert len(ok) == 2 and len(bad) == 2
    assert "not a TFLite model" in bad[0]["reason"]
    from ocrnet_edge.model.network import build_ocrnet

    keras_params = build_ocrnet(TINY).count_params()
    for r in ok:
        for stage in ("source", "preprocess", "invoke", "decode", "total"):
            s = r["stages_ms"][stage]
            assert s["median"] <= s["p90"] <= s["p99"]
        assert r["model"]["macs"] > 0 and r["memory_mb"]["peak"] > 0
        assert r["model"]["backbone"] == f"compact {TINY.width:g}"  # from the card: a user compares backbones
        # Trained parameters counted from the graph: Keras' count less the BatchNorm statistics folded away.
        assert 0.8 * keras_params <= r["model"]["parameters"] <= keras_params
    assert doc["emulated"] is False
    report = tmp_path / "rep"
    assert main(["report", str(out), "-o", str(report)]) == 0
    md = (report / "report.md").read_text()
    assert "## host" in md and "FAILED" in md and "## rpi5" in md and "No measurement yet" in md
    from PIL import Image

    for name in ("latency_by_stage.png", "latency_vs_threads.png", "memory_vs_budget.png"):
        img = np.asarray(Image.open(report / name).convert("L"))
        assert img.shape[0] > 200 and img.std() > 10, name  # a real chart, not a blank image


def test_report_refuses_foreign_json(tmp_path):
    f = tmp_path / "x.json"
    f.write_text('{"a": 1}')
    with pytest.raises(errors.InputError, match="not an ocrnet-edge benchmark result"):
        from ocrnet_edge.benchreport import load_results

        load_results([f])


def test_worker_failure_is_reported_not_raised(tmp_path):
    r = bench_subprocess(BenchConfig(model=str(tmp_path / "missing.tflite"), frames=2, warmup=0))
    assert r["ok"] is False and "model file not found" in r["reason"]


@pytest.mark.slow  # a conversion of its own
@pytest.mark.long
def test_bench_a_keras_model_sweeps_the_board_sizes(tiny_model, calib_dir, tmp_path):
    out = tmp_path / "b.json"
    rc = main(["bench", str(tiny_model), "--board", "host", "--sizes", "96,128x96", "--frames", "5", "--warmup", "1",
               "--threads", "1", "--calib", str(calib_dir), "--work", str(tmp_path / "w"), "--json", str(out),
               "--quiet", "--source", "synthetic://?seed=1&size=160x120"])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert sorted(str(r["input_size"]) for r in doc["results"] if r["ok"]) == ["96", "[128, 96]"]


def test_report_flags_results_far_from_the_reference():
    from ocrnet_edge.benchreport import markdown

    def doc(total: float, **machine) -> dict:
        m = {"cpu": "cpu", "cpu_flags": ["avx2"], "cores": 2, "governor": None, "board_detected": "host", **machine}
        return {"schema": "ocrnet-edge-bench/1", "date": "2026-11-26", "board": "host", "emulated": False,
                "_path": "x.json", "machine": m,
                "results": [{"ok": True, "config": {"model": "m_int8.tflite", "backend": "cpu", "threads": 2},
                             "stages_ms": {s: {"median": total / 5, "p90": total, "p99": total}
                                           for s in ("source", "preprocess", "invoke", "decode")}
                             | {"total": {"median": total, "p90": total, "p99": total}},
                             "fps": 1000 / total, "memory_mb": {"peak": 80, "budget": 1024},
                             "achieved_gmacs_per_s": 1.0}]}

    refs = {"host": doc(10.0)}
    assert "+10% vs reference" in markdown([doc(11.0)], refs) and "FLAG" not in markdown([doc(11.0)], refs)
    assert "+50% vs reference **FLAG**" in markdown([doc(15.0)], refs)
    assert "-40% vs reference **FLAG**" in markdown([doc(6.0)], refs)
    assert "governor unknown" in markdown([doc(6.0)], refs)
    # Like with like only: another CPU, other int8 flags, another OS image or governor is said, not compared.
    other = markdown([doc(30.0, cpu="other cpu")], refs)
    assert "reference from another CPU (cpu)" in other and "FLAG" not in other
    vnni = {"host": doc(10.0, cpu_flags=["avx2", "avx512_vnni"])}
    assert "reference CPU has other flags (avx2, avx512_vnni)" in markdown([doc(30.0)], vnni)
    old = {"host": doc(10.0)}
    del old["host"]["machine"]["cpu_flags"]
    assert "reference does not record its CPU flags" in markdown([doc(30.0)], old)
    gov = {"host": doc(10.0, governor="performance")}
    assert "reference on another governor (performance)" in markdown([doc(30.0, governor="ondemand")], gov)

"""Golden outputs: the shipped reference model, converted as ``convert`` converts it, on a fixed frame.

Any change to preprocessing, conversion or decoding that moves the reference model's results shows here.
The stored values are raw int8 outputs at fixed positions (within one quantization step: calibration and
XNNPACK are deterministic on one machine, and the arm64 check found them identical across CPUs) and the
decoded detections. Regenerate deliberately with ``python -m tests.test_golden`` (then say why in the commit).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import REPO

GOLDEN = Path(__file__).parent / "golden" / "reference_int8.json"
SAMPLES = 64
"""Raw values stored per output, at positions drawn once by a fixed seed."""
STEP = 1
"""Allowed difference of a raw int8 value, in quantization steps."""
SCALE_REL = 0.01
"""Allowed relative difference of an output's quantization scale."""
BOX_PX = 2.0
"""Allowed difference of a decoded box corner, in frame pixels."""


def golden_outputs(work: Path) -> dict:
    """Convert the reference model (no gate; the gate is not what is pinned) and run it on a fixed frame."""
    from ocrnet_edge.convert.pipeline import ConvertOptions, convert_model
    from ocrnet_edge.runtime.engine import Engine
    from ocrnet_edge.runtime.io.scenes import SceneOptions, draw_scene

    res = convert_model(REPO / "models" / "reference" / "model.keras", work,
                        ConvertOptions(calib=REPO / "calibration_data", gate=False, write_float=False, progress=False,
                                       name="reference"))
    frame = draw_scene(5, SceneOptions(width=640, height=480, min_objects=4)).image
    out: dict = {"outputs": {}, "detections": []}
    with Engine.open(res.int8) as engine:
        raw, _ = engine.invoke_raw(frame)
        for name, arr in sorted(raw.items()):
            flat = np.asarray(arr).ravel()
            idx = np.random.default_rng(0).choice(flat.size, SAMPLES, replace=False)
            q = engine.quants[name]
            out["outputs"][name] = {"index": idx.tolist(), "values": flat[idx].astype(int).tolist(),
                                    "shape": list(arr.shape), "scale": q.scale, "zero_point": q.zero_point}
        result = engine.process(frame)
        out["detections"] = [{"class": d.label, "score": round(d.score, 3), "class_score": round(d.class_probability, 3),
                              "box": [round(v, 1) for v in d.box]} for d in result.detections]
        out["semantic_share"] = np.bincount(result.semantic.ravel(), minlength=5).tolist()
    return out


@pytest.mark.long  # converts the reference model, about 80 s
def test_reference_model_golden_outputs(tmp_path):
    want = json.loads(GOLDEN.read_text())
    got = golden_outputs(tmp_path)
    for name, w in want["outputs"].items():
        g = got["outputs"][name]
        assert g["shape"] == w["shape"] and g["index"] == w["index"]
        # Compared dequantized: a converter on another CPU may place the range a hair differently.
        assert g["scale"] == pytest.approx(w["scale"], rel=SCALE_REL), name
        deq = [(np.array(v["values"]) - v["zero_point"]) * v["scale"] for v in (g, w)]
        steps = np.abs(deq[0] - deq[1]) / w["scale"]
        assert steps.max() <= STEP + SCALE_REL * 128, (name, float(steps.max()))
    assert [d["class"] for d in got["detections"]] == [d["class"] for d in want["detections"]]
    for g, w in zip(got["detections"], want["detections"]):
        assert np.abs(np.array(g["box"]) - np.array(w["box"])).max() <= BOX_PX
        assert abs(g["score"] - w["score"]) < 0.02 and abs(g["class_score"] - w["class_score"]) < 0.02


if __name__ == "__main__":  # regenerate the golden file
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        doc = golden_outputs(Path(d))
    GOLDEN.write_text(json.dumps(doc, indent=0) + "\n")
    print(f"wrote {GOLDEN}: {len(doc['detections'])} detections", file=sys.stderr)

"""The GPU check (``bash scripts/gpu/verify``): every GPU configuration that runs here against ONNX Runtime on the
CPU, on the reference model, with the figures written as JSON.

Configurations: the ``tensorrt`` backend at FP32, FP16 and INT8 (the INT8 engine from the QDQ file), and ONNX
Runtime's CUDA and TensorRT execution providers; each is compared with ONNX Runtime's CPU provider on the float
file (cosine and largest absolute error per output over generated scenes) and, where the convert extra is
installed, on the gate's task metrics (box AP, mask AP, mIoU; drops in points, against ``--max-drop``). Then
``bench`` for every backend and precision available. A configuration that cannot run here is recorded under
``skipped`` with its reason; the closing line says what ran.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SCHEMA = "ocrnet-edge-gpu-verify/1"
OUTPUTS = ("det_scores", "det_boxes", "det_coeffs", "seg_logits", "mask_protos")


def _import_runtime():
    try:
        import ocrnet_edge.runtime  # noqa: F401
    except ImportError:
        sys.exit("error: ocrnet_edge is not installed for this Python: pip install -e . (from the repository), "
                 "or pass --python with the venv that has it")


def ensure_models(folder: Path | None, out: Path) -> tuple[Path, Path]:
    """``reference.onnx`` and ``reference_int8_qdq.onnx``: from ``folder``, else converted into ``out/models``."""
    d = folder or out / "models"
    f, q = d / "reference.onnx", d / "reference_int8_qdq.onnx"
    if f.is_file() and q.is_file():
        return f, q
    if folder is not None:
        sys.exit(f"error: {folder} lacks reference.onnx or reference_int8_qdq.onnx (write them with `ocrnet-edge "
                 "convert models/reference/model.keras --out DIR --onnx` on the workstation)")
    print(f"converting the reference model into {d} (needs the convert and onnx extras) ...", file=sys.stderr)
    cmd = [sys.executable, "-m", "ocrnet_edge", "convert", str(REPO / "models/reference/model.keras"), "--out", str(d),
           "--name", "reference", "--onnx", "--quiet"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode or not (f.is_file() and q.is_file()):
        last = (p.stderr.strip().splitlines() or ["no output"])[-1]
        sys.exit(f"error: conversion failed ({last}); convert on the workstation and pass --models DIR")
    return f, q


def frames(n: int, size: int = 320) -> list[np.ndarray]:
    """Generated scenes at the model's size (the runtime's own generator: no TensorFlow needed)."""
    from ocrnet_edge.runtime.io.scenes import SceneOptions, draw_scene

    return [draw_scene((90210, i), SceneOptions(width=size, height=size)).image for i in range(n)]


def configurations(float_onnx: Path, qdq: Path) -> tuple[list[dict], list[dict]]:
    """``(to run, skipped)``: each a dict with ``label``, ``file``, ``backend``, ``device``, ``precision``."""
    from ocrnet_edge.runtime.backends import BACKENDS

    run, skipped = [], []
    ort_reason = BACKENDS["onnxruntime"].is_available()
    providers = []
    if ort_reason is None:
        import onnxruntime as ort

        providers = ort.get_available_providers()
    trt_reason = BACKENDS["tensorrt"].is_available()
    want = [
        ("onnxruntime cpu int8 (QDQ)", qdq, "onnxruntime", "cpu", "int8", "CPUExecutionProvider"),
        ("onnxruntime cuda fp32", float_onnx, "onnxruntime", "cuda", "fp32", "CUDAExecutionProvider"),
        ("onnxruntime tensorrt fp16", float_onnx, "onnxruntime", "tensorrt", "fp16", "TensorrtExecutionProvider"),
        ("onnxruntime tensorrt int8", qdq, "onnxruntime", "tensorrt", "int8", "TensorrtExecutionProvider"),
        ("tensorrt fp32", float_onnx, "tensorrt", None, "fp32", None),
        ("tensorrt fp16", float_onnx, "tensorrt", None, "fp16", None),
        ("tensorrt int8", qdq, "tensorrt", None, "int8", None),
    ]
    for label, f, backend, device, precision, provider in want:
        c = {"label": label, "file": str(f), "backend": backend, "device": device, "precision": precision}
        if backend == "onnxruntime" and (ort_reason or provider not in providers):
            skipped.append({**c, "reason": ort_reason or f"this ONNX Runtime has no {provider} ({', '.join(providers)})"})
        elif backend == "tensorrt" and trt_reason:
            skipped.append({**c, "reason": trt_reason})
        else:
            run.append(c)
    return run, skipped


def outputs_on(engine, images) -> list[dict[str, np.ndarray]]:
    """Raw outputs (float32, by role) per image."""
    return [{k: np.asarray(v, np.float32).copy() for k, v in engine.invoke_raw(im)[0].items()} for im in images]


def agreement(got: list[dict], ref: list[dict]) -> dict[str, dict[str, float]]:
    """Per output: cosine over all images and the largest absolute error."""
    out = {}
    for name in ref[0]:
        a = np.concatenate([g[name].ravel() for g in got]).astype(np.float64)
        b = np.concatenate([r[name].ravel() for r in ref]).astype(np.float64)
        cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
        out[name] = {"cosine": round(cos, 6), "max_abs": float(np.abs(a - b).max())}
    return out


def task_metrics(engine, n: int):
    """Box AP, mask AP, mIoU on ``n`` generated held-out scenes (the gate's kind), or the reason they are skipped."""
    try:
        import tempfile

        from ocrnet_edge.convert.fidelity import engine_outputs
        from ocrnet_edge.model.data import load_dataset, write_scenes
        from ocrnet_edge.model.evaluate import evaluate_outputs
    except ImportError as e:
        return None, f"task metrics need the convert extra ({e})"
    global _DATA
    if _DATA is None:
        d = Path(tempfile.mkdtemp(prefix="gpu-verify-"))
        _DATA = load_dataset(write_scenes(d / "heldout", n, seed=1_000_003, size=engine.input_size, progress=False),
                             split="all")
    m = evaluate_outputs(_DATA, engine_outputs(engine, _DATA), engine.quants, progress=False)
    return {k: (None if m.get(k) is None else round(float(m[k]), 4)) for k in ("box_ap", "mask_ap", "miou")}, None


_DATA = None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, help="folder with reference.onnx and reference_int8_qdq.onnx")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "gpu")
    ap.add_argument("--images", type=int, default=50, help="scenes for output agreement and task metrics")
    ap.add_argument("--frames", type=int, default=200, help="timed frames per bench configuration")
    ap.add_argument("--max-drop", type=float, default=1.0, help="largest task-metric drop allowed, in points")
    args = ap.parse_args()
    _import_runtime()
    from ocrnet_edge.runtime.bench import run_bench
    from ocrnet_edge.runtime.engine import Engine, EngineOptions
    from ocrnet_edge.runtime.system.boards import detect_board, load_board
    from ocrnet_edge.runtime.system.doctor import gpu_lines
    from ocrnet_edge.runtime.system.machine import machine_info

    args.out.mkdir(parents=True, exist_ok=True)
    float_onnx, qdq = ensure_models(args.models, args.out)
    doc = {"schema": SCHEMA, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "machine": machine_info(), "gpu": gpu_lines(), "models": {}, "configurations": [], "skipped": []}
    for f in (float_onnx, qdq):
        doc["models"][f.name] = {"bytes": f.stat().st_size}
    images = frames(args.images)
    ref_opts = EngineOptions(backend="onnxruntime", device="cpu", threads=2)
    with Engine.open(float_onnx, options=ref_opts) as ref_engine:
        ref = outputs_on(ref_engine, images)
        ref_metrics, why = task_metrics(ref_engine, args.images)
    doc["reference"] = {"label": "onnxruntime cpu fp32", "task_metrics": ref_metrics, "task_metrics_skipped": why}
    run, skipped = configurations(float_onnx, qdq)
    doc["skipped"] += skipped
    for c in run:
        print(f"{c['label']} ...", file=sys.stderr)
        t = time.monotonic()
        try:
            with Engine.open(c["file"], options=EngineOptions(backend=c["backend"], device=c["device"],
                                                              precision=c["precision"], threads=2)) as e:
                open_s = time.monotonic() - t
                got = outputs_on(e, images)
                entry = {**c, "ran": {"precision": e.backend.precision, "served_by": e.backend.served_by,
                                      "runtime": e.backend.runtime_version, "gpu_mb": e.backend.device_memory_mb()},
                         "open_or_build_s": round(open_s, 1), "agreement": agreement(got, ref)}
                if getattr(e.backend, "engine_path", None):
                    entry["engine"] = {"file": e.backend.engine_path.name,
                                       "bytes": e.backend.engine_path.stat().st_size}
                metrics, why = (task_metrics(e, args.images) if ref_metrics
                                else (None, doc["reference"]["task_metrics_skipped"]))
        except Exception as ex:  # recorded, the others go on
            doc["skipped"].append({**c, "reason": f"{type(ex).__name__}: {ex}"})
            continue
        if metrics:
            drops = {k: round((ref_metrics[k] - v) * 100, 2) for k, v in metrics.items()
                     if v is not None and ref_metrics.get(k) is not None}
            entry.update(task_metrics=metrics, drops_points=drops,
                         gate_ok=all(d <= args.max_drop for d in drops.values()))
        else:
            entry["task_metrics_skipped"] = why
        doc["configurations"].append(entry)
    board = load_board(detect_board())
    files = [str(float_onnx), str(qdq)]
    doc["bench"] = run_bench(files, board, threads=[2], frames=args.frames, warmup=20,
                             precisions=["fp32", "fp16", "int8"])
    path = args.out / "verify.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    for e in doc["configurations"]:
        worst = min(a["cosine"] for a in e["agreement"].values())
        gate = "" if "gate_ok" not in e else f", gate {'ok' if e['gate_ok'] else 'FAILED'} {e['drops_points']}"
        print(f"{e['label']:30s} ran {e['ran']['precision']} on {e['ran']['served_by']}: min cosine {worst:.5f}{gate}")
    for s in doc["skipped"]:
        print(f"{s['label']:30s} skipped: {s['reason']}")
    for r in doc["bench"]["results"]:
        c = r["config"]
        what = (f"invoke {r['stages_ms']['invoke']['median']:.2f} ms, {r['fps']} fps, peak RSS {r['memory_mb']['peak']} MB, "
                f"GPU {r['memory_mb']['gpu']} MB" if r["ok"] else f"FAILED: {r['reason']}")
        print(f"bench {Path(c['model']).name} {c['backend']} {r.get('ran', {}).get('precision', c['precision'])}: {what}")
    ran = [e["label"] for e in doc["configurations"]]
    print(f"ran: {', '.join(ran) or 'no GPU configuration'}; skipped {len(doc['skipped'])}; figures in {path}")
    return 0 if ran and all(e.get("gate_ok", True) for e in doc["configurations"]) else 1


if __name__ == "__main__":
    sys.exit(main())

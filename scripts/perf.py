"""The project's performance figures, measured in one run on this machine (``scripts/perf``).

Ratios are measured in the same run; absolute times depend on the machine and its load and are
reported as measured, never asserted. Writes a JSON document and the Markdown section that
``scripts/perf`` puts into the README between its markers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ocrnet_edge.runtime.bench import BenchConfig, bench_subprocess, in_subprocess, percentiles

MARK_BEGIN = "<!-- perf:begin -->"
MARK_END = "<!-- perf:end -->"


def decode_share(model: Path, detections: int = 100, repeats: int = 50, threads: int = 2) -> dict:
    """Decoding + NMS + mask assembly with ``detections`` kept detections, against invoke time."""
    from ocrnet_edge.runtime.decode import DecodeOptions
    from ocrnet_edge.runtime.engine import Engine, EngineOptions
    from ocrnet_edge.runtime.io.scenes import SceneOptions, draw_scene

    # The worst case of the figure: every location a candidate, the best 300 through NMS with no
    # overlap limit, so that the cap of 100 detections (each with its mask) is always reached.
    opts = DecodeOptions(score_threshold=0.0, iou_threshold=1.0, max_detections=detections, pre_nms_top_k=300)
    frame = draw_scene(3, SceneOptions(width=640, height=480, min_objects=12, max_objects=16)).image
    with Engine.open(model, options=EngineOptions(threads=threads, decode=opts)) as engine:
        for _ in range(5):
            engine.process(frame)
        invoke, decode, counts = [], [], []
        for _ in range(repeats):
            res = engine.process(frame)
            invoke.append(res.times_ms["invoke"])
            decode.append(res.times_ms["decode"])
            counts.append(len(res.detections))
    inv, dec = float(np.median(invoke)), float(np.median(decode))
    return {"detections": int(np.median(counts)), "invoke_ms": round(inv, 3), "decode_ms": round(dec, 3),
            "share": round(dec / inv, 4)}


def run_figures(model: Path, clip: Path, threads: int = 2) -> dict:
    """End-to-end FPS from the file source against invoke-only FPS, peak RSS, and paced latency."""
    def run(extra: list[str], summary: Path) -> dict:
        cmd = [sys.executable, "-m", "ocrnet_edge", "run", str(model), "--source", str(clip), "--board", "host",
               "--threads", str(threads), "--quiet", "--summary", str(summary), *extra]
        subprocess.run(cmd, check=True, capture_output=True, timeout=900)
        return json.loads(summary.read_text())

    tmp = Path(".perf-tmp")
    tmp.mkdir(exist_ok=True)
    free = run([], tmp / "free.json")
    paced_lines = tmp / "paced.jsonl"
    paced = run(["--realtime", "--json-out", str(paced_lines)], tmp / "paced.json")
    lat = [rec["ms"]["latency"] for rec in map(json.loads, paced_lines.read_text().splitlines())]
    invoke_fps = 1000.0 / free["median_ms"]["invoke"]
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    return {
        "file_fps": free["fps"], "invoke_only_fps": round(invoke_fps, 2),
        "e2e_over_invoke": round(free["fps"] / invoke_fps, 4),
        "run_peak_rss_mb": free["memory_mb"]["peak"], "run_memory_mb": free["memory_mb"],
        "paced_capture_to_result_ms": percentiles(lat), "paced_fps": paced["fps"], "frames": free["frames"],
    }


def soak_figures(model: Path, frames: int, threads: int = 2) -> dict:
    """RSS, threads and open files over a long run (in a fresh process)."""
    t0 = time.time()
    marks = {int(k): v for k, v in in_subprocess("soak", model=str(model), frames=frames, threads=threads).items()}
    first, last = marks[1000], marks[frames]
    return {"frames": frames, "rss_mb_at": {k: round(v[0], 1) for k, v in marks.items()},
            "rss_growth_mb": round(last[0] - first[0], 2), "threads_growth": last[1] - first[1],
            "open_files_growth": last[2] - first[2], "seconds": round(time.time() - t0, 1)}


def group_peak(models: list[Path], clip: Path, frames: int = 100, threads: int = 2) -> dict:
    """Peak RSS and per-frame time of one process that runs every model in ``models`` on each frame."""
    return in_subprocess("group_peak", timeout_s=1800, models=[str(m) for m in models], clip=str(clip),
                         frames=frames, threads=threads)


def peak_rate(path: Path, macs: int, threads: int = 2, repeats: int = 30) -> dict:
    """MAC rate of a large int8 convolution in this runtime: the machine's reachable peak."""
    from ocrnet_edge.runtime.backends.cpu import CpuBackend

    b = CpuBackend(path, threads)
    view = b.input_view()
    view[...] = np.random.default_rng(0).integers(-128, 127, view.shape, dtype=view.dtype)
    del view
    ts = []
    for i in range(repeats + 3):
        t = time.perf_counter()
        b.interpreter.invoke()
        if i >= 3:
            ts.append(time.perf_counter() - t)
    b.close()
    med = float(np.median(ts))
    return {"macs": macs, "invoke_ms": round(med * 1e3, 3), "gmacs_per_s": round(macs / med / 1e9, 2)}


def markdown(doc: dict) -> str:
    """The README's performance section."""
    b = {(Path(r["config"]["model"]).name, r["config"]["threads"]): r for r in doc["bench"]["results"] if r["ok"]}
    m = doc["machine"]
    lines = [MARK_BEGIN, "", f"Measured by `bash scripts/perf` on {doc['date']}: {m['cpu']}, {m['cores']} cores, "
             f"{doc['runtime']}, reference model at {doc['input_size']}. Medians; machines here are shared, so "
             "compare ratios measured in the same run rather than absolute times.", "",
             "| model | threads | invoke ms (median / p90) | whole path ms | fps | peak RSS MB |",
             "| --- | --- | --- | --- | --- | --- |"]
    for (name, t), r in sorted(b.items()):
        s = r["stages_ms"]
        lines.append(f"| {name} | {t} | {s['invoke']['median']:.2f} / {s['invoke']['p90']:.2f} | "
                     f"{s['total']['median']:.2f} | {r['fps']} | {r['memory_mb']['peak']} |")
    ratio = doc.get("int8_over_float32_invoke")
    d, rf, sk = doc["decode"], doc["run"], doc.get("soak")
    lines += ["",
              f"- int8 invoke time / float32 invoke time: **{ratio}** (same run, {doc['threads']} threads).",
              f"- decoding + NMS + mask assembly with {d['detections']} detections (every location a candidate, "
              f"best 300 through NMS): "
              f"{d['decode_ms']} ms, "
              f"**{d['share'] * 100:.1f}%** of invoke ({d['invoke_ms']} ms).",
              f"- `ocrnet-edge run` on the bundled clip: {rf['file_fps']} fps end to end against "
              f"{rf['invoke_only_fps']} fps invoke-only (**{rf['e2e_over_invoke'] * 100:.0f}%**); peak RSS of the "
              f"whole process **{rf['run_peak_rss_mb']} MB**.",
              f"- paced (`--realtime`) capture-to-result latency: median "
              f"{rf['paced_capture_to_result_ms']['median']} ms, p99 {rf['paced_capture_to_result_ms']['p99']} ms."]
    if sk:
        lines.append(f"- soak: {sk['frames']} frames, RSS growth after the first 1000 frames "
                     f"**{sk['rss_growth_mb']} MB**, threads {sk['threads_growth']:+d}, open files "
                     f"{sk['open_files_growth']:+d}.")
    sep = doc.get("separate")
    if sep:
        lines.append(f"- fused model against three single-task models (detection, semantic, instance; same "
                     f"architecture code, each its own backbone), per frame: time "
                     f"{sep['fused']['ms']:.2f} ms against {sep['separate']['ms']:.2f} ms "
                     f"(**{sep['latency_ratio']:.2f}**), peak RSS {sep['fused']['peak_rss_mb']:.0f} MB against "
                     f"{sep['separate']['peak_rss_mb']:.0f} MB in one process (**{sep['memory_ratio']:.2f}**: the "
                     f"runtime's own ~{sep['fused']['before_models_mb']:.0f} MB is shared) and "
                     f"{sep['separate_processes_peak_rss_mb']:.0f} MB as three processes "
                     f"(**{sep['memory_ratio_separate_processes']:.2f}**); memory of the models alone, beyond the "
                     f"runtime's: **{sep['model_memory_ratio']:.2f}**.")
    eff = doc.get("efficiency")
    if eff:
        lines.append(f"- efficiency: the model reaches {eff['model_gmacs_per_s']} GMAC/s during invoke against "
                     f"{eff['peak']['gmacs_per_s']} GMAC/s for a large int8 convolution in the same runtime "
                     f"(**{eff['fraction'] * 100:.0f}%**).")
    conv = doc.get("conversion")
    if conv:
        lines.append(f"- conversion of the reference model at {doc['input_size']} with {conv['calibration_images']} "
                     f"calibration images: {conv['conversion_seconds']} s for the int8 conversion, "
                     f"{conv['seconds_total']} s for the whole command with the fidelity gate, peak RSS "
                     f"{conv['peak_rss_mb']} MB; int8 file {conv['int8_kib']} KiB vs float32 {conv['float32_kib']} KiB.")
    lines += ["", MARK_END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from ocrnet_edge.runtime.system.machine import machine_info

    ap = argparse.ArgumentParser(prog="python scripts/perf.py", description=__doc__.splitlines()[0])
    ap.add_argument("--int8", type=Path, required=True)
    ap.add_argument("--float32", type=Path, required=True)
    ap.add_argument("--card", type=Path, help="card for the float32 file")
    ap.add_argument("--clip", type=Path, default=Path("samples/clip.mp4"))
    ap.add_argument("--convert-report", type=Path, help="the conversion's report.json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--soak", type=int, default=10000, help="soak frames (0: skip)")
    ap.add_argument("--separate", type=Path, nargs=3, metavar=("DETECT", "SEMANTIC", "INSTANCE"),
                    help="single-task int8 models for the fused-against-separate comparison")
    ap.add_argument("--peak-conv", type=Path, help="the large int8 convolution model (for efficiency)")
    ap.add_argument("--peak-macs", type=int, help="its MACs per invoke")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--readme", type=Path, help="replace the section between the perf markers here")
    a = ap.parse_args(argv)

    results = [bench_subprocess(BenchConfig(str(m), "cpu", t, a.frames, 20, card=str(a.card) if a.card and m == a.float32
                                            else None, budget_mb=1024))
               for m in (a.int8, a.float32) for t in sorted({1, a.threads})]
    ok = {(r["config"]["model"], r["config"]["threads"]): r for r in results if r["ok"]}
    i8, f32 = ok.get((str(a.int8), a.threads)), ok.get((str(a.float32), a.threads))
    doc = {
        "date": time.strftime("%Y-%m-%d"), "machine": machine_info("host"), "threads": a.threads,
        "runtime": i8["runtime"] if i8 else None, "input_size": i8["input_size"] if i8 else None,
        "bench": {"results": results},
        "int8_over_float32_invoke": round(i8["stages_ms"]["invoke"]["median"] / f32["stages_ms"]["invoke"]["median"], 3)
        if i8 and f32 else None,
        "decode": decode_share(a.int8, threads=a.threads),
        "run": run_figures(a.int8, a.clip, a.threads),
        "soak": soak_figures(a.int8, a.soak, a.threads) if a.soak else None,
    }
    if a.separate:
        fused = group_peak([a.int8], a.clip, threads=a.threads)
        separate = group_peak(list(a.separate), a.clip, threads=a.threads)
        base = fused["before_models_mb"]
        alone = [group_peak([m], a.clip, threads=a.threads) for m in a.separate]
        doc["separate"] = {
            "fused": fused, "separate": separate, "latency_ratio": round(fused["ms"] / separate["ms"], 3),
            "separate_processes_peak_rss_mb": round(sum(x["peak_rss_mb"] for x in alone), 1),
            "memory_ratio_separate_processes": round(fused["peak_rss_mb"] / sum(x["peak_rss_mb"] for x in alone), 3),
            "memory_ratio": round(fused["peak_rss_mb"] / separate["peak_rss_mb"], 3),
            "model_memory_ratio": round((fused["peak_rss_mb"] - base) / (separate["peak_rss_mb"] - base), 3),
        }
    if a.peak_conv and i8:
        peak = peak_rate(a.peak_conv, a.peak_macs, a.threads)
        model_rate = i8["model"]["macs"] / (i8["stages_ms"]["invoke"]["median"] / 1e3) / 1e9
        doc["efficiency"] = {"peak": peak, "model_gmacs_per_s": round(model_rate, 2),
                             "fraction": round(model_rate / peak["gmacs_per_s"], 4)}
    if a.convert_report and a.convert_report.exists():
        r = json.loads(a.convert_report.read_text())
        doc["conversion"] = {"calibration_images": r["calibration"]["images"], "conversion_seconds": r["conversion_seconds"],
                             "seconds_total": r["seconds_total"], "peak_rss_mb": r["peak_rss_mb"],
                             "int8_kib": round(r["files"]["int8_bytes"] / 1024), "float32_kib":
                             round(r["files"]["float32_bytes"] / 1024) if r["files"]["float32_bytes"] else None}
    a.json.write_text(json.dumps(doc, indent=2) + "\n")
    section = markdown(doc)
    print(section)
    if a.readme:
        text = a.readme.read_text()
        if MARK_BEGIN in text and MARK_END in text:
            head, rest = text.split(MARK_BEGIN, 1)
            tail = rest.split(MARK_END, 1)[1]
            a.readme.write_text(head + section + tail)
        else:
            a.readme.write_text(text.rstrip() + "\n\n## Performance\n\n" + section + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

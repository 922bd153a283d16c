"""The conversion report: ``<name>.report.json`` (everything) and ``<name>.report.md`` (to read)."""

from __future__ import annotations

import json
from pathlib import Path

from ocrnet_edge.runtime.contract import size_text


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def render_markdown(r: dict) -> str:
    """A readable report of a conversion."""
    lines = []
    if not r.get("gated", True):
        lines += ["**NOT GATED: converted with --no-gate; the int8 model's accuracy against the float model was not "
                  "checked.**", ""]
    size = size_text(r["input_size"])
    lines += [f"# Conversion report: {r['name']}", "", f"- model: `{r['model']}`", f"- input size: {size}",
             f"- calibration: {r['calibration']['images']} images ({r['calibration']['source']}); "
             f"{len(r['calibration']['skipped'])} skipped",
             f"- conversion: {r.get('conversion_seconds')} s; whole command {r.get('seconds_total')} s; "
             f"peak RSS {r.get('peak_rss_mb')} MB"]
    files = r.get("files", {})
    if files:
        f32 = files.get("float32_bytes")
        ratio = f" ({files['int8_bytes'] / f32:.2f} of float32's {f32 / 1024:.0f} KiB)" if f32 else ""
        lines.append(f"- int8 file: {files['int8_bytes'] / 1024:.0f} KiB{ratio}")
    for p, why in r["calibration"]["skipped"]:
        lines.append(f"  - skipped `{p}`: {why}")
    g = r.get("graph", {})
    if g:
        lines += ["", "## Graph", "", f"{g['ops']} ops, {g['convolutions']} convolutions (matches the Keras model: "
                  "one fused graph over one backbone).", "",
                  "| op | count |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in sorted(g["op_counts"].items())]
        if g.get("xnnpack_refusals"):
            lines += ["", f"**{len(g['xnnpack_refusals'])} convolution(s) have requantization scales XNNPACK refuses** "
                      "(degenerate activations on the calibration images: an untrained or barely trained model, or "
                      "calibration images unlike its data); the CPU runtime runs this file on LiteRT's slower "
                      "reference kernels:", ""] + [f"- {x}" for x in g["xnnpack_refusals"][:10]]
    fid = r.get("fidelity")
    if fid:
        lines += ["", "## Fidelity", "", f"Held-out: {fid['heldout']}.", "",
                  "| metric | float | int8 | drop (points) |", "| --- | --- | --- | --- |"]
        for k in ("box_ap", "box_ap50", "mask_ap", "mask_ap50", "miou", "precision_at_recall50", "recall_at_precision50"):
            if k in fid.get("skipped", {}):
                lines.append(f"| {k} | not scored: {fid['skipped'][k]} | | |")
                continue
            drop = fid["drops_points"].get(k)
            lines.append(f"| {k} | {_pct(fid['float'].get(k))} | {_pct(fid['int8'].get(k))} | "
                         f"{'' if drop is None else f'{drop:.2f}'} |")
        verdict = "PASSED" if fid["passed"] else f"FAILED on {', '.join(fid['failed'])}"
        lines += ["", f"Gate (largest allowed drop {fid['max_drop_points']} points): **{verdict}**.", "",
                  "| output | cosine | max abs error | mean abs error | quantization step |",
                  "| --- | --- | --- | --- | --- |"]
        for k, v in fid["outputs"].items():
            lines.append(f"| {k} | {v['cosine']:.5f} | {v['max_abs']:.4f} | {v['mean_abs']:.5f} | {v['scale']:.5f} |")
        if not fid["passed"]:
            lines += [""] + _interval_lines(fid)
            lines += ["Layers with the largest quantization error (RMSE, TensorFlow's quantization debugger):", ""]
            lines += [f"- `{w['tensor']}`: RMSE {w['rmse']:.4f}, max abs {w['max_abs_error']:.4f}"
                      for w in fid["worst_layers"]]
            lines += ["", "What to try:", ""] + [f"- {s}" for s in fid["suggestions"]]
    if r.get("onnx"):
        lines += render_onnx(r["onnx"])
    tpu = r.get("edgetpu_check")
    if tpu:
        lines += ["", "## Edge TPU readiness", "",
                  f"{tpu['mapped_ops']} of {tpu['total_ops']} ops map ({100 * tpu['mapped_share']:.1f}%); "
                  f"parameters {tpu['parameter_bytes'] / 1024:.0f} KiB of ~{tpu['onchip_bytes'] // 2**20} MiB on chip."]
        if tpu["first_unmapped"]:
            lines.append(f"The compiler would cut the graph at {tpu['first_unmapped']}.")
        lines += [f"- {p}" for p in tpu["problems"]] + [f"- {n}" for n in tpu["notes"]]
    comp = r.get("edgetpu_compile")
    if comp:
        lines += ["", "## Edge TPU compiler", ""]
        if "skipped" in comp:
            lines.append(f"Not compiled: {comp['skipped']}")
        else:
            lines.append(f"Compiler {comp['version']}: {comp['tpu_ops']} ops on the TPU, {comp['cpu_ops']} on the CPU, "
                         f"on-chip {comp['onchip_bytes']} B, off-chip {comp['offchip_bytes']} B.")
    return "\n".join(lines) + "\n"


def _metric_rows(fid: dict, ref_key: str, got_key: str) -> list[str]:
    rows = []
    for k in ("box_ap", "box_ap50", "mask_ap", "mask_ap50", "miou", "precision_at_recall50", "recall_at_precision50"):
        if k in fid.get("skipped", {}):
            rows.append(f"| {k} | not scored: {fid['skipped'][k]} | | |")
            continue
        drop = fid["drops_points"].get(k)
        rows.append(f"| {k} | {_pct(fid[ref_key].get(k))} | {_pct(fid[got_key].get(k))} | "
                    f"{'' if drop is None else f'{drop:.2f}'} |")
    return rows


def _interval_lines(fid: dict) -> list[str]:
    """Each failed drop's interval over resampled gate images, a paragraph each."""
    iv = fid.get("interval", {})
    images = f"the {iv['images']} gate images" if iv.get("images") else "the gate images"
    lines = []
    for k, (lo, hi) in fid.get("drop_intervals", {}).items():
        lines += [f"{k}'s drop over {iv.get('draws')} resamples of {images} (drawn with replacement, the same draw "
                  f"for both files): {lo:.2f} to {hi:.2f} points in {100 * iv.get('level', 0):.0f}% of them.", ""]
    return lines


def render_onnx(o: dict) -> list[str]:
    """The report's ONNX part: files, one gate section per file, QDQ placement, TensorRT readiness."""
    files = o.get("files", {})
    lines = ["", "## ONNX files (TensorRT, ONNX Runtime)", "",
             f"Opset {o['opset']}; export {o.get('export_seconds')} s, QDQ calibration {o.get('quantize_seconds')} s, "
             f"gate {o.get('gate_seconds', '—')} s. Resize nodes rewritten from tf_half_pixel_for_nn to asymmetric: "
             f"{', '.join(o.get('resize_rewritten') or []) or 'none'}.", ""]
    lines += [f"- `{f['path']}`: {f['bytes'] / 1024:.0f} KiB" for f in files.values()]
    q = o.get("qdq", {})
    if q:
        kept = q.get("float_nodes") or []
        lines += ["", f"QDQ: symmetric int8 (zero point 0), per-channel weights, float biases, {q['placement']}; "
                  f"{q['calibration_method']} calibration on the TFLite file's calibration images; "
                  f"{q['quantized_nodes']} nodes quantized, {q['quantize_linear']} QuantizeLinear / "
                  f"{q['dequantize_linear']} DequantizeLinear. Left unquantized (FP16 on TensorRT): "
                  + (", ".join(f"`{n}`" for n in kept) or "none") + "."]
    for key, fid in (o.get("fidelity") or {}).items():
        verdict = "PASSED" if fid["passed"] else "FAILED on " + ", ".join(list(fid["failed"]) + (
            ["numerical noise"] if fid.get("noise_failures") else []))
        lines += ["", f"### {fid['file']} ({key}) against the {fid['reference']}", "",
                  f"Held-out: {fid['heldout']}. " + (f"{fid['how']}." if fid.get("how") else ""), "",
                  f"| metric | {fid['reference']} | {key} | drop (points) |", "| --- | --- | --- | --- |"]
        lines += _metric_rows(fid, "reference_metrics", "metrics")
        lines += ["", f"Gate (largest allowed drop {fid['max_drop_points']} points"
                  + (", and every output equal to the Keras model's to numerical noise" if key == "float32" else "")
                  + f"): **{verdict}**.", "",
                  "| output (against the Keras model) | cosine | max abs error | mean abs error |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {k} | {v['cosine']:.6f} | {v['max_abs']:.2e} | {v['mean_abs']:.2e} |"
                  for k, v in fid["outputs"].items()]
        lines += [f"- beyond noise: {n}" for n in fid.get("noise_failures", [])]
        if fid.get("drop_intervals"):
            lines += [""] + _interval_lines(fid)[:-1]
    cmp = o.get("qdq_vs_tflite_int8")
    if cmp:
        lines += ["", "QDQ INT8 against the int8 TFLite file, drops in points from float: "
                  + "; ".join(f"{k} {v['qdq']:.2f} / {v['tflite_int8']:.2f}" for k, v in cmp.items()
                              if v["qdq"] is not None and v["tflite_int8"] is not None) + "."]
    if o.get("qdq_layers"):
        lines += ["", f"The QDQ file loses more than the int8 TFLite file on {', '.join(o['qdq_worse_than_tflite_on'])}; "
                  "its quantized tensors with the largest rounding error (ONNX Runtime's QDQ loss debugger; SQNR in dB, "
                  "lower is worse; accumulated: against the float graph, local: its own Q/DQ alone):", ""]
        lines += [f"- `{w['tensor']}`: local {w['local_sqnr_db']:.1f} dB, accumulated {w['sqnr_db']:.1f} dB"
                  for w in o["qdq_layers"]]
    trt = o.get("tensorrt")
    if trt:
        lines += ["", "### TensorRT readiness (static check of each parser's rules)", "",
                  "| file | " + " | ".join(f"TensorRT {v}" for v in next(iter(trt.values()))) + " |",
                  "| --- |" + " --- |" * len(next(iter(trt.values())))]
        for fname, per in trt.items():
            cells = ["ok" if r["ok"] else f"{len(r['problems'])} problem(s)" for r in per.values()]
            lines.append(f"| `{fname}` | " + " | ".join(cells) + " |")
        for fname, per in trt.items():
            for v, r in per.items():
                lines += [f"- `{fname}`, TensorRT {v}: {p}" for p in r["problems"]]
                lines += [f"- `{fname}`, TensorRT {v} (note): {n}" for n in r["notes"]]
    return lines


def write_reports(report: dict, out_dir: Path, name: str) -> tuple[Path, Path]:
    """Write both reports atomically; returns their paths."""
    paths = []
    for suffix, text in ((".report.json", json.dumps(report, indent=2, default=str) + "\n"),
                         (".report.md", render_markdown(report))):
        p = out_dir / f"{name}{suffix}"
        tmp = p.with_name(p.name + ".partial")
        tmp.write_text(text)
        tmp.replace(p)
        paths.append(p)
    return paths[0], paths[1]

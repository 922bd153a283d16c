"""The conversion report: ``<name>.report.json`` (everything) and ``<name>.report.md`` (to read)."""

from __future__ import annotations

import json
from pathlib import Path


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def render_markdown(r: dict) -> str:
    """A readable report of a conversion."""
    lines = []
    if not r.get("gated", True):
        lines += ["**NOT GATED: converted with --no-gate; the int8 model's accuracy against the float model was not "
                  "checked.**", ""]
    lines += [f"# Conversion report: {r['name']}", "", f"- model: `{r['model']}`", f"- input size: {r['input_size']}",
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
            lines += ["", "Layers with the largest quantization error (RMSE, TensorFlow's quantization debugger):", ""]
            lines += [f"- `{w['tensor']}`: RMSE {w['rmse']:.4f}, max abs {w['max_abs_error']:.4f}"
                      for w in fid["worst_layers"]]
            lines += ["", "What to try:", ""] + [f"- {s}" for s in fid["suggestions"]]
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

"""``ocrnet-edge report``: Markdown tables and PNG charts from saved benchmark results.

Results more than :data:`FLAG_RATIO` off their board's measured reference (``boards/reference/``) are
flagged, as pycoral flags benchmarks far from its reference latencies. Boards without a measured
reference keep an empty row: nothing is estimated.
"""

from __future__ import annotations

import json
from pathlib import Path

from ocrnet_edge.runtime.errors import EnvironmentMissing, InputError, OutputError
from ocrnet_edge.runtime.system.boards import BOARDS_DIR, board_names

FLAG_RATIO = 0.30
REFERENCE_DIR = BOARDS_DIR / "reference"


def load_results(paths: list[Path]) -> list[dict]:
    """Read benchmark JSON documents, refusing what is not one."""
    docs = []
    for p in paths:
        try:
            doc = json.loads(Path(p).read_text())
        except FileNotFoundError:
            raise InputError(f"{p}: results file not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{p}: not a benchmark JSON file ({e})") from None
        if not isinstance(doc, dict) or doc.get("schema") != "ocrnet-edge-bench/1":
            raise InputError(f"{p}: not an ocrnet-edge benchmark result (schema ocrnet-edge-bench/1)")
        doc["_path"] = str(p)
        docs.append(doc)
    return docs


def references(directory: Path = REFERENCE_DIR) -> dict[str, dict]:
    """Measured reference per board: ``{board: document}`` (only files that exist; nothing estimated)."""
    out = {}
    for p in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        doc = json.loads(p.read_text())
        if not doc.get("emulated"):  # emulated timings are never a board's reference
            out[doc["board"]] = doc
    return out


def comparable(machine: dict, ref_machine: dict) -> str | None:
    """None when a result may be compared with a reference (same CPU model and int8-relevant flags, and,
    where both say, the same OS image and governor); otherwise why not, in words."""
    if machine.get("cpu") != ref_machine.get("cpu"):
        return f"reference from another CPU ({ref_machine.get('cpu')})"
    if "cpu_flags" not in ref_machine:
        return "reference does not record its CPU flags"
    if sorted(machine.get("cpu_flags") or []) != sorted(ref_machine["cpu_flags"]):
        return f"reference CPU has other flags ({', '.join(ref_machine['cpu_flags']) or 'none'})"
    for key, what in (("os", "OS image"), ("governor", "governor")):
        if machine.get(key) and ref_machine.get(key) and machine[key] != ref_machine[key]:
            return f"reference on another {what} ({ref_machine[key]})"
    return None


def _key(r: dict) -> tuple:
    c = r["config"]
    return (Path(c["model"]).name, c["backend"], c["threads"])


def _flag(r: dict, ref: dict | None, machine: dict | None = None) -> str:
    if not ref or not r.get("ok"):
        return ""
    why = comparable(machine or {}, ref.get("machine", {}))
    if why:
        return why
    for rr in ref.get("results", []):
        if rr.get("ok") and _key(rr) == _key(r):
            base = rr["stages_ms"]["total"]["median"]
            now = r["stages_ms"]["total"]["median"]
            off = now / base - 1
            return f"{off:+.0%} vs reference" + (" **FLAG**" if abs(off) > FLAG_RATIO else "")
    return ""


def markdown(docs: list[dict], refs: dict[str, dict]) -> str:
    """Tables per board: one row per configuration, one column per stage (median / p90 ms)."""
    lines = ["# Benchmark report", ""]
    boards = sorted({d["board"] for d in docs} | set(board_names()))
    for board in boards:
        mine = [d for d in docs if d["board"] == board]
        lines += [f"## {board}", ""]
        if not mine:
            ref = refs.get(board)
            lines += ["No measurement" + (f" (reference from {ref['date']})" if ref else
                                          " yet: run `ocrnet-edge bench` on the board itself.") + "", ""]
            continue
        for d in mine:
            m = d["machine"]
            emu = " — EMULATED, not the board's figures" if d.get("emulated") else ""
            flags = ", ".join(m.get("cpu_flags") or []) or "flags not recorded"
            lines += [f"{d['date']}, {m['cpu']} x{m['cores']} ({flags}), governor {m.get('governor') or 'unknown'}, "
                      f"detected board {m.get('board_detected')}{emu} (`{d['_path']}`)", ""]
            lines += ["| model | backend | threads | source | preprocess | invoke | decode | total (median/p90/p99) "
                      "| fps | peak RSS / budget MB | GMAC/s | vs reference |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
            for r in d["results"]:
                c = r["config"]
                name = Path(c["model"]).name
                if not r.get("ok"):
                    lines.append(f"| {name} | {c['backend']} | {c['threads']} | FAILED: {r.get('reason', '')} "
                                 "| | | | | | | | |")
                    continue
                s = r["stages_ms"]
                tot = s["total"]
                lines.append(
                    f"| {name} | {c['backend']} | {c['threads']} | {s['source']['median']:.2f} | "
                    f"{s['preprocess']['median']:.2f} | {s['invoke']['median']:.2f} | {s['decode']['median']:.2f} | "
                    f"{tot['median']:.2f} / {tot['p90']:.2f} / {tot['p99']:.2f} | {r['fps']} | "
                    f"{r['memory_mb']['peak']} / {r['memory_mb']['budget']:.0f} | {r.get('achieved_gmacs_per_s')} | "
                    f"{_flag(r, refs.get(board), m)} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def charts(docs: list[dict], out: Path) -> list[Path]:
    """PNG charts: latency per board and stage; latency against threads; memory against budget."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise EnvironmentMissing("charts need matplotlib: pip install 'ocrnet-edge[plot]'") from None
    ok = [(d, r) for d in docs for r in d["results"] if r.get("ok")]
    paths = []
    if not ok:
        return paths

    fig, ax = plt.subplots(figsize=(8, 4))
    labels, bottoms = [], None
    rows = [(f"{d['board']}\n{Path(r['config']['model']).stem}\n{r['config']['threads']}t", r) for d, r in ok]
    labels = [lab for lab, _ in rows]
    import numpy as np

    bottoms = np.zeros(len(rows))
    for stage in ("source", "preprocess", "invoke", "decode"):
        vals = np.array([r["stages_ms"][stage]["median"] for _, r in rows])
        ax.bar(labels, vals, bottom=bottoms, label=stage)
        bottoms += vals
    ax.set_ylabel("median ms per frame")
    ax.set_title("Latency per board and stage")
    ax.legend()
    fig.tight_layout()
    paths.append(_save(fig, out / "latency_by_stage.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    series: dict[str, list[tuple[int, float]]] = {}
    for d, r in ok:
        series.setdefault(f"{d['board']} {Path(r['config']['model']).stem}", []).append(
            (r["config"]["threads"], r["stages_ms"]["invoke"]["median"]))
    for name, pts in series.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xlabel("threads")
    ax.set_ylabel("median invoke ms")
    ax.set_title("Latency against threads")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(_save(fig, out / "latency_vs_threads.png"))

    fig, ax = plt.subplots(figsize=(8, 4))
    peaks = [r["memory_mb"]["peak"] for _, r in rows]
    budgets = [r["memory_mb"]["budget"] for _, r in rows]
    ax.bar(labels, peaks, label="peak RSS")
    ax.scatter(labels, budgets, color="red", marker="_", s=400, label="budget")
    ax.set_ylabel("MB")
    ax.set_title("Memory against budget")
    ax.legend()
    fig.tight_layout()
    paths.append(_save(fig, out / "memory_vs_budget.png"))
    return paths


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    tmp = path.with_name(path.stem + ".partial.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_report(results: list[Path], out: Path, with_charts: bool = True) -> list[Path]:
    """Write ``report.md`` (and charts) into ``out``; returns the files written."""
    docs = load_results(results)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{out}: cannot create the report folder ({e.strerror})") from None
    md = out / "report.md"
    tmp = out / "report.md.partial"
    tmp.write_text(markdown(docs, references()))
    tmp.replace(md)
    return [md, *(charts(docs, out) if with_charts else [])]

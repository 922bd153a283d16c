"""The arm64 check behind ``scripts/arm64/verify`` (run on an x86-64 Debian host with qemu-user-static).

1. Builds a Raspberry Pi OS-like userland: Debian 12's ``python3.11:arm64`` and the libraries it needs,
   fetched with ``apt-get download`` and unpacked with ``dpkg -x``; nothing is compiled.
2. Installs the project's base package (the device side, built here as a pure-Python wheel) and its
   aarch64 wheels from PyPI (LiteRT, numpy, OpenCV headless, PyYAML) by unpacking them.
3. For each emulated CPU (a ``proc/cpuinfo`` describing it and a ``proc/device-tree/model`` naming the
   board are placed in the userland, which QEMU's ``-L`` serves to the guest), runs ``ocrnet-edge
   doctor`` (the board must be detected) and ``ocrnet-edge run`` on the bundled clip's frames, and
   compares the JSON results with the same run on x86: classes equal, scores and boxes within one
   quantization step, masks agreeing. The frames are decoded once, on the host, into PNG: FFmpeg's
   MPEG-4 decoding is not bit-exact across x86 and arm64 (frames differ by up to 3 levels, measured),
   and the model's answers then differ by more than quantization.
4. Checks that the base package's dependencies resolve to wheels for CPython 3.10, 3.11 and 3.12 on
   aarch64 without building anything.

Timings under emulation say nothing about a board; the runs set ``OCRNET_EMULATED=1`` so that any
benchmark taken there is marked emulated.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np

from ocrnet_edge.runtime.system.boards import load_board

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "arm64"
DEBS = [
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "python3.11", "libc6", "libgcc-s1",
    "libstdc++6", "zlib1g", "libexpat1", "libffi8", "libssl3", "libbz2-1.0", "liblzma5", "libsqlite3-0",
    "libncursesw6", "libtinfo6", "libreadline8", "libuuid1", "libcrypt1", "libdb5.3", "libgdbm6", "libnsl2",
    "libtirpc3", "libgssapi-krb5-2", "libkrb5-3", "libk5crypto3", "libkrb5support0", "libcom-err2", "libkeyutils1",
]
PLATFORMS = {
    "3.10": ["manylinux_2_17_aarch64", "manylinux2014_aarch64", "manylinux_2_27_aarch64", "manylinux_2_28_aarch64",
             "manylinux_2_31_aarch64", "manylinux_2_34_aarch64", "manylinux_2_35_aarch64"],  # Ubuntu 22.04 (JetPack 6)
    "3.11": ["manylinux_2_17_aarch64", "manylinux2014_aarch64", "manylinux_2_27_aarch64", "manylinux_2_28_aarch64",
             "manylinux_2_31_aarch64", "manylinux_2_34_aarch64", "manylinux_2_36_aarch64"],  # Debian 12 (RPi OS)
    "3.12": ["manylinux_2_17_aarch64", "manylinux2014_aarch64", "manylinux_2_27_aarch64", "manylinux_2_28_aarch64",
             "manylinux_2_31_aarch64", "manylinux_2_34_aarch64", "manylinux_2_36_aarch64"],
}
CPUS = {
    # name: (CPU part, Features, board device-tree model, board profile)
    "cortex-a76": ("0xd0b", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc "
                   "dcpop asimddp", "Raspberry Pi 5 Model B Rev 1.0", "rpi5"),
    "cortex-a72": ("0xd08", "fp asimd evtstrm crc32 cpuid", "Raspberry Pi 4 Model B Rev 1.4", "rpi4"),
    "cortex-a53": ("0xd03", "fp asimd evtstrm crc32 cpuid", "Raspberry Pi Zero 2 W Rev 1.0", "rpi-zero-2w"),
}


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, text=True, capture_output=True, **kw)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        sys.exit(f"arm64 verify: {' '.join(map(str, cmd[:4]))} ... exited {done.returncode}:\n{tail}")
    return done


def userland() -> Path:
    root = CACHE / "root"
    if (root / "usr" / "bin" / "python3.11").exists():
        return root
    debs = CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    sh(["apt-get", "download", *[f"{d}:arm64" for d in DEBS]], cwd=debs)
    tmp = CACHE / "root.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    for deb in sorted(debs.glob("*.deb")):
        sh(["dpkg", "-x", str(deb), str(tmp)])
    tmp.rename(root)
    return root


def wheels(python: str, dest: Path) -> list[Path]:
    """The project wheel and its aarch64 dependency wheels for ``python``; fails if any needs building."""
    dest.mkdir(parents=True, exist_ok=True)
    project = CACHE / "project"
    shutil.rmtree(project, ignore_errors=True)
    sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(project), str(REPO)])
    (whl,) = project.glob("ocrnet_edge-*.whl")
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", python,
           "--implementation", "cp", "-d", str(dest), str(whl)]
    for p in PLATFORMS[python]:
        cmd += ["--platform", p]
    sh(cmd)
    shutil.copy(whl, dest / whl.name)
    return sorted(dest.glob("*.whl"))


def site(wheel_files: list[Path]) -> Path:
    out = CACHE / "site"
    shutil.rmtree(out, ignore_errors=True)
    for w in wheel_files:
        with zipfile.ZipFile(w) as z:
            z.extractall(out)
    return out


def set_cpu(root: Path, cpu: str) -> str:
    part, features, model, board = CPUS[cpu]
    proc = root / "proc"
    (proc / "device-tree").mkdir(parents=True, exist_ok=True)
    blocks = [f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
              f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 1\n" for i in range(4)]
    (proc / "cpuinfo").write_text("\n".join(blocks) + "\n")
    (proc / "device-tree" / "model").write_bytes(model.encode() + b"\x00")
    return board


def guest(root: Path, site_dir: Path, cpu: str, args: list[str], workdir: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site_dir), "OCRNET_EMULATED": "1", "HOME": str(workdir),
           "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = ["qemu-aarch64-static", "-cpu", cpu, "-L", str(root), str(root / "usr/bin/python3.11"), "-m",
           "ocrnet_edge", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir, timeout=3600)


def quant_steps(model: Path) -> dict[str, float]:
    from ocrnet_edge.runtime.modelfile import inspect_model

    card = inspect_model(model).card()
    return {name: o.get("scale") or 0.0 for name, o in card["outputs"].items()}


def _decode_rle(rle: dict) -> np.ndarray:
    from pycocotools import mask as mask_utils

    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def compare(x86: list[dict], arm: list[dict], steps: dict[str, float], frame_scale: float) -> dict:
    """Agreement of two runs' JSON lines: detections matched by class, score and box within one step."""
    score_tol = steps.get("det_scores", 0.0) + 1e-3  # scores are printed rounded to 1e-4
    box_tol = (steps.get("det_boxes", 0.0) * 32) / frame_scale + 0.2  # one step at the coarsest stride, in frame px
    matched = total = 0
    mask_ious, max_score, max_box, sem_diff = [], 0.0, 0.0, 0.0
    unmatched = []
    for a, b in zip(x86, arm):
        used = set()
        for d in a["detections"]:
            total += 1
            best = None
            for j, e in enumerate(b["detections"]):
                if j in used or e["class_id"] != d["class_id"]:
                    continue
                ds = abs(e["score"] - d["score"])
                db = max(abs(u - v) for u, v in zip(e["box"], d["box"]))
                if ds <= score_tol and db <= box_tol and (best is None or ds + db < best[0]):
                    best = (ds + db, j, ds, db)
            if best is None:
                unmatched.append((a["frame"], d))
                continue
            used.add(best[1])
            matched += 1
            max_score, max_box = max(max_score, best[2]), max(max_box, best[3])
            e = b["detections"][best[1]]
            if "mask" in d and "mask" in e:
                m1, m2 = _decode_rle(d["mask"]), _decode_rle(e["mask"])
                union = (m1 | m2).sum()
                mask_ious.append(float((m1 & m2).sum() / union) if union else 1.0)
        for k in set(a.get("semantic", {})) | set(b.get("semantic", {})):
            sem_diff = max(sem_diff, abs(a.get("semantic", {}).get(k, 0) - b.get("semantic", {}).get(k, 0)))
    extra = sum(len(b["detections"]) for b in arm) - matched
    # A detection whose score sits within one step of the threshold may appear on one side only.
    return {
        "frames": min(len(x86), len(arm)), "detections_x86": total, "matched": matched,
        "unmatched_x86": len(unmatched), "unmatched_arm": extra,
        "max_score_diff": round(max_score, 5), "max_box_diff_px": round(max_box, 3),
        "score_tolerance": round(score_tol, 5), "box_tolerance_px": round(box_tol, 3),
        "min_mask_iou": round(min(mask_ious), 4) if mask_ious else None,
        "mean_mask_iou": round(float(np.mean(mask_ious)), 4) if mask_ious else None,
        "max_semantic_share_diff": round(sem_diff, 4),
        "identical": x86 == arm or (not unmatched and extra == 0 and max_score == 0 and max_box == 0),
        "ok": not unmatched and extra == 0 and (not mask_ious or min(mask_ious) >= 0.95) and sem_diff <= 0.01,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description="arm64 (Raspberry Pi OS-like) check under QEMU user-mode emulation")
    ap.add_argument("--model", type=Path, help="converted int8 model (default: convert the reference model)")
    ap.add_argument("--frames", type=int, default=6, help="frames of the bundled clip to run per CPU")
    ap.add_argument("--cpus", default=",".join(CPUS), help="emulated CPUs")
    ap.add_argument("--json", type=Path, default=REPO / "out" / "arm64" / "verify.json")
    a = ap.parse_args()
    t0 = time.time()
    work = REPO / "out" / "arm64"
    work.mkdir(parents=True, exist_ok=True)
    model = a.model
    if model is None:
        model = work / "reference_int8.tflite"
        src = REPO / "models" / "reference" / "model.keras"
        if not model.exists() or model.stat().st_mtime < src.stat().st_mtime:
            # The default gate (100 scenes), as scripts/demo converts: AP over fewer scenes moves by more than
            # the gate's one point when a single detection changes.
            sh([sys.executable, "-m", "ocrnet_edge", "convert", str(src), "--out", str(work), "--name", "reference",
                "--quiet"], cwd=REPO)
    model = model.resolve()
    clip = (REPO / "samples" / "clip.mp4").resolve()
    # FFmpeg's MPEG-4 decoder is not bit-exact across x86 and arm64 (different IDCTs: frames differ by up to
    # 3 levels), so the clip's frames are decoded once, here, and both sides read the same PNG frames.
    frames_dir = work / "frames"
    shutil.rmtree(frames_dir, ignore_errors=True)
    frames_dir.mkdir()
    cap = cv2.VideoCapture(str(clip))
    for i in range(a.frames):
        ok, bgr = cap.read()
        if not ok:
            break
        cv2.imwrite(str(frames_dir / f"{i:04d}.png"), bgr)
    cap.release()
    report: dict = {"model": str(model), "frames": a.frames, "python_wheels": {}, "cpus": {}}

    for py in PLATFORMS:
        got = wheels(py, CACHE / f"wheels-{py}")
        names = sorted(w.name.split("-")[0].lower() for w in got)
        report["python_wheels"][py] = names
        print(f"CPython {py} aarch64: {len(got)} wheels resolve, none built ({', '.join(names)})")
    root = userland()
    site_dir = site(sorted((CACHE / "wheels-3.11").glob("*.whl")))

    x86_lines = work / "x86.jsonl"
    run_args = ["run", str(model), "--source", str(frames_dir), "--threads", "1", "--quiet"]
    # Under user-mode emulation RSS is QEMU's (translation cache included; 166 MB against 117 MB here for the
    # reference model), so the guest runs report memory without enforcing the budget; the smallest board's
    # budget is enforced on this run instead.
    smallest = min((CPUS[c][3] for c in a.cpus.split(",")), key=lambda b: load_board(b).memory_budget_mb)
    sh([sys.executable, "-m", "ocrnet_edge", *run_args, "--board", smallest, "--json-out", str(x86_lines)], cwd=work)
    x86 = [json.loads(x) for x in x86_lines.read_text().splitlines()]
    steps = quant_steps(model)
    size = json.loads(subprocess.run([sys.executable, "-c", f"from ocrnet_edge.runtime.modelfile import inspect_model;"
                                      f"import json;print(json.dumps(inspect_model({str(model)!r}).card()['input']))"],
                                     capture_output=True, text=True, check=True, cwd=REPO).stdout)["size"]
    frame_scale = size / 640  # the clip is 640x480, letterboxed

    failures = []
    for cpu in a.cpus.split(","):
        board = set_cpu(root, cpu)
        t = time.time()
        doc = guest(root, site_dir, cpu, ["doctor"], work)
        detected = doc.stdout.splitlines()[0] if doc.stdout else doc.stderr.strip()[-200:]
        lines = work / f"{cpu}.jsonl"
        run = guest(root, site_dir, cpu, [*run_args, "--board", "auto", "--json-out", str(lines)], work)
        entry = {"board_expected": board, "doctor": detected, "doctor_ok": detected.startswith(f"board: {board} "),
                 "run_rc": run.returncode, "seconds": round(time.time() - t, 1)}
        if run.returncode == 0:
            arm = [json.loads(x) for x in lines.read_text().splitlines()]
            entry["agreement"] = compare(x86, arm, steps, frame_scale)
            entry["ok"] = entry["doctor_ok"] and entry["agreement"]["ok"]
        else:
            entry["error"] = run.stderr.strip().splitlines()[-1:] or ["?"]
            entry["ok"] = False
        report["cpus"][cpu] = entry
        ag = entry.get("agreement", {})
        print(f"{cpu}: doctor '{detected}'; {ag.get('matched')}/{ag.get('detections_x86')} detections matched, "
              f"max score diff {ag.get('max_score_diff')}, max box diff {ag.get('max_box_diff_px')} px, "
              f"min mask IoU {ag.get('min_mask_iou')}, identical={ag.get('identical')} ({entry['seconds']} s)")
        if not entry["ok"]:
            failures.append(cpu)
    report["seconds"] = round(time.time() - t0, 1)
    report["ok"] = not failures
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"arm64 check {'passed' if not failures else 'FAILED on ' + ', '.join(failures)} in {report['seconds']} s; "
          f"details in {a.json}")
    return 0 if not failures else 5


if __name__ == "__main__":
    sys.exit(main())

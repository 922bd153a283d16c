"""``ocrnet-edge convert``: the steps in order, every output written under a temporary name first.

    load model + config -> calibration images -> full int8 (and float32) -> graph audit (refuse float,
    variable, shape ops; check fused heads) -> Edge TPU readiness -> model card (embedded + JSON)
    -> fidelity gate on held-out images -> Edge TPU compile (when asked and installed) -> reports
"""

from __future__ import annotations

import dataclasses
import json
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ocrnet_edge.model.config import ModelConfig
from ocrnet_edge.model.data import Dataset, load_dataset, write_scenes
from ocrnet_edge.model.evaluate import evaluate_keras, evaluate_outputs
from ocrnet_edge.model.io import load_model, load_model_config
from ocrnet_edge.model.network import output_spec
from ocrnet_edge.runtime.engine import Engine, EngineOptions
from ocrnet_edge.runtime.errors import EnvironmentMissing, GateError, InputError, ModelError, OutputError
from ocrnet_edge.runtime.modelfile import inspect_model

from . import calibration, checks, edgetpu, fidelity
from .card import build_card, embed_card
from .export import count_keras_convolutions, export_model, keras_to_tflite
from .report import write_reports

HELDOUT_SEED = 20261126
"""Seed of the generated held-out split (no training, validation or calibration split uses it)."""


@dataclass(frozen=True)
class ConvertOptions:
    """What ``convert`` does.

    Attributes:
        size: Export input size (a multiple of 32); None keeps the model's.
        calib: Calibration image folder.
        min_calib: Fewest usable calibration images accepted.
        val: COCO dataset for the fidelity gate; None generates ``heldout_images`` scenes.
        heldout_images: Generated held-out images when ``val`` is None.
        max_drop: Allowed drop of box AP, mask AP or mIoU, in points.
        edgetpu: Compile for the Edge TPU (needs ``edgetpu_compiler``) and fail if any op falls to the CPU.
        name: Output name; None uses the model's folder or file name.
        write_float: Also write the float32 ``.tflite`` (for int8-against-float benchmarks).
        threads: Interpreter threads for the fidelity run.
        progress: Show progress bars.
    """

    size: int | None = None
    calib: Path = Path("calibration_data")
    min_calib: int = calibration.MIN_IMAGES
    val: Path | None = None
    heldout_images: int = 100
    max_drop: float = 1.0
    edgetpu: bool = False
    name: str | None = None
    write_float: bool = True
    threads: int = 2
    progress: bool = True

    def __post_init__(self) -> None:
        if self.size is not None and (self.size < 64 or self.size % 32):
            raise InputError(f"--size must be a multiple of 32, at least 64. Received: {self.size}")
        if self.heldout_images < 1:
            raise InputError(f"held-out images must be at least 1. Received: {self.heldout_images}")


@dataclass
class ConvertResult:
    """What ``convert`` wrote and measured."""

    int8: Path
    card: Path
    report_json: Path
    report_md: Path
    float32: Path | None = None
    edgetpu: Path | None = None
    report: dict = field(default_factory=dict)


def _model_name(model_path: Path, name: str | None) -> str:
    if name:
        return name
    return model_path.parent.name if model_path.stem == "model" and model_path.parent.name else model_path.stem


def _writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".ocrnet-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OutputError(f"{out_dir}: output folder cannot be written ({e.strerror or e})") from None


def _write_atomic(path: Path, data: bytes) -> Path:
    tmp = path.with_name(path.name + ".partial")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    return path


def _check_contract(net, cfg: ModelConfig, path: Path) -> None:
    expected = set(output_spec(cfg))
    have = set(net.output_names)
    missing = sorted(expected - have)
    if missing:
        raise ModelError(f"{path}: the model's outputs do not follow the contract; missing {missing} (has {sorted(have)})")


def convert_model(model_path: Path | str, out_dir: Path | str, options: ConvertOptions = ConvertOptions()) -> ConvertResult:
    """Convert, check, gate and (optionally) compile a trained model. See the module docstring.

    Raises:
        InputError, ModelError, OutputError, EnvironmentMissing: Bad input; nothing is written.
        GateError: The fidelity gate or the Edge TPU mapping failed; the reports and the model (under a
            name saying it failed) were written.
    """
    t_start = time.perf_counter()
    model_path, out_dir = Path(model_path), Path(out_dir)
    net = load_model(model_path)
    cfg = load_model_config(model_path)
    _check_contract(net, cfg, model_path)
    if options.size is not None:
        cfg = cfg.with_size(options.size)
    name = _model_name(model_path, options.name)
    _writable(out_dir)
    cal = calibration.scan(options.calib, options.min_calib)
    report: dict = {
        "model": str(model_path), "name": name, "input_size": cfg.input_size,
        "calibration": {"folder": str(options.calib), "images": len(cal.files),
                        "skipped": [[str(p), why] for p, why in cal.skipped]},
    }

    def representative():
        files = tqdm(cal.files, desc="calibration", unit="img", disable=not options.progress)
        for x in calibration.iter_preprocessed(tuple(files), cfg.input_size):
            yield [x]

    t0 = time.perf_counter()
    int8_bytes = keras_to_tflite(net, cfg, representative)
    report["conversion_seconds"] = round(time.perf_counter() - t0, 2)
    float_bytes = keras_to_tflite(net, cfg) if options.write_float else None

    work = Path(tempfile.mkdtemp(prefix="ocrnet-convert-"))
    try:
        raw_path = _write_atomic(work / "raw.tflite", int8_bytes)
        info = inspect_model(raw_path)
        audit = checks.audit_int8(info, count_keras_convolutions(net), tuple(output_spec(cfg)))
        report["graph"] = {"ops": len(info.ops), "op_counts": audit.op_counts, "convolutions": audit.conv_count,
                           "problems": list(audit.problems)}
        if not audit.ok:
            raise ModelError(f"{model_path}: the converted graph is not full int8 with fused heads: {audit.problems[0]}")
        tpu = checks.check_edgetpu(info)
        report["edgetpu_check"] = tpu.as_dict()

        card = build_card(info, cfg, name, model_path)
        final = embed_card(int8_bytes, card)
        int8_path = out_dir / f"{name}_int8.tflite"
        staged = out_dir / (int8_path.name + ".partial")
        staged.write_bytes(final)
        report["files"] = {"int8_bytes": len(final), "float32_bytes": len(float_bytes) if float_bytes else None}

        # Fidelity on held-out images the model never saw.
        heldout = _heldout(options, cfg, work)
        static = export_model(net, cfg)
        with Engine.open(staged, options=EngineOptions(threads=options.threads)) as engine:
            agreement = fidelity.output_agreement(static, engine, heldout, options.progress)
            f_metrics = evaluate_keras(static, heldout, progress=options.progress)
            i_metrics = evaluate_outputs(heldout, fidelity.engine_outputs(engine, heldout), engine.quants,
                                         progress=options.progress)
        result = fidelity.gate(f_metrics, i_metrics, options.max_drop)
        report["fidelity"] = {
            "heldout": str(options.val) if options.val
            else f"{options.heldout_images} generated scenes, seed {HELDOUT_SEED}",
            "outputs": {k: dataclasses.asdict(v) for k, v in agreement.items()},
            "float": f_metrics, "int8": i_metrics, "drops_points": result.drops, "max_drop_points": options.max_drop,
            "passed": result.ok, "failed": list(result.failed),
        }
        if not result.ok:
            report["fidelity"]["worst_layers"] = fidelity.layer_errors(net, cfg, _subset(representative, 20))
            report["fidelity"]["suggestions"] = list(fidelity.SUGGESTIONS)
            int8_path = out_dir / f"{name}_int8_gatefailed.tflite"

        card_path = out_dir / f"{name}.card.json"
        _write_atomic(card_path, (json.dumps(card, indent=2) + "\n").encode())
        staged.replace(int8_path)
        float_path = _write_atomic(out_dir / f"{name}_float32.tflite", float_bytes) if float_bytes else None

        tpu_path, compile_error = None, None
        if options.edgetpu:
            reason = edgetpu.compiler_available()
            if reason:
                compile_error = EnvironmentMissing(reason)
                report["edgetpu_compile"] = {"skipped": reason}
            elif result.ok:
                tpu_path, log = edgetpu.compile_edgetpu(int8_path, out_dir)
                report["edgetpu_compile"] = log.as_dict()
                if log.cpu_ops:
                    rows = ", ".join(f"{n} x{c}" for n, c, _ in log.cpu_operators) or f"{log.cpu_ops} ops"
                    compile_error = GateError(f"{log.cpu_ops} ops fall to the CPU on the Edge TPU: {rows}")
        report["seconds_total"] = round(time.perf_counter() - t_start, 2)
        report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        json_path, md_path = write_reports(report, out_dir, name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for leftover in out_dir.glob(f"{name}*.partial"):
            leftover.unlink(missing_ok=True)

    out = ConvertResult(int8_path, card_path, json_path, md_path, float_path, tpu_path, report)
    if not result.ok:
        drops = ", ".join(f"{k} dropped {result.drops[k]:.2f}" for k in result.failed)
        raise GateError(f"fidelity gate failed ({drops} points, at most {options.max_drop} allowed); model written as "
                        f"{int8_path.name}, see {md_path}")
    if compile_error is not None:
        raise compile_error
    return out


def _subset(representative, n: int):
    def gen():
        for i, x in enumerate(representative()):
            if i >= n:
                break
            yield x
    return gen


def _heldout(options: ConvertOptions, cfg: ModelConfig, work: Path) -> Dataset:
    if options.val is not None:
        return load_dataset(options.val, cfg.class_names)
    path = write_scenes(work / "heldout", options.heldout_images, HELDOUT_SEED, cfg.input_size, progress=False)
    return load_dataset(path, cfg.class_names)

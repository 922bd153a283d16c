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
from ocrnet_edge.model.io import load_data_record, load_model, load_model_config
from ocrnet_edge.model.network import output_spec
from ocrnet_edge.runtime.engine import Engine, EngineOptions
from ocrnet_edge.runtime.errors import EnvironmentMissing, GateError, InputError, ModelError, OutputError
from ocrnet_edge.runtime.modelfile import inspect_model, xnnpack_refusals

from . import calibration, checks, edgetpu, fidelity
from .card import build_card, embed_card
from .export import count_keras_convolutions, export_model, keras_to_tflite
from .report import write_reports

HELDOUT_SEED = 20261126
"""Seed of the generated held-out split (no training, validation or calibration split uses it)."""
GATE_IMAGES = 200
"""Most images of a user's validation data the gate runs on."""
SCENE_GATE_IMAGES = 100
"""Generated scenes the gate runs on for a generated-scene model."""


@dataclass(frozen=True)
class ConvertOptions:
    """What ``convert`` does.

    Attributes:
        size: Export input size (a multiple of 32); None keeps the model's.
        calib: Calibration image folder; None: images sampled from the dataset the model was trained on
            (recorded in the model), or the bundled ``calibration_data/`` for a model trained on
            generated scenes.
        min_calib: Fewest usable calibration images accepted from a folder.
        val: Labelled dataset for the fidelity gate; None: the model's recorded validation data, or
            ``heldout_images`` generated scenes for a model trained on generated scenes.
        heldout_images: Gate images: generated scenes (default 100), or the most taken from a dataset
            (default :data:`GATE_IMAGES`).
        gate: Run the fidelity gate (off: the report says on its first line that nothing was checked).
        max_drop: Allowed drop of box AP, mask AP or mIoU, in points.
        edgetpu: Compile for the Edge TPU (needs ``edgetpu_compiler``) and fail if any op falls to the CPU.
        name: Output name; None uses the model's folder or file name.
        write_float: Also write the float32 ``.tflite`` (for int8-against-float benchmarks).
        threads: Interpreter threads for the fidelity run.
        progress: Show progress bars.
    """

    size: int | None = None
    calib: Path | None = None
    min_calib: int = calibration.MIN_IMAGES
    val: Path | None = None
    heldout_images: int | None = None
    gate: bool = True
    max_drop: float = 1.0
    edgetpu: bool = False
    name: str | None = None
    write_float: bool = True
    threads: int = 2
    progress: bool = True

    def __post_init__(self) -> None:
        if self.size is not None and (self.size < 64 or self.size % 32):
            raise InputError(f"--size must be a multiple of 32, at least 64. Received: {self.size}")
        if self.heldout_images is not None and self.heldout_images < 1:
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
    data_record = load_data_record(model_path)
    cal, cal_source = calibration.for_model(model_path, cfg, data_record, options.calib, options.min_calib)
    gate_plan = _gate_plan(options, cfg, model_path, data_record) if options.gate else None
    _writable(out_dir)
    report: dict = {
        "model": str(model_path), "name": name, "input_size": cfg.input_size,
        "calibration": {"folder": cal_source, "source": cal_source, "images": len(cal.files),
                        "skipped": [[str(p), why] for p, why in cal.skipped]},
        "gated": options.gate,
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
        report["graph"]["xnnpack_refusals"] = xnnpack_refusals(info)

        card = build_card(info, cfg, name, model_path, pretrained=(data_record or {}).get("pretrained"),
                          calibration={"source": cal_source, "images": len(cal.files)},
                          gate={"source": gate_plan[0]} if gate_plan else {"source": None, "skipped": "--no-gate"})
        final = embed_card(int8_bytes, card)
        int8_path = out_dir / f"{name}_int8.tflite"
        staged = out_dir / (int8_path.name + ".partial")
        staged.write_bytes(final)
        report["files"] = {"int8_bytes": len(final), "float32_bytes": len(float_bytes) if float_bytes else None}

        # Fidelity on held-out images the model never saw.
        result = None
        if gate_plan is not None:
            heldout = gate_plan[1](work)
            static = export_model(net, cfg)
            with Engine.open(staged, options=EngineOptions(threads=options.threads)) as engine:
                agreement = fidelity.output_agreement(static, engine, heldout, options.progress)
                f_metrics = evaluate_keras(static, heldout, progress=options.progress)
                i_metrics = evaluate_outputs(heldout, fidelity.engine_outputs(engine, heldout), engine.quants,
                                             progress=options.progress)
            result = fidelity.gate(f_metrics, i_metrics, options.max_drop)
            report["fidelity"] = {
                "heldout": f"{gate_plan[0]} ({len(heldout)} images)",
                "outputs": {k: dataclasses.asdict(v) for k, v in agreement.items()},
                "float": f_metrics, "int8": i_metrics, "drops_points": result.drops, "max_drop_points": options.max_drop,
                "passed": result.ok, "failed": list(result.failed), "skipped": f_metrics.get("skipped", {}),
            }
            if not result.ok:
                report["fidelity"]["worst_layers"] = fidelity.layer_errors(net, cfg, representative)
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
            elif result is None or result.ok:
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
    if result is not None and not result.ok:
        drops = ", ".join(f"{k} dropped {result.drops[k]:.2f}" for k in result.failed)
        raise GateError(f"fidelity gate failed ({drops} points, at most {options.max_drop} allowed); model written as "
                        f"{int8_path.name}, see {md_path}")
    if compile_error is not None:
        raise compile_error
    return out


def _gate_plan(options: ConvertOptions, cfg: ModelConfig, model_path: Path, data_record: dict | None):
    """``(description, loader(work) -> Dataset)`` of the gate images (see :class:`ConvertOptions`)."""
    from ocrnet_edge.model.formats import available_splits

    cap = options.heldout_images or GATE_IMAGES
    n_scenes = options.heldout_images or SCENE_GATE_IMAGES

    def capped(ds: Dataset) -> Dataset:
        return ds.subset(ds.records[:cap])

    if options.val is not None:
        split = "val" if "val" in available_splits(options.val) else "all"
        ds = capped(load_dataset(options.val, cfg.class_names, split=split, stuff_names=cfg.stuff_names))
        return f"dataset {options.val} ({split})", lambda work: ds
    if calibration.trained_on_scenes(cfg, data_record):
        def scenes(work: Path) -> Dataset:
            path = write_scenes(work / "heldout", n_scenes, HELDOUT_SEED, cfg.input_size, progress=False)
            return load_dataset(path, cfg.class_names)
        return f"{n_scenes} generated scenes, seed {HELDOUT_SEED}", scenes
    if data_record is None or not data_record.get("val"):
        raise InputError(f"{model_path}: no validation data recorded for this model; pass --val DIR (labelled images "
                         "of its domain) or --no-gate to convert without the accuracy check")
    ds = capped(calibration.recorded_dataset(data_record["val"], cfg, "validation", model_path, "--val"))
    v = data_record["val"]
    how = f"held-out {v['holdout']['fraction']:g} of" if v.get("holdout") else f"{v.get('split', 'all')} split of"
    return f"validation data: {how} {v['path']}", lambda work: ds

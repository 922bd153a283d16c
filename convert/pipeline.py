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
from ocrnet_edge.model.evaluate import Scored, evaluate_keras, evaluate_outputs
from ocrnet_edge.model.io import load_data_record, load_model, load_model_config
from ocrnet_edge.model.network import output_spec
from ocrnet_edge.runtime.contract import InputSize, parse_size, size_json
from ocrnet_edge.runtime.engine import Engine, EngineOptions
from ocrnet_edge.runtime.errors import EnvironmentMissing, GateError, InputError, ModelError, OutputError
from ocrnet_edge.runtime.modelfile import inspect_model, xnnpack_refusals
from ocrnet_edge.runtime.quiet import native_stderr_quiet

from . import calibration, checks, edgetpu, fidelity
from .card import build_card, embed_card
from .export import count_keras_convolutions, export_model, exported, tflite_converter
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
        size: Export input size, a side or ``(width, height)``, each a multiple of 32; None keeps the
            model's (or takes ``board_size``).
        board_size: The board profile's input size (``convert --board``), taken when ``size`` is None and
            the model's input is square; a model trained rectangular keeps its shape (a square would letterbox
            its camera's frames with the bars it was shaped to avoid), and so does one whose input ``train`` chose
            for its objects (``input_for`` in its data record: a set of large boxes at 416, whose kangaroo model
            exported at 320 lost 8 points of box AP and 9 of AP50 by the run path).
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
        onnx: Also write ``<name>.onnx`` (float32) and ``<name>_int8_qdq.onnx`` (symmetric QDQ INT8) for
            TensorRT and ONNX Runtime, gated and checked for TensorRT (:mod:`convert.onnx_step`).
        onnx_opset: Their ONNX opset (17; 13 for Jetson Nano's TensorRT 8.2).
        skip_bad: Skip the files of ``val`` with problems (counted) instead of refusing it, as ``train
            --skip-bad`` does (the recorded validation data is always read so, as it was for training).
    """

    size: InputSize | None = None
    board_size: InputSize | None = None
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
    onnx: bool = False
    onnx_opset: int = 17
    skip_bad: bool = False

    def __post_init__(self) -> None:
        if not 13 <= self.onnx_opset <= 20:
            raise InputError(f"ONNX opset must be 13 to 20 (what TensorRT 8.2 to 10.x parse). Received: {self.onnx_opset}")
        if self.size is not None:
            try:
                object.__setattr__(self, "size", parse_size(self.size))
            except InputError as e:
                raise InputError(f"--size: {e}") from None
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
    onnx: Path | None = None
    onnx_qdq: Path | None = None


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


@dataclass(frozen=True)
class CalibrationPart:
    """Where the calibration images came from, how many were used and which were skipped (and why)."""

    source: str
    images: int
    skipped: tuple[tuple[str, str], ...] = ()

    def as_dict(self) -> dict:
        return {"folder": self.source, "source": self.source, "images": self.images,
                "skipped": [list(x) for x in self.skipped]}


@dataclass(frozen=True)
class GraphPart:
    """The converted graph: op counts, the audit's problems, XNNPACK's refusals."""

    ops: int
    op_counts: dict[str, int]
    convolutions: int
    problems: tuple[str, ...]
    xnnpack_refusals: tuple[str, ...]

    def as_dict(self) -> dict:
        return {"ops": self.ops, "op_counts": self.op_counts, "convolutions": self.convolutions,
                "problems": list(self.problems), "xnnpack_refusals": list(self.xnnpack_refusals)}


@dataclass(frozen=True)
class FidelityPart:
    """Float against int8 on the gate images: per output and per task, the verdict, and on a failure the
    worst layers and what to try."""

    heldout: str
    outputs: dict[str, fidelity.OutputAgreement]
    result: fidelity.GateResult
    skipped: dict[str, str]
    worst_layers: tuple[dict, ...] = ()
    images: int = 0
    calibration_images: int = 0
    float_scored: Scored | None = field(default=None, repr=False, compare=False)
    """The float model's per-image material on the gate images (the ONNX gates' reference)."""

    def as_dict(self) -> dict:
        r = self.result
        d = {"heldout": self.heldout, "outputs": {k: dataclasses.asdict(v) for k, v in self.outputs.items()},
             "float": r.float_metrics, "int8": r.int8_metrics, "drops_points": r.drops, "max_drop_points": r.max_drop,
             "passed": r.ok, "failed": list(r.failed), "skipped": self.skipped}
        if not r.ok:
            d["drop_intervals"] = {k: list(v) for k, v in r.intervals.items()}
            d["interval"] = {"level": fidelity.LEVEL, "draws": fidelity.DRAWS, "images": self.images}
            d["worst_layers"] = list(self.worst_layers)
            d["suggestions"] = fidelity.suggestions(r, self.images, self.calibration_images)
        return d


def _load(model_path: Path, options: ConvertOptions) -> tuple[object, ModelConfig, dict | None]:
    """The model, its configuration at the export size, and the record of its data (None when absent)."""
    net = load_model(model_path)
    cfg = load_model_config(model_path)
    _check_contract(net, cfg, model_path)
    record = load_data_record(model_path)
    if options.size is not None:
        cfg = cfg.with_size(options.size)
    elif options.board_size is not None and isinstance(cfg.input_size, int) and not (record or {}).get("input_for"):
        cfg = cfg.with_size(options.board_size)
    return net, cfg, record


def _representative(files: tuple[Path, ...], size: InputSize, progress: bool):
    """The converter's calibration samples, ``[(1, S, S, 3) float32]`` each, as the runtime preprocesses."""
    def representative():
        # The bar follows the images as the converter takes them (it wrapped the file list, which filled at once).
        samples = calibration.iter_preprocessed(tuple(files), size)
        for x in tqdm(samples, total=len(files), desc="calibration", unit="img", disable=not progress):
            yield [x]
    return representative


def _audit(int8_bytes: bytes, net, cfg: ModelConfig, work: Path, model_path: Path):
    """Audit the converted graph (full int8, fused heads) and check it for the Edge TPU: ``(graph part,
    Edge TPU check, the file's parsed structure)``.

    Raises:
        ModelError: The graph is not full int8 with fused heads.
    """
    info = inspect_model(_write_atomic(work / "raw.tflite", int8_bytes))
    audit = checks.audit_int8(info, count_keras_convolutions(net), tuple(output_spec(cfg)))
    if not audit.ok:
        raise ModelError(f"{model_path}: the converted graph is not full int8 with fused heads: {audit.problems[0]}")
    graph = GraphPart(len(info.ops), audit.op_counts, audit.conv_count, tuple(audit.problems),
                      tuple(xnnpack_refusals(info)))
    return graph, checks.check_edgetpu(info), info


def _gate(net, cfg: ModelConfig, staged: Path, plan, representative, options: ConvertOptions,
          work: Path, calibration_images: int) -> tuple[FidelityPart, Dataset]:
    """Float against int8 on the gate images the model never trained on; on a failure, each failed drop's
    interval over resampled gate images and the worst layers. Returns the part and the gate images (the ONNX
    files are gated on the same)."""
    description, load = plan
    heldout = load(work)
    static = export_model(net, cfg)
    f_scored, i_scored = Scored(), Scored()
    with Engine.open(staged, options=EngineOptions(threads=options.threads)) as engine:
        agreement = fidelity.output_agreement(static, engine, heldout, options.progress)
        f_metrics = evaluate_keras(static, heldout, progress=options.progress, keep=f_scored)
        i_metrics = evaluate_outputs(heldout, fidelity.engine_outputs(engine, heldout), engine.quants,
                                     progress=options.progress, keep=i_scored)
    result = fidelity.gate(f_metrics, i_metrics, options.max_drop)
    worst = ()
    if not result.ok:
        result = fidelity.with_intervals(result, heldout, f_scored, i_scored)
        worst = tuple(fidelity.layer_errors(net, cfg, representative))
    return FidelityPart(f"{description} ({len(heldout)} images)", agreement, result, f_metrics.get("skipped", {}),
                        worst, len(heldout), calibration_images, f_scored), heldout


def _compile(int8_path: Path, out_dir: Path, gate_ok: bool) -> tuple[dict, Path | None, Exception | None]:
    """Compile for the Edge TPU: ``(report part, compiled file, error to raise after the reports)``."""
    reason = edgetpu.compiler_available()
    if reason:
        return {"skipped": reason}, None, EnvironmentMissing(reason)
    if not gate_ok:
        return {"skipped": "the fidelity gate failed"}, None, None
    tpu_path, log = edgetpu.compile_edgetpu(int8_path, out_dir)
    error = None
    if log.cpu_ops:
        rows = ", ".join(f"{n} x{c}" for n, c, _ in log.cpu_operators) or f"{log.cpu_ops} ops"
        error = GateError(f"{log.cpu_ops} ops fall to the CPU on the Edge TPU: {rows}")
    return log.as_dict(), tpu_path, error


def convert_model(model_path: Path | str, out_dir: Path | str, options: ConvertOptions = ConvertOptions()) -> ConvertResult:
    """Convert, check, gate and (optionally) compile a trained model. See the module docstring.

    Raises:
        InputError, ModelError, OutputError, EnvironmentMissing: Bad input; nothing is written.
        GateError: The fidelity gate or the Edge TPU mapping failed; the reports and the model (under a
            name saying it failed) were written.
    """
    t_start = time.perf_counter()
    model_path, out_dir = Path(model_path), Path(out_dir)
    if options.onnx:
        from .onnx_export import require_onnx

        require_onnx()
    net, cfg, data_record = _load(model_path, options)
    name = _model_name(model_path, options.name)
    cal, cal_source = calibration.for_model(model_path, cfg, data_record, options.calib, options.min_calib)
    calib = CalibrationPart(cal_source, len(cal.files), tuple((str(p), why) for p, why in cal.skipped))
    gate_plan = _gate_plan(options, cfg, model_path, data_record) if options.gate else None
    _writable(out_dir)
    representative = _representative(cal.files, cfg.input_size, options.progress)
    report: dict = {"model": str(model_path), "name": name, "input_size": size_json(cfg.input_size),
                    "calibration": calib.as_dict(), "gated": options.gate}

    t0 = time.perf_counter()
    # One SavedModel export serves both files (a second export rebuilt and traced the model again).
    with exported(net, cfg) as saved, native_stderr_quiet():  # the converter's "fully_quantize: 0, ..." line
        int8_bytes = tflite_converter(saved, representative).convert()
        report["conversion_seconds"] = round(time.perf_counter() - t0, 2)
        float_bytes = tflite_converter(saved).convert() if options.write_float else None

    work = Path(tempfile.mkdtemp(prefix="ocrnet-convert-"))
    try:
        graph, tpu, info = _audit(int8_bytes, net, cfg, work, model_path)
        report["graph"], report["edgetpu_check"] = graph.as_dict(), tpu.as_dict()
        card_kw = {"pretrained": (data_record or {}).get("pretrained"),
                   "calibration": {"source": cal_source, "images": len(cal.files)},
                   "gate": {"source": gate_plan[0]} if gate_plan else {"source": None, "skipped": "--no-gate"}}
        card = build_card(info, cfg, name, model_path, **card_kw)
        final = embed_card(int8_bytes, card)
        int8_path = out_dir / f"{name}_int8.tflite"
        staged = out_dir / (int8_path.name + ".partial")
        staged.write_bytes(final)
        report["files"] = {"int8_bytes": len(final), "float32_bytes": len(float_bytes) if float_bytes else None}

        fid, heldout = (_gate(net, cfg, staged, gate_plan, representative, options, work, len(cal.files)) if gate_plan
                        else (None, None))
        if fid is not None:
            report["fidelity"] = fid.as_dict()
            if not fid.result.ok:
                int8_path = out_dir / f"{name}_int8_gatefailed.tflite"

        card_path = _write_atomic(out_dir / f"{name}.card.json", (json.dumps(card, indent=2) + "\n").encode())
        staged.replace(int8_path)
        float_path = _write_atomic(out_dir / f"{name}_float32.tflite", float_bytes) if float_bytes else None

        tpu_path, compile_error = None, None
        if options.edgetpu:
            report["edgetpu_compile"], tpu_path, compile_error = _compile(int8_path, out_dir, fid is None or fid.result.ok)
        onnx_out = None
        if options.onnx:
            from .onnx_step import export_onnx

            onnx_gate = (fid.heldout, heldout, fid.result.float_metrics, fid.float_scored) if fid is not None else None
            onnx_out = export_onnx(net, cfg, out_dir, name, model_path, cal.files, card_kw, options.onnx_opset, onnx_gate,
                                   fid.result.drops if fid is not None else None, options.max_drop, work,
                                   options.threads, options.progress)
            report["onnx"] = onnx_out.report
        report["seconds_total"] = round(time.perf_counter() - t_start, 2)
        report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        json_path, md_path = write_reports(report, out_dir, name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for leftover in out_dir.glob(f"{name}*.partial"):
            leftover.unlink(missing_ok=True)

    out = ConvertResult(int8_path, card_path, json_path, md_path, float_path, tpu_path, report,
                        onnx_out.float_path if onnx_out else None, onnx_out.qdq_path if onnx_out else None)
    if fid is not None and not fid.result.ok:
        chance = fidelity.chance_hint([fid.result], fid.images)
        raise GateError(f"fidelity gate failed ({fid.result.failures()}, at most {options.max_drop} allowed){chance}; "
                        f"model written as {int8_path.name}, see {md_path}")
    if compile_error is not None:
        raise compile_error
    if onnx_out is not None and onnx_out.error is not None:
        raise onnx_out.error
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
        ds = capped(load_dataset(options.val, cfg.class_names, split=split, stuff_names=cfg.stuff_names,
                                 skip_bad=options.skip_bad, quiet=not options.progress))
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

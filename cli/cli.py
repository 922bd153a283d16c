"""The ``ocrnet-edge`` command.

Device subcommands import only the runtime (LiteRT, numpy, OpenCV). Workstation subcommands
(``generate``, ``train``, ``eval``) import TensorFlow and Keras inside the command, and say which
extra to install when they are missing. Errors meant for the user print one line and exit with the
code documented in :mod:`runtime.errors`; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from ocrnet_edge.runtime.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EnvironmentMissing, OcrnetError

WORKSTATION_EXTRA = "pip install 'ocrnet-edge[convert]'"
DEFAULT_ONNX_OPSET = 17
NANO_ONNX_OPSET = 13
"""``convert --onnx --board jetson-nano``: JetPack 4.6's TensorRT 8.2 parses opsets up to 13."""

# One clear line per error: keep OpenCV's and FFmpeg's own warnings off the terminal (they are read
# when the video backends load, so this must happen before cv2 is imported).
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


def _require_workstation(command: str) -> None:
    """Fail with one line naming the extra when TensorFlow/Keras are not installed."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    missing = []
    for mod in ("keras", "faster_coco_eval", "pycocotools", "tqdm"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        try:
            __import__("tensorflow")
        except ImportError:
            missing.append("tensorflow")
    if missing:
        raise EnvironmentMissing(
            f"`ocrnet-edge {command}` runs on the workstation and needs {', '.join(missing)}: {WORKSTATION_EXTRA}"
        )


def cmd_generate(args: argparse.Namespace) -> int:
    _require_workstation("generate")
    from ocrnet_edge.model.data import write_scenes

    out = write_scenes(args.out, args.count, args.seed, args.size, progress=not args.quiet)
    print(f"wrote {args.count} scenes (seed {args.seed}, {args.size}x{args.size}) to {out}")
    return 0


def _int_list(text: str) -> list[int]:
    """``--threads 1,2`` / ``--sizes 256,320``: comma-separated positive integers (argparse's usage error otherwise)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, e.g. 1,2. Received: {text!r}")
    return values


def _size(text: str):
    """``--size 320`` or ``--size 416x320`` (width x height; each side a multiple of 32)."""
    from ocrnet_edge.runtime.contract import parse_size

    try:
        return parse_size(text)
    except OcrnetError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _size_list(text: str) -> list:
    """``--sizes 256,320,416x320``: comma-separated input sizes."""
    return [_size(v) for v in text.split(",")]


def _name_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated names, e.g. cpu,edgetpu. Received: {text!r}")
    return names


def _writable_file(path: Path | None) -> None:
    """Refuse an output file that cannot be written, before the work that fills it."""
    if path is None:
        return
    parent = Path(path).parent
    if not parent.is_dir() or not os.access(parent, os.W_OK) or Path(path).is_dir():
        from ocrnet_edge.runtime.errors import OutputError

        raise OutputError(f"{path}: cannot write here (the folder {parent} is missing or not writable)")


def _write_json(path: Path, doc: dict) -> None:
    """Write ``doc`` as JSON through a temporary name; one line on failure."""
    import json

    tmp = Path(str(path) + ".partial")
    try:
        tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        from ocrnet_edge.runtime.errors import OutputError

        raise OutputError(f"{path}: cannot write ({e.strerror})") from None


def _class_list(text: str) -> tuple[str, ...]:
    """``--classes a,b,c``: names as written (spaces inside a name kept), empty entries refused."""
    names = tuple(n.strip() for n in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated class names, e.g. person,forklift. Received: {text!r}")
    return names


def cmd_train(args: argparse.Namespace) -> int:
    _require_workstation("train")
    import dataclasses
    import json

    from ocrnet_edge.model.config import TrainConfig, train_config_from_dict
    from ocrnet_edge.model.train import train
    from ocrnet_edge.runtime.errors import InputError

    cfg = TrainConfig()
    if args.config:
        try:
            cfg = train_config_from_dict(json.loads(Path(args.config).read_text()))
        except FileNotFoundError:
            raise InputError(f"{args.config}: configuration file not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, AttributeError) as e:
            raise InputError(f"{args.config}: not a training configuration JSON ({type(e).__name__}: {e})") from None
    model_kw = {k: v for k, v in {"input_size": args.size, "width": args.width, "backbone": args.backbone,
                                  "det_head": args.det_head}.items() if v is not None}
    if args.no_ocr:
        model_kw["use_ocr"] = False
    train_kw = {k: v for k, v in {"epochs": args.epochs, "steps": args.steps, "batch_size": args.batch,
                                  "learning_rate": args.lr,
                                  "seed": args.seed, "val_images": args.val_images, "val_fraction": args.val_fraction,
                                  "init": str(args.init) if args.init else None, "classes": args.classes,
                                  "pretrained": args.pretrained, "backbone_lr": args.backbone_lr,
                                  "freeze_backbone": args.freeze_backbone,
                                  "augment": args.augment, "val_every": args.val_every, "ema_decay": args.ema,
                                  "patience": args.patience, "time_hours": args.time, "mosaic": args.mosaic,
                                  "copy_paste": args.copy_paste,
                                  "multi_scale": args.multi_scale}.items() if v is not None}
    if args.epochs is not None and args.steps is None:
        train_kw["steps"] = 0  # --epochs given: the run is counted in epochs, whatever the configuration said
    if args.steps is not None and args.epochs is None:
        train_kw["epochs"] = 0
    if args.no_flip:
        train_kw["flip"] = False
    if args.skip_bad:
        train_kw["skip_bad"] = True
    model = cfg.model.with_preset(args.size_preset) if args.size_preset else cfg.model
    loss_kw = {k: v for k, v in {"assigner": args.assigner, "mask_dice": args.mask_dice,
                                 "class_balance": args.class_weights}.items() if v is not None}
    if loss_kw:
        train_kw["loss"] = dataclasses.replace(cfg.loss, **loss_kw)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(model, **model_kw), **train_kw)
    chosen = (args.backbone, args.width, args.pretrained, args.size_preset, args.config, args.init)
    defaults = all(v is None for v in chosen)
    path = train(args.data, args.out, cfg, val_data=args.val, resume=not args.no_resume, verbose=2 if args.quiet else 1,
                 defaults=defaults, auto_size=args.size is None and args.config is None,
                 auto_head=defaults and args.det_head is None,
                 auto_assigner=defaults and args.det_head is None and args.assigner is None, workers=args.workers)
    print(f"model: {path}")
    return 0


def _model_classes(model: Path, card: Path | None) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """(thing classes, region classes) of a .keras or .tflite model; (None, None) for a Keras model saved
    without its configuration (the dataset's classes are taken, and must fit its outputs)."""
    if not model.is_file():
        from ocrnet_edge.runtime.errors import InputError

        raise InputError(f"{model}: model file not found")
    if model.suffix == ".tflite":
        from ocrnet_edge.runtime.engine import find_card

        c = find_card(model, card=card)
        things = tuple(c.class_names)
        stuff = tuple(n for n in c.semantic_classes[1:] if n not in things)
        return things, stuff
    from ocrnet_edge.model.io import load_model_config
    from ocrnet_edge.runtime.errors import ModelError

    try:
        cfg = load_model_config(model)
    except ModelError:
        return None, None
    return tuple(cfg.class_names), tuple(cfg.stuff_names)


def _evaluate_model(model: Path, card: Path | None, data, options, args: argparse.Namespace, breakdown: dict,
                    keep=None) -> tuple[dict, str]:
    """``eval``'s scoring of one model (.keras or .tflite) on ``data``: ``(metrics, format)``."""
    from ocrnet_edge.model.evaluate import evaluate_keras
    from ocrnet_edge.model.io import load_model

    if model.suffix == ".tflite":
        from ocrnet_edge.convert.fidelity import engine_outputs
        from ocrnet_edge.model.evaluate import evaluate_outputs
        from ocrnet_edge.runtime.engine import Engine, EngineOptions

        with Engine.open(model, card, EngineOptions(backend=args.backend, threads=args.threads)) as engine:
            if "score_threshold" in engine.card.decode:  # errors counted where this model's runs cut
                breakdown = {**breakdown, "score_threshold": float(engine.card.decode["score_threshold"])}
            metrics = evaluate_outputs(data, engine_outputs(engine, data), engine.quants, options, progress=not args.quiet,
                                       keep=keep, **breakdown)
        return metrics, "tflite"
    net = load_model(model)
    scores = dict(zip(net.output_names, net.outputs)).get("det_scores")
    if scores is not None and scores.shape[-1] != len(data.thing_classes):
        from ocrnet_edge.runtime.errors import ModelError

        raise ModelError(f"{model}: {scores.shape[-1]} detection classes, the dataset has "
                         f"{len(data.thing_classes)}; save the model with its configuration (training does)")
    return evaluate_keras(net, data, progress=not args.quiet, options=options, keep=keep, **breakdown), "keras"


def _against(args: argparse.Namespace, data, options, metrics: dict, scored) -> dict:
    """``eval --against OTHER``: the other model on the same images, and each metric's difference (this model minus
    the other, in points) with its interval over paired resamples of the images."""
    from ocrnet_edge.model.evaluate import DRAWS, LEVEL, Scored, paired_intervals

    other_scored = Scored()
    other, _ = _evaluate_model(args.against, None, data, options, args, {}, other_scored)
    keys = [k for k in ("box_ap", "box_ap50", "mask_ap", "mask_ap50", "miou")
            if metrics.get(k) is not None and other.get(k) is not None]
    intervals = paired_intervals(data, scored, other_scored, keys)
    return {"model": str(args.against), "metrics": {k: other.get(k) for k in ("box_ap", "box_ap50", "mask_ap",
                                                                             "mask_ap50", "miou")},
            "difference_points": {k: round((metrics[k] - other[k]) * 100, 3) for k in keys},
            "intervals": {k: list(v) for k, v in intervals.items()}, "level": LEVEL, "draws": DRAWS,
            "images": len(data)}


def cmd_eval(args: argparse.Namespace) -> int:
    _require_workstation("eval")
    import dataclasses
    import json

    from ocrnet_edge.model.breakdown import breakdown_table
    from ocrnet_edge.model.data import load_dataset
    from ocrnet_edge.model.evaluate import EVAL_DECODE, METRIC_KEYS, Scored, per_class_table, write_metrics
    from ocrnet_edge.model.formats import available_splits

    things, stuff = _model_classes(args.model, args.card)
    if args.against is not None:  # checked before any scoring: a missing file or other classes is one line at once
        other_things, other_stuff = _model_classes(args.against, None)
        if (other_things, other_stuff) != (things, stuff):
            from ocrnet_edge.runtime.errors import InputError

            raise InputError(f"{args.against}: its classes ({', '.join(other_things or ())}) are not {args.model}'s "
                             f"({', '.join(things or ())}); --against compares two models of the same classes")
    split = args.split or ("val" if "val" in available_splits(args.data) else "all")
    data = load_dataset(args.data, things, split=split, stuff_names=stuff, skip_bad=args.skip_bad, quiet=args.quiet)
    if args.limit:
        data = data.subset(data.records[: args.limit])
    _writable_file(args.json)
    breakdown: dict = {"preview": args.preview, "preview_count": args.preview_count}
    options = dataclasses.replace(EVAL_DECODE, iou_threshold=args.iou) if args.iou is not None else EVAL_DECODE
    scored = Scored() if args.against is not None else None
    metrics, fmt = _evaluate_model(args.model, args.card, data, options, args, breakdown, scored)
    if args.against is not None:
        metrics["against"] = _against(args, data, options, metrics, scored)
    summary = {k: (None if metrics[k] is None else round(metrics[k], 4)) for k in METRIC_KEYS}
    print(json.dumps(summary))
    if not args.quiet:
        print(per_class_table(metrics))
        if metrics.get("errors"):
            print(breakdown_table(metrics["errors"]))
    if metrics.get("best_f1"):
        f = metrics["best_f1"]
        print(f"operating point: class probability >= {f['score_threshold']:.2f} gives the best F1 {f['f1']:.3f} at IoU 0.5 "
              f"(precision {f['precision']:.3f}, recall {f['recall']:.3f}; NMS IoU {options.iou_threshold:g}); "
              f"run --score {f['score_threshold']:.2f} to use it")
    if args.preview:
        print(f"preview: the {len(metrics['preview'])} images with the most errors in {args.preview}")
    if metrics.get("against"):
        a = metrics["against"]
        for k, d in a["difference_points"].items():
            lo, hi = a["intervals"].get(k, (None, None))
            span = (f"{100 * a['level']:.0f}% interval over {a['draws']} paired resamples of the {a['images']} "
                    f"images: {lo:+.2f} to {hi:+.2f}" if lo is not None else "no interval")
            verdict = ("this model is better" if lo is not None and lo > 0 else "the other is better"
                       if hi is not None and hi < 0 else "these images cannot tell which is better")
            print(f"against {a['model']}: {k} {metrics[k]:.4f} vs {a['metrics'][k]:.4f}, {d:+.2f} points ({span}): "
                  f"{verdict}")
    for k, why in metrics["skipped"].items():
        if k in ("box_ap", "mask_ap", "miou"):
            print(f"skipped {k}: {why}", file=sys.stderr)
    if args.json:
        write_metrics(metrics, args.json, {"model": str(args.model), "data": str(args.data), "split": split,
                                           "format": fmt})
    return 0


def cmd_dataset(args: argparse.Namespace) -> int:
    _require_workstation("dataset")

    from ocrnet_edge.model.summary import format_summary, summarize, write_preview
    from ocrnet_edge.runtime.contract import parse_size

    _writable_file(args.json)
    doc = summarize(args.data, args.size)
    print(format_summary(doc))
    if args.json:
        _write_json(args.json, doc)
    if args.preview:
        files = write_preview(args.data, args.preview, args.preview_count, parse_size(doc.get("input_size", 320)))
        print(f"preview: {len(files)} images in {args.preview}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    _require_workstation("convert")
    from ocrnet_edge.convert.export import quiet_tensorflow
    from ocrnet_edge.convert.pipeline import ConvertOptions, convert_model

    quiet_tensorflow()
    board_size = None
    edgetpu = args.edgetpu
    opset = args.opset
    if args.board:
        from ocrnet_edge.runtime.system.boards import load_board

        board = load_board(args.board)
        board_size = board.input_size
        edgetpu = edgetpu or board.prefers_edgetpu
        if opset is None and board.name == "jetson-nano":
            opset = NANO_ONNX_OPSET
    if args.onnx:
        from ocrnet_edge.convert.onnx_export import require_onnx

        require_onnx()  # before minutes of TFLite conversion
    opts = ConvertOptions(size=args.size, board_size=board_size, calib=args.calib, min_calib=args.min_calib, val=args.val,
                          heldout_images=args.heldout_images, gate=not args.no_gate, max_drop=args.max_drop,
                          skip_bad=args.skip_bad,
                          edgetpu=edgetpu, name=args.name, progress=not args.quiet, onnx=args.onnx,
                          onnx_opset=opset or DEFAULT_ONNX_OPSET)
    res = convert_model(args.model, args.out, opts)
    fid = res.report.get("fidelity")
    if fid:
        drops = "drops in points: " + (", ".join(f"{k} {v:+.2f}" for k, v in fid["drops_points"].items()) or "none scored")
    else:
        drops = "NOT GATED (--no-gate)"
    print(f"calibration: {res.report['calibration']['source']}; gate: {fid['heldout'] if fid else 'none'}")
    refusals = res.report["graph"].get("xnnpack_refusals")
    if refusals:
        print(f"warning: {len(refusals)} convolution(s) with requantization scales XNNPACK refuses (first: "
              f"{refusals[0]}); the CPU runtime will use its slower reference kernels; see {res.report_md.name}",
              file=sys.stderr)
    print(f"wrote {res.int8} ({res.report['files']['int8_bytes'] / 1024:.0f} KiB), {res.card.name}, "
          f"{res.report_md.name}; {drops}; "
          f"Edge TPU: {res.report['edgetpu_check']['mapped_share'] * 100:.0f}% of ops map")
    if res.onnx is not None:
        o = res.report["onnx"]
        gate = o.get("fidelity")
        drops = ("QDQ drops in points: " + (", ".join(f"{k} {v:+.2f}" for k, v in gate["int8_qdq"]["drops_points"].items())
                                             or "none scored")) if gate else "NOT GATED (--no-gate)"
        versions = next(iter(o["tensorrt"].values()))
        trt_ok = [v for v in versions if all(per[v]["ok"] for per in o["tensorrt"].values())]
        print(f"wrote {res.onnx.name} and {res.onnx_qdq.name} (opset {o['opset']}); {drops}; "
              f"TensorRT parsers that take both: {', '.join(trt_ok) or 'none'}")
    return 0


def cmd_check_tensorrt(args: argparse.Namespace) -> int:
    import json

    from ocrnet_edge.convert.onnx_export import ONNX_EXTRA
    from ocrnet_edge.runtime.errors import GateError

    try:
        import onnx  # noqa: F401
    except ImportError:
        raise EnvironmentMissing(f"check-tensorrt reads ONNX files with the onnx package: {ONNX_EXTRA}") from None
    from ocrnet_edge.convert.onnx_export import load_onnx
    from ocrnet_edge.convert.tensorrt_check import TARGETS, check_tensorrt, target

    versions = [args.trt] if args.trt else list(TARGETS)
    for v in versions:
        target(v)  # an unknown version is refused before the file is read
    reports = check_tensorrt(load_onnx(args.model), versions)
    if args.json:
        print(json.dumps({v: r.as_dict() for v, r in reports.items()}, indent=2))
    failed = []
    for v, r in reports.items():
        if not args.json:
            print(f"{args.model}: TensorRT {v} ({r.platform}), opset {r.opset}: "
                  f"{'ok' if r.ok else f'{len(r.problems)} problem(s)'}")
            for n in r.notes:
                print(f"  note: {n}")
        for p in r.problems:
            failed.append(v)
            print(f"TensorRT {v}: {p}", file=sys.stderr)
    if failed:
        raise GateError(f"{args.model}: refused by TensorRT {', '.join(dict.fromkeys(failed))}'s parser rules "
                        f"({len(failed)} finding(s) above)")
    return 0


def cmd_check_edgetpu(args: argparse.Namespace) -> int:
    import json

    from ocrnet_edge.runtime.modelfile import inspect_model

    try:
        from ocrnet_edge.convert.checks import check_edgetpu
    except ImportError as e:  # pragma: no cover - convert/ is part of every install
        raise EnvironmentMissing(str(e)) from None
    report = check_edgetpu(inspect_model(args.model))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(f"{args.model}: {report.mapped_ops}/{report.total_ops} ops map to the Edge TPU "
              f"({report.mapped_share * 100:.1f}%), parameters {report.parameter_bytes / 1024:.0f} KiB")
        if report.first_unmapped:
            print(f"first op the compiler would leave on the CPU: {report.first_unmapped}")
        for p in report.problems:
            print(f"  {p}")
        for n in report.notes:
            print(f"  note: {n}")
    if not report.ok:
        from ocrnet_edge.runtime.errors import GateError

        raise GateError(f"{args.model}: {len(report.problems)} Edge TPU problem(s); first: {report.problems[0]}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:

    from ocrnet_edge.runtime.decode import DecodeOptions
    from ocrnet_edge.runtime.engine import EngineOptions
    from ocrnet_edge.runtime.errors import EXIT_INTERRUPTED
    from ocrnet_edge.runtime.run import RunOptions, run
    from ocrnet_edge.runtime.system.boards import load_board

    board = load_board(args.board)
    overrides = tuple((k, v) for k, v in (("score_threshold", args.score), ("iou_threshold", args.iou),
                                          ("max_detections", args.max_det)) if v is not None)
    DecodeOptions.merged({}, **dict(overrides))  # a bad value is refused here, before any camera opens
    engine = EngineOptions(backend=args.backend, threads=args.threads or board.threads, device=args.device,
                           order=board.backends, precision=args.precision, board_precision=board.precision,
                           decode_overrides=overrides)
    opts = RunOptions(
        source=args.source or board.camera, board=board, engine=engine, realtime=args.realtime, save=args.save,
        json_out=args.json_out, save_semantic=args.save_semantic, show=args.show, serve=args.serve,
        serve_token=args.serve_token, semantic_overlay=not args.no_semantic_overlay, max_frames=args.max_frames,
        status=not args.quiet,
    )
    _writable_file(args.summary)
    summary = run(args.model, opts, args.card)
    print(summary.line(), file=sys.stderr)
    if args.summary:
        _write_json(args.summary, summary.as_dict())
    return EXIT_INTERRUPTED if summary.interrupted else 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from ocrnet_edge.runtime.system.doctor import report

    print(report(args.board))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:

    from ocrnet_edge.runtime.bench import run_bench
    from ocrnet_edge.runtime.system.boards import load_board

    board = load_board(args.board)
    _writable_file(args.json)
    models: list[Path] = []
    for m in args.model:
        if not Path(m).is_file():
            from ocrnet_edge.runtime.errors import InputError

            raise InputError(f"{m}: model file not found")
        if m.suffix == ".keras":  # a trained model: convert it at every size the sweep needs (workstation)
            _require_workstation("bench MODEL.keras")
            from ocrnet_edge.convert.compare import convert_sizes
            from ocrnet_edge.convert.export import quiet_tensorflow

            quiet_tensorflow()
            sizes = args.sizes or list(board.sizes)
            out = args.work or Path("out") / "bench" / board.name
            models += convert_sizes(m, sizes, args.calib, out, float32=args.float32)
        else:
            models.append(m)
    threads = args.threads or None
    backends = args.backends or None
    from ocrnet_edge.runtime.errors import InputError

    bad = [b for b in backends or () if b not in BACKEND_CHOICES] + [
        p for p in args.precisions or () if p not in ("auto", *PRECISION_CHOICES)]
    if bad:
        raise InputError(f"unknown backends or precisions {bad}; backends: {', '.join(BACKEND_CHOICES)}; "
                         f"precisions: auto, {', '.join(PRECISION_CHOICES)}")

    def progress(cfg):
        if not args.quiet:
            print(f"bench {Path(cfg.model).name} backend={cfg.backend} precision={cfg.precision} threads={cfg.threads} ...",
                  file=sys.stderr)

    doc = run_bench([str(m) for m in models], board, threads, backends, args.frames, args.warmup, args.source,
                    args.sink, str(args.card) if args.card else None, progress, args.precisions, args.device)
    doc["command"] = "ocrnet-edge " + " ".join(sys.argv[1:])  # how it was measured
    for r in doc["results"]:
        c = r["config"]
        if r["ok"]:
            s = r["stages_ms"]
            mem = r["memory_mb"]
            gpu = ""
            if mem.get("gpu") is not None:  # shared (Jetson): the budget counts RSS + GPU; discrete: GPU beside
                gpu = (f" + GPU {mem['gpu']:.0f} = {mem['counted']:.0f}" if mem.get("gpu_shared")
                       else f" (GPU {mem['gpu']:.0f} beside)")
            ran = r.get("ran", {})
            macs = f"{r['model']['macs'] / 1e6:.0f} MMAC" if r["model"].get("macs") else "MMAC ?"
            print(f"{Path(c['model']).name:32s} {c['backend']:11s} {ran.get('precision', ''):7s} {c['threads']:2d}t  "
                  f"total {s['total']['median']:7.2f} ms "
                  f"(p90 {s['total']['p90']:.2f}, p99 {s['total']['p99']:.2f})  invoke {s['invoke']['median']:6.2f}  "
                  f"{r['fps']:7.1f} fps  peak {mem['peak']:.0f}{gpu}/{mem['budget']:.0f} MB  "
                  f"[{r['model'].get('backbone') or 'backbone ?'}, {macs}, "
                  f"{r['model']['parameters'] / 1e6:.2f} M parameters, "
                  f"{r['model']['bytes'] / 1024:.0f} KiB"
                  + (f"; ran {Path(ran['file']).name} on {ran['served_by']}" if ran.get("file") else "") + "]")
        else:
            print(f"{Path(c['model']).name:32s} {c['backend']:11s} {c.get('precision', ''):7s} {c['threads']:2d}t  "
                  f"FAILED: {r['reason']}")
    if doc["emulated"]:
        print("note: measured under emulation; these timings are not any board's", file=sys.stderr)
    if args.json:
        _write_json(args.json, doc)
    return 0 if any(r["ok"] for r in doc["results"]) else 4


def cmd_report(args: argparse.Namespace) -> int:
    from ocrnet_edge.benchreport import write_report

    for p in write_report(args.results, args.out, with_charts=not args.no_charts):
        print(p)
    return 0


BACKEND_CHOICES = ("cpu", "edgetpu", "onnxruntime", "tensorrt")
"""The runtime's backends (``runtime.backends.BACKENDS``, named here so that parsing imports no backend)."""
PRECISION_CHOICES = ("int8", "fp16", "fp32")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ocrnet-edge", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("generate", help="write procedural scenes as a COCO dataset (workstation)")
    g.add_argument("--out", required=True, type=Path, help="new dataset folder")
    g.add_argument("--count", type=int, default=1000, help="number of scenes")
    g.add_argument("--seed", type=int, default=0, help="split seed (scenes are deterministic by seed)")
    g.add_argument("--size", type=int, default=320, help="image side in pixels")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_generate)

    t = sub.add_parser("train", help="train the shared-feature model on a labelled dataset (workstation)")
    t.add_argument("--data", required=True, type=Path,
                   help="dataset: COCO (folder or .json), YOLO (folder or data.yaml), label maps "
                   "(images/ labels/ classes.txt) or Pascal VOC XML (VOC devkit or LabelImg folders)")
    t.add_argument("--out", required=True, type=Path, help="run folder (an existing run is resumed)")
    t.add_argument("--val", type=Path, help="validation dataset (default: the dataset's val split, else "
                   "--val-fraction of its images held out)")
    t.add_argument("--classes", type=_class_list, help="train these classes only, in this order (comma-separated)")
    t.add_argument("--config", type=Path, help="training configuration JSON (as saved in a run's config.json)")
    t.add_argument("--size", type=_size, help="input size: a side (320) or width x height (416x320 for a 4:3 camera, "
                   "512x288 for 16:9), each a multiple of 32")
    t.add_argument("--backbone", choices=["compact", "mobilenet_v2", "mobilenet_v1"],
                   help="backbone: compact (this project's small one, for generated scenes), or a standard MobileNet "
                   "that published weights fit. Default on photographs: size s on the bundled DeepLab MobileNetV2 "
                   "0.5 (when no --backbone, --width, --pretrained, --size-preset, --config or --init is given)")
    t.add_argument("--width", type=float, help="backbone width multiplier (mobilenet_v2: 0.35, 0.5, 0.75, 1.0; "
                   "mobilenet_v1: 0.25, 0.5, 0.75, 1.0)")
    t.add_argument("--pretrained", help="backbone weights: imagenet (Keras fetches them), a Keras .h5 file, a "
                   ".tflite file holding a MobileNet (e.g. Coral's mobilenet_v2_1.0_224_quant.tflite; the backbone "
                   "and width follow the file), the bundled deeplabv3_mnv2_dm05_pascal_quant.tflite, or none")
    t.add_argument("--backbone-lr", type=float, metavar="F",
                   help="with --pretrained: the backbone's learning rate as a fraction of --lr (0.1)")
    t.add_argument("--freeze-backbone", type=float, metavar="F",
                   help="with --pretrained: share of the run's steps with the backbone frozen (0: none)")
    t.add_argument("--size-preset", choices=["n", "s", "m"],
                   help="model size: neck, detection head, prototypes and OCR channels (n: the reference "
                   "model's; s and m: wider; the quarter/three-quarter split stays)")
    t.add_argument("--det-head", choices=["shared", "decoupled"],
                   help="detection head: shared (one tower for scores, boxes and mask coefficients) or decoupled "
                   "(boxes from a tower of their own, after a bottom-up path through the detection pyramid); default: "
                   "shared, and for a set of boxes alone decoupled where more of its boxes go to stride 32 than to "
                   "stride 8")
    t.add_argument("--steps", type=int, help="optimisation steps of the run (default: at least 1000, 2000 when the data "
                   "teaches boxes alone, and at least 20 passes over the data, so a small set trains for many passes)")
    t.add_argument("--epochs", type=int, help="passes over the data instead of --steps (validating after each)")
    t.add_argument("--val-every", type=int, metavar="STEPS",
                   help="steps between validations (default: a pass, and at least 1/20 of the run)")
    t.add_argument("--ema", type=float, metavar="DECAY",
                   help="moving average of the weights, validated and saved (decay, e.g. 0.998; 0: off)")
    t.add_argument("--patience", type=int, metavar="N",
                   help="stop when N validations in a row have not improved (0: never)")
    t.add_argument("--time", type=float, metavar="HOURS",
                   help="at most this many hours for the run (e.g. 1 or 0.5): after each validation round the run's "
                   "end moves to the last round that fits at the pace measured so far, and its learning rate decays "
                   "to that step (0: no limit)")
    t.add_argument("--mosaic", type=float, metavar="P", help="share of training images made as a mosaic of four")
    t.add_argument("--copy-paste", type=float, metavar="P",
                   help="share of training images that get objects of another pasted in through their masks")
    t.add_argument("--multi-scale", type=float, metavar="F",
                   help="each batch zoomed by one factor from [1/(1+F), 1+F] (0: off)")
    t.add_argument("--batch", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--val-images", type=int, help="validation images per epoch (0: none)")
    t.add_argument("--val-fraction", type=float, help="share held out for validation when there is no val split (0.1)")
    t.add_argument("--augment", choices=["auto", "on", "off"],
                   help="augmentation (scale, crop, colour, blur, noise); auto: on for your data, flips only "
                   "for generated scenes")
    t.add_argument("--no-flip", action="store_true", help="no horizontal flips (for classes where left and right differ)")
    t.add_argument("--skip-bad", action="store_true", help="skip files with problems (counted) instead of stopping")
    t.add_argument("--init", type=Path, help="start from the weights of this model.keras (layers of the same shape; "
                   "class-dependent layers start fresh)")
    t.add_argument("--assigner", choices=["fcos", "tal"], help="which locations learn each object: fcos (static, "
                   "the default) or tal (task-aligned: the best-predicting ones, TOOD/YOLOv8 style; the default for a set "
                   "of boxes alone that gets the shared detection head)")
    t.add_argument("--mask-dice", type=float, metavar="W", help="weight of a dice loss added to the instance masks' "
                   "BCE (0: BCE alone)")
    t.add_argument("--class-weights", choices=["none", "enet"], help="weights of the semantic classes in the pixel "
                   "loss: none (the default: every class alike) or enet (ENet's 1/ln(1.02 + pixel share) from the "
                   "training set: thin and rare classes weigh more)")
    t.add_argument("--no-ocr", action="store_true", help="ablation: semantic branch without object context")
    t.add_argument("--no-resume", action="store_true", help="start over even if --out holds a run")
    t.add_argument("--workers", type=int, metavar="N",
                   help="threads preparing batches ahead of the training step (default: one per core up to 8 on "
                        "a GPU, none beside the step on the CPU); the batches are the same whatever N")
    t.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("convert", help="full-int8 TFLite with fused heads, card, fidelity gate (workstation)")
    c.add_argument("model", type=Path, help="model.keras")
    c.add_argument("--out", required=True, type=Path, help="output folder")
    c.add_argument("--size", type=_size, help="export input size: a side (320) or width x height (416x320), each a "
                   "multiple of 32; default: the model's")
    c.add_argument("--calib", type=Path, help="calibration image folder (default: images of the model's training "
                   "data; calibration_data/ for generated-scene models)")
    c.add_argument("--min-calib", type=int, default=100, help="fewest usable calibration images accepted")
    c.add_argument("--board", help="take the input size (for a square model; one trained rectangular keeps its "
                   "shape) and the Edge TPU choice from a board profile")
    c.add_argument("--edgetpu", action="store_true", help="compile for the Edge TPU (needs edgetpu_compiler)")
    c.add_argument("--val", type=Path, help="labelled dataset for the fidelity gate (default: the model's "
                   "validation data; generated scenes for generated-scene models)")
    c.add_argument("--heldout-images", type=int, help="gate images (default: 100 generated scenes, or up to 200 "
                   "of the validation data)")
    c.add_argument("--no-gate", action="store_true", help="convert without the fidelity gate (the report says so)")
    c.add_argument("--skip-bad", action="store_true", help="skip files of --val with problems instead of stopping")
    c.add_argument("--max-drop", type=float, default=1.0, help="largest allowed drop of box AP, mask AP, mIoU (points)")
    c.add_argument("--name", help="output name (default: the model's folder or file name)")
    c.add_argument("--onnx", action="store_true", help="also write NAME.onnx (float32) and NAME_int8_qdq.onnx "
                   "(symmetric QDQ INT8) for TensorRT / ONNX Runtime, gated and checked (pip install 'ocrnet-edge[onnx]')")
    c.add_argument("--opset", type=int, help="ONNX opset with --onnx (default 17; 13 with --board jetson-nano)")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.set_defaults(func=cmd_convert)

    k = sub.add_parser("check-edgetpu", help="static Edge TPU readiness of a .tflite file")
    k.add_argument("model", type=Path, help="a .tflite file")
    k.add_argument("--json", action="store_true", help="print the report as JSON")
    k.set_defaults(func=cmd_check_edgetpu)

    kt = sub.add_parser("check-tensorrt", help="static TensorRT readiness of an .onnx file, per TensorRT version")
    kt.add_argument("model", type=Path, help="an .onnx file")
    kt.add_argument("--trt", help="one TensorRT version (8.2, 8.5, 8.6, 10.3); default: all of them")
    kt.add_argument("--json", action="store_true", help="print the reports as JSON")
    kt.set_defaults(func=cmd_check_tensorrt)

    r = sub.add_parser("run", help="run a converted model on a camera, stream, video, images or synthetic scenes")
    r.add_argument("model", type=Path, help="a converted .tflite or .onnx (its card embedded, beside it, or --card)")
    r.add_argument("--source", help="video/image file, folder, /dev/videoN, rtsp://, http(s)://, csi://N, "
                   "picam://N, synthetic://, or a GStreamer pipeline (default: the board's camera)")
    r.add_argument("--board", default="auto", help="board profile name or YAML file (default: auto-detect)")
    r.add_argument("--backend", default="auto", choices=["auto", *BACKEND_CHOICES],
                   help="auto: the board's order (a Jetson: tensorrt, onnxruntime, cpu), the first that runs here")
    r.add_argument("--precision", default="auto", choices=["auto", *PRECISION_CHOICES],
                   help="GPU backends: auto (an int8 build runs INT8 where the board has it, else FP16), or one")
    r.add_argument("--device", help="Edge TPU: usb, usb:N, pci, pci:N; onnxruntime: cpu, cuda, tensorrt; "
                   "tensorrt: a CUDA device index")
    r.add_argument("--threads", type=int, help="interpreter threads (default: the board's)")
    r.add_argument("--card", type=Path, help="model card for a .tflite or .onnx without one")
    r.add_argument("--save", type=Path, help="annotated video (.avi, .mp4, .webm, .mkv)")
    r.add_argument("--json-out", help="JSON lines per frame to this file, or - for stdout")
    r.add_argument("--save-semantic", type=Path, help="folder for uint8 PNG label maps at the source's resolution")
    r.add_argument("--show", action="store_true", help="show a window (needs a display)")
    r.add_argument("--serve", help="live viewer on HOST:PORT (127.0.0.1 unless told otherwise)")
    r.add_argument("--serve-token", help="token the viewer requires (mandatory beyond localhost)")
    r.add_argument("--no-semantic-overlay", action="store_true", help="annotate without the semantic overlay")
    r.add_argument("--realtime", action="store_true", help="pace a file source like a camera")
    r.add_argument("--max-frames", type=int, help="stop after N frames")
    r.add_argument("--score", type=float,
                   help="threshold on the class probability (default: the card's); a mask model's scores also hold "
                        "the mask's confidence, so they may lie under it")
    r.add_argument("--iou", type=float, help="NMS IoU threshold (default: the card's)")
    r.add_argument("--max-det", type=int, help="most detections per frame (default: the card's)")
    r.add_argument("--summary", type=Path, help="write the run's summary as JSON here")
    r.add_argument("--quiet", action="store_true", help="no live status line")
    r.set_defaults(func=cmd_run)

    b = sub.add_parser("bench", help="latency per stage and memory of the device path, per configuration")
    b.add_argument("model", type=Path, nargs="+", help="converted .tflite or .onnx files (e.g. the int8 and the float32 "
                   "build), or a trained model.keras to convert at every size of the sweep (workstation)")
    b.add_argument("--sizes", type=_size_list,
                   help="comma-separated input sizes for a .keras model, each 320 or 416x320 (default: the board's "
                   "sizes)")
    b.add_argument("--float32", action="store_true", help="with a .keras model, also bench float32 builds")
    b.add_argument("--calib", type=Path, help="calibration images for a .keras model (default: the model's own, "
                   "as convert takes them)")
    b.add_argument("--work", type=Path, help="folder for the converted files (default: out/bench/BOARD)")
    b.add_argument("--board", default="auto", help="board profile (default: auto-detect)")
    b.add_argument("--frames", type=int, default=100, help="timed frames per configuration")
    b.add_argument("--warmup", type=int, default=10, help="untimed frames first")
    b.add_argument("--threads", type=_int_list, help="comma-separated thread counts (default: 1 to the core count)")
    b.add_argument("--backends", type=_name_list,
                   help="comma-separated backends (default: every available one that runs the file, the board's first)")
    b.add_argument("--precisions", type=_name_list,
                   help="comma-separated GPU precisions (int8, fp16, fp32; default: auto and the board's)")
    b.add_argument("--device", help="the backends' device (as for run)")
    b.add_argument("--source", help="synthetic://... (default, at the board's camera size) or a video/image path")
    b.add_argument("--sink", action="store_true", help="also annotate every frame (a video or viewer sink's cost)")
    b.add_argument("--card", type=Path, help="model card for files without one")
    b.add_argument("--json", type=Path, help="write the results here")
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=cmd_bench)

    rp = sub.add_parser("report", help="Markdown tables and PNG charts from saved bench results")
    rp.add_argument("results", type=Path, nargs="+", help="bench JSON files")
    rp.add_argument("-o", "--out", type=Path, required=True, help="report folder")
    rp.add_argument("--no-charts", action="store_true", help="tables only (no matplotlib needed)")
    rp.set_defaults(func=cmd_report)

    dr = sub.add_parser("doctor", help="what this machine offers: board, backends, runtimes, cameras")
    dr.add_argument("--board", default="auto", help="board to report on (default: auto-detect)")
    dr.set_defaults(func=cmd_doctor)

    ds = sub.add_parser("dataset", help="summary and problems of a labelled dataset, before training (workstation)")
    ds.add_argument("data", type=Path, help="dataset folder (COCO, YOLO, label maps, Pascal VOC XML), COCO .json "
                    "or YOLO data.yaml")
    ds.add_argument("--size", type=_size, help="model input size the object sizes are given at (320 or 416x320; "
                    "default: the input train takes without --size)")
    ds.add_argument("--json", type=Path, help="write the summary and every problem as JSON")
    ds.add_argument("--preview", type=Path, help="folder for images with their labels drawn, as training sees them")
    ds.add_argument("--preview-count", type=int, default=16, help="images in the preview")
    ds.set_defaults(func=cmd_dataset)

    e = sub.add_parser("eval", help="box/mask AP, mIoU, per class, on a labelled dataset (workstation)")
    e.add_argument("model", type=Path, help="model.keras or a converted .tflite")
    e.add_argument("--card", type=Path, help="model card for a .tflite without one")
    e.add_argument("--iou", type=float, metavar="F",
                   help="NMS IoU threshold of the scored detections (default 0.6; lower merges touching objects)")
    e.add_argument("--backend", default="auto", help="auto, cpu or edgetpu (for a .tflite)")
    e.add_argument("--threads", type=int, default=2, help="interpreter threads (for a .tflite)")
    e.add_argument("--data", required=True, type=Path, help="labelled dataset (any format train reads)")
    e.add_argument("--split", help="split to score (default: val when the dataset has one, else all)")
    e.add_argument("--skip-bad", action="store_true", help="skip files with problems instead of stopping")
    e.add_argument("--json", type=Path, help="write all metrics here")
    e.add_argument("--limit", type=int, help="evaluate the first N images only")
    e.add_argument("--preview", type=Path, help="folder for the images with the most errors, predictions drawn "
                   "against the labels (JPEG)")
    e.add_argument("--preview-count", type=int, default=16, help="images in the preview")
    e.add_argument("--against", type=Path, metavar="OTHER",
                   help="also score OTHER (.keras or .tflite, the same classes) on the same images and give each "
                   "metric's difference with its 90%% interval over paired resamples of the images")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.debug:
        from ocrnet_edge.runtime.quiet import DEBUG_ENV

        os.environ[DEBUG_ENV] = "1"  # native libraries' own log lines reach the terminal too
    try:
        return int(args.func(args) or 0)
    except OcrnetError as e:
        if args.debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug: still one line unless --debug
        if args.debug:
            traceback.print_exc()
        print(f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())

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


def cmd_train(args: argparse.Namespace) -> int:
    _require_workstation("train")
    import dataclasses
    import json

    from ocrnet_edge.model.config import TrainConfig, train_config_from_dict
    from ocrnet_edge.model.train import train

    cfg = TrainConfig()
    if args.config:
        cfg = train_config_from_dict(json.loads(Path(args.config).read_text()))
    model_kw = {k: v for k, v in {"input_size": args.size, "width": args.width}.items() if v is not None}
    if args.no_ocr:
        model_kw["use_ocr"] = False
    train_kw = {k: v for k, v in {"epochs": args.epochs, "batch_size": args.batch, "learning_rate": args.lr,
                                  "seed": args.seed, "val_images": args.val_images}.items() if v is not None}
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **model_kw), **train_kw)
    path = train(args.data, args.out, cfg, val_data=args.val, resume=not args.no_resume, verbose=2 if args.quiet else 1)
    print(f"model: {path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    _require_workstation("eval")
    import json

    from ocrnet_edge.model.data import Dataset, load_dataset
    from ocrnet_edge.model.evaluate import METRIC_KEYS, evaluate_keras, write_metrics
    from ocrnet_edge.model.train import load_model

    data = load_dataset(args.data)
    if args.limit:
        data = Dataset(data.root, data.records[: args.limit], data.class_names)
    net = load_model(args.model)
    metrics = evaluate_keras(net, data, progress=not args.quiet)
    summary = {k: round(metrics[k], 4) for k in METRIC_KEYS}
    print(json.dumps(summary))
    if args.json:
        write_metrics(metrics, args.json, {"model": str(args.model), "data": str(args.data), "format": "keras"})
    return 0


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

    t = sub.add_parser("train", help="train the shared-feature model (workstation)")
    t.add_argument("--data", required=True, type=Path, help="COCO dataset folder to train on")
    t.add_argument("--out", required=True, type=Path, help="run folder (an existing run is resumed)")
    t.add_argument("--val", type=Path, help="COCO dataset folder for per-epoch validation")
    t.add_argument("--config", type=Path, help="training configuration JSON (as saved in a run's config.json)")
    t.add_argument("--size", type=int, help="input size (multiple of 32)")
    t.add_argument("--width", type=float, help="backbone width multiplier")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--val-images", type=int, help="validation images per epoch (0: none)")
    t.add_argument("--no-ocr", action="store_true", help="ablation: semantic branch without object context")
    t.add_argument("--no-resume", action="store_true", help="start over even if --out holds a run")
    t.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="box/mask AP, mIoU, P@R50 and R@P50 on a COCO dataset (workstation)")
    e.add_argument("model", type=Path, help="model.keras")
    e.add_argument("--data", required=True, type=Path, help="COCO dataset folder")
    e.add_argument("--json", type=Path, help="write all metrics here")
    e.add_argument("--limit", type=int, help="evaluate the first N images only")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = build_parser().parse_args(argv)
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

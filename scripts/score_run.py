"""Score a converted model the way a user checks it on a device (maintainer tooling, not installed): ``ocrnet-edge
run MODEL --source FOLDER --json-out --save-semantic`` over one split of a labelled dataset, the JSON lines scored
with pycocotools (box and mask AP, AP50) and the label maps with the dataset's semantic labels (mIoU). This is
the device path with the run's own decode settings (the card's score threshold, NMS IoU and detection cap), so
its AP is cut at that score threshold; ``eval`` scores the same file from score 0.05.

For a model with instance masks, whose detections carry ``class_score`` (the class probability) beside ``score``
(it times the mask's confidence), the same detections are also scored ranked by ``class_score`` alone
(``by_class_score``), which is what the runtime reported before it multiplied in the masks' confidence.

Usage: ``.venv/bin/python scripts/score_run.py MODEL.tflite --data DIR [--split val] [--work DIR] [--score F] [--iou F]``;
prints one JSON line and writes ``WORK/score.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--work", type=Path, help="folder for the run's outputs (default: a temporary one)")
    ap.add_argument("--score", type=float, help="run --score (default: the card's)")
    ap.add_argument("--iou", type=float, help="run --iou, the NMS IoU (default: the card's)")
    args = ap.parse_args()

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from ocrnet_edge.model.data import load_dataset
    from ocrnet_edge.model.evaluate import confusion, iou_from_confusion
    from ocrnet_edge.runtime.engine import find_card

    card = find_card(args.model)
    things = tuple(card.class_names)
    stuff = tuple(n for n in card.semantic_classes[1:] if n not in things)
    data = load_dataset(args.data, things, split=args.split, stuff_names=stuff, quiet=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="score_run_"))
    images = work / "images"
    images.mkdir(parents=True, exist_ok=True)
    by_name = {}
    for r in data.records:
        link = images / Path(r.path).name
        if not link.exists():
            link.symlink_to(Path(r.path).resolve())
        by_name[link.name] = r
    cmd = [str(REPO / ".venv/bin/ocrnet-edge"), "run", str(args.model), "--source", str(images),
           "--json-out", str(work / "run.jsonl"), "--save-semantic", str(work / "semantic")]
    cmd += ["--score", str(args.score)] if args.score is not None else []
    cmd += ["--iou", str(args.iou)] if args.iou is not None else []
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)

    boxes, masks = [], []
    frames = [json.loads(line) for line in (work / "run.jsonl").read_text().splitlines()]
    for f in frames:
        r = by_name[f["name"]]
        for d in f["detections"]:
            x0, y0, x1, y1 = d["box"]
            det = {"image_id": r.image_id, "category_id": d["class_id"] + 1, "score": d["score"],
                   "class_score": d.get("class_score", d["score"]), "bbox": [x0, y0, x1 - x0, y1 - y0]}
            boxes.append(det)
            if "mask" in d:
                masks.append({**det, "segmentation": d["mask"]})
    out = {"model": str(args.model), "data": str(args.data), "split": args.split, "frames": len(frames),
           "images": len(data.records), "detections": len(boxes), "score_threshold": card.decode.get("score_threshold")
           if args.score is None else args.score}
    rescored = any(d["class_score"] != d["score"] for d in boxes)
    for kind, label, dets in (("bbox", "boxes", boxes), ("segm", "masks", masks)):
        gt_dict = data.coco_dict(label)
        if not gt_dict["images"] or not dets:
            continue
        key = "box" if kind == "bbox" else "mask"
        for rank in ("score", "class_score") if rescored else ("score",):
            with contextlib.redirect_stdout(io.StringIO()):
                gt = COCO()  # pycocotools reads a file; the ground truth is built in memory
                gt.dataset = gt_dict
                gt.createIndex()
                ev = COCOeval(gt, gt.loadRes([{**d, "score": d[rank]} for d in dets if d["image_id"] in gt.imgs]), kind)
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            into = out if rank == "score" else out.setdefault("by_class_score", {})
            into[f"{key}_ap"], into[f"{key}_ap50"] = round(float(ev.stats[0]), 4), round(float(ev.stats[1]), 4)
    sem = [r for r in data.records if r.supervision.semantic]
    if sem and (work / "semantic").is_dir():
        n = len(data.semantic_classes)
        cm = np.zeros((n, n), np.int64)
        for r in sem:
            png = work / "semantic" / (Path(r.path).stem + ".png")
            pred = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
            cm += confusion(r.semantic(), pred.astype(np.int64), n)
        out["miou"] = round(float(np.nanmean(iou_from_confusion(cm))), 4)
    (work / "score.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())

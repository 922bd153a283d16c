"""Evaluation: COCO box and mask AP, semantic mIoU, and the source document's P@R50 and R@P50.

Detections come from the device runtime's own decoder (:func:`runtime.decode.decode_outputs`);
the metrics come from faster-coco-eval (a drop-in, faster COCOeval), not from hand-written code.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster
from tqdm import tqdm

from ocrnet_edge.runtime.contract import SEG_STRIDE
from ocrnet_edge.runtime.decode import DecodeOptions, Quant
from ocrnet_edge.runtime.decode.frame import decode_outputs
from ocrnet_edge.runtime.preprocess import preprocess_into
from ocrnet_edge.runtime.results import FrameResult

from .data import Dataset, Record, encode_rle

EVAL_DECODE = DecodeOptions(score_threshold=0.05, iou_threshold=0.6, max_detections=100)
"""COCO-style decoding for evaluation: a low threshold so that the whole PR curve is measured."""

METRIC_KEYS = ("box_ap", "box_ap50", "mask_ap", "mask_ap50", "miou", "precision_at_recall50", "recall_at_precision50")


def _coco_eval(gt: COCO, dets: list[dict], iou_type: str) -> tuple[np.ndarray, dict]:
    if not dets:
        return np.zeros(12), {}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(dets)
        ev = COCOeval_faster(gt, dt, iouType=iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats, dtype=np.float64), ev.eval


def _pr_figures(ev: dict, gt: COCO) -> tuple[float, float]:
    """Precision at 50% recall and recall at 50% precision, IoU 0.5, mean over classes with objects."""
    if not ev:
        return 0.0, 0.0
    prec = np.asarray(ev["precision"])[0, :, :, 0, -1]  # (R, K) at IoU 0.5, all areas, 100 dets
    rec_thrs = np.linspace(0, 1, prec.shape[0])
    p_at_r, r_at_p = [], []
    for k, cat in enumerate(sorted(gt.getCatIds())):
        if not gt.getAnnIds(catIds=[cat]):
            continue
        p = np.where(prec[:, k] < 0, 0.0, prec[:, k])
        p_at_r.append(float(p[np.searchsorted(rec_thrs, 0.5 - 1e-9)]))
        ok = np.nonzero(p >= 0.5)[0]
        r_at_p.append(float(rec_thrs[ok.max()]) if len(ok) else 0.0)
    return (float(np.mean(p_at_r)) if p_at_r else 0.0, float(np.mean(r_at_p)) if r_at_p else 0.0)


def confusion(gt: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """(n, n) pixel confusion matrix, rows ground truth, columns prediction."""
    valid = gt < n
    return np.bincount(gt[valid].astype(np.int64) * n + pred[valid], minlength=n * n).reshape(n, n)


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU; NaN for a class absent from both ground truth and prediction."""
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def evaluate_results(dataset: Dataset, results: Iterable[tuple[Record, FrameResult]]) -> dict:
    """Score decoded results against a dataset's ground truth.

    Args:
        dataset: The ground truth.
        results: ``(record, frame result)`` for every record to score.

    Returns:
        A JSON-ready dict with at least :data:`METRIC_KEYS`, per-class IoU and the image count.
    """
    coco_gt = dataset.coco_dict()
    name_to_cat = {c["name"]: c["id"] for c in coco_gt["categories"]}
    n_sem = len(dataset.class_names) + 1
    cm = np.zeros((n_sem, n_sem), np.int64)
    box_dets, mask_dets, ids = [], [], []
    for rec, res in results:
        ids.append(rec.image_id)
        for d in res.detections:
            x0, y0, x1, y1 = d.box
            cat = name_to_cat[d.label]
            box_dets.append({"image_id": rec.image_id, "category_id": cat, "bbox": [x0, y0, x1 - x0, y1 - y0],
                             "score": d.score})
            if d.has_mask:
                mask_dets.append({"image_id": rec.image_id, "category_id": cat, "score": d.score,
                                  "segmentation": encode_rle(d.mask())})
        sem = res.semantic_frame()
        if sem is not None:
            cm += confusion(rec.semantic(), sem, n_sem)
    keep = set(ids)
    coco_gt["images"] = [im for im in coco_gt["images"] if im["id"] in keep]
    coco_gt["annotations"] = [a for a in coco_gt.get("annotations", []) if a["image_id"] in keep]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(coco_gt)
    box_stats, box_eval = _coco_eval(gt, box_dets, "bbox")
    mask_stats, _ = _coco_eval(gt, mask_dets, "segm")
    p_r50, r_p50 = _pr_figures(box_eval, gt)
    ious = iou_from_confusion(cm)
    names = ("background", *dataset.class_names)
    return {
        "images": len(ids),
        "box_ap": float(box_stats[0]),
        "box_ap50": float(box_stats[1]),
        "box_ap_small": float(box_stats[3]),
        "box_ap_medium": float(box_stats[4]),
        "box_ap_large": float(box_stats[5]),
        "mask_ap": float(mask_stats[0]),
        "mask_ap50": float(mask_stats[1]),
        "miou": float(np.nanmean(ious)) if cm.any() else 0.0,
        "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, ious)},
        "precision_at_recall50": p_r50,
        "recall_at_precision50": r_p50,
        "detections": len(box_dets),
    }


def keras_outputs(net, dataset: Dataset, batch_size: int = 16) -> Iterator[tuple[Record, Mapping[str, np.ndarray], object]]:
    """Run a Keras model over a dataset: ``(record, outputs, transform)`` per image."""
    size = net.input_shape[1]
    recs = dataset.records
    for i in range(0, len(recs), batch_size):
        chunk = recs[i : i + batch_size]
        x = np.empty((len(chunk), size, size, 3), np.uint8)
        transforms = [preprocess_into(r.image(), x[j]) for j, r in enumerate(chunk)]
        out = net(x.astype(np.float32), training=False)
        out = {k: np.asarray(v) for k, v in out.items()}
        for j, r in enumerate(chunk):
            yield r, {k: v[j : j + 1] for k, v in out.items()}, transforms[j]


def evaluate_outputs(
    dataset: Dataset,
    produced: Iterable[tuple[Record, Mapping[str, np.ndarray], object]],
    quants: Mapping[str, Quant] | None = None,
    options: DecodeOptions = EVAL_DECODE,
    progress: bool = True,
) -> dict:
    """Decode model outputs with the runtime's decoder and score them."""
    def results():
        for rec, outputs, transform in tqdm(produced, total=len(dataset), desc="eval", unit="img", disable=not progress):
            yield rec, decode_outputs(outputs, transform, dataset.class_names, options, quants, seg_stride=SEG_STRIDE)

    return evaluate_results(dataset, results())


def evaluate_keras(net, dataset: Dataset, progress: bool = True, options: DecodeOptions = EVAL_DECODE) -> dict:
    """Evaluate a Keras model (float) on a dataset."""
    return evaluate_outputs(dataset, keras_outputs(net, dataset), None, options, progress)


def write_metrics(metrics: dict, path: Path | str, extra: Mapping | None = None) -> None:
    """Write metrics as JSON (atomically), with optional extra fields (model, dataset...)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({**(extra or {}), **metrics}, indent=2) + "\n")
    tmp.replace(path)


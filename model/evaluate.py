"""Evaluation: COCO box and mask AP, semantic mIoU, and the source document's P@R50 and R@P50.

Detections come from the device runtime's own decoder (:func:`runtime.decode.decode_outputs`);
the metrics come from faster-coco-eval (a drop-in, faster COCOeval), not from hand-written code.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster
from tqdm import tqdm

from ocrnet_edge.runtime import contract
from ocrnet_edge.runtime.contract import SEG_STRIDE
from ocrnet_edge.runtime.decode import DecodeOptions
from ocrnet_edge.runtime.decode.frame import decode_outputs
from ocrnet_edge.runtime.preprocess import preprocess_into
from ocrnet_edge.runtime.quant import Quant
from ocrnet_edge.runtime.results import FrameResult

from .breakdown import OPERATING_SCORE, cut_score, error_breakdown, worst_images, write_error_preview
from .data import Dataset, Record, encode_rle

EVAL_DECODE = DecodeOptions(score_threshold=0.05, iou_threshold=0.6, max_detections=100)
"""COCO-style decoding for evaluation: a low threshold so that the whole PR curve is measured."""

METRIC_KEYS = ("box_ap", "box_ap50", "mask_ap", "mask_ap50", "miou", "precision_at_recall50", "recall_at_precision50")
DRAWS = 200
"""Resamples of the images behind a paired interval (:func:`paired_intervals`)."""
LEVEL = 0.9
"""Share of the resampled differences a paired interval holds (from the 5th to the 95th percentile)."""


def _coco_eval(gt: COCO, dets: list[dict], iou_type: str) -> tuple[np.ndarray, dict, COCOeval_faster | None]:
    if not dets:
        return np.zeros(12), {}, None
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(dets)
        ev = COCOeval_faster(gt, dt, iouType=iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats, dtype=np.float64), ev.eval, ev


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


def best_f1(evaluator, gt: COCO, grid: int = 96) -> dict | None:
    """The score threshold with the highest F1 at IoU 0.5 (F1 averaged over the classes with objects): where a
    deployed model should cut (``run --score``), as Ultralytics' F1 curve gives it. The threshold is on the class
    probability (a detection's ``class_score`` where it has one), as ``run --score`` applies it. Counted from COCOeval's own
    matches at IoU 0.5 (a detection on a crowd region counts neither way), so every false positive above a
    threshold counts, also those scoring below the last true positive. ``{"score_threshold", "f1", "precision",
    "recall"}``; None without detections."""
    if evaluator is None:
        return None
    matched = {int(k.split("_")[0]): int(k.split("_")[1]) for k in evaluator.eval.get("matched", {})}
    cats = [c for c in sorted(gt.getCatIds()) if gt.getAnnIds(catIds=[c], iscrowd=False)]
    if not cats:
        return None
    objects = {c: len(gt.getAnnIds(catIds=[c], iscrowd=False)) for c in cats}
    scores = {c: [] for c in cats}
    hits = {c: [] for c in cats}
    for d in evaluator.cocoDt.anns.values():
        c, g = d["category_id"], matched.get(d["id"])
        if c not in scores or (g is not None and gt.anns[g]["iscrowd"]):
            continue
        scores[c].append(cut_score(d))  # what run --score thresholds
        hits[c].append(g is not None)
    scores = {c: np.asarray(v, np.float64) for c, v in scores.items()}
    hits = {c: np.asarray(v, bool) for c, v in hits.items()}
    best = None
    for t in np.linspace(0.01, 0.96, grid):
        ps, rs, fs = [], [], []
        for c in cats:
            keep = scores[c] >= t
            tp, n = int(hits[c][keep].sum()), int(keep.sum())
            p, r = (tp / n if n else 0.0), tp / objects[c]
            ps.append(p)
            rs.append(r)
            fs.append(2 * p * r / (p + r) if p + r else 0.0)
        f1 = float(np.mean(fs))
        if best is None or f1 > best["f1"] + 1e-9:
            best = {"score_threshold": round(float(t), 3), "f1": f1, "precision": float(np.mean(ps)),
                    "recall": float(np.mean(rs))}
    return best


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


def _per_class_ap(ev: dict, n: int, gt: COCO | None = None) -> list[float | None]:
    """AP (IoU 0.50:0.95, all areas, 100 detections) per category from COCOeval's precision array;
    0 for a class with ground truth but no detections, None for a class without ground truth."""
    if not ev:
        if gt is None:
            return [None] * n
        return [0.0 if gt.getAnnIds(catIds=[k + 1], iscrowd=False) else None for k in range(n)]
    prec = np.asarray(ev["precision"])[:, :, :, 0, -1]  # (T, R, K)
    out = []
    for k in range(min(n, prec.shape[2])):
        p = prec[:, :, k]
        out.append(float(p[p > -1].mean()) if (p > -1).any() else None)
    return out + [None] * (n - len(out))


@dataclass
class Scored:
    """What a score was computed from, image by image, kept for scoring again on a resampled set of the same
    images (:class:`Resampler`): the COCO-style box and mask detections, and each image's semantic
    confusion matrix (by image id)."""

    box_dets: list[dict] = field(default_factory=list)
    mask_dets: list[dict] = field(default_factory=list)
    confusion: dict[int, np.ndarray] = field(default_factory=dict)


def evaluate_results(dataset: Dataset, results: Iterable[tuple[Record, FrameResult]],
                     heads: set[str] | None = None, preview: Path | str | None = None, preview_count: int = 16,
                     score_threshold: float = OPERATING_SCORE, keep: Scored | None = None) -> dict:
    """Score decoded results against a dataset's ground truth, on what its labels support.

    Box AP is scored on images with boxes, mask AP on images with instance masks, mIoU on images
    with a semantic map (pixels marked ignored are not scored); a metric the labels (or the model's
    heads) cannot support is None, with the reason in ``skipped``.

    Args:
        dataset: The ground truth.
        results: ``(record, frame result)`` for every record to score.
        heads: The model's heads (``detect``, ``semantic``, ``instance``), read once ``results`` is
            consumed (a producer may fill it as it goes); None: all three.
        preview: Folder for the worst images drawn (:func:`model.breakdown.write_error_preview`), or None.
        preview_count: Images in the preview.
        score_threshold: Score at which the error breakdown counts detections (the runtime's default).
        keep: Filled with the per-image detections and confusion matrices the metrics come from, or None.

    Returns:
        A JSON-ready dict with :data:`METRIC_KEYS` (None where skipped), per-class AP and IoU, the
        image counts, ``errors`` (:func:`model.breakdown.error_breakdown`, with the worst images; None
        without boxes to score), ``preview`` (the files written) and ``skipped``.
    """
    names = dataset.thing_classes
    cat_of = {n: k + 1 for k, n in enumerate(names)}
    sem_names = dataset.semantic_classes
    n_sem = len(sem_names)
    cm = np.zeros((n_sem, n_sem), np.int64)
    box_dets, mask_dets, ids = [], [], []
    sem_images = 0
    for rec, res in results:
        ids.append(rec.image_id)
        for d in res.detections:
            x0, y0, x1, y1 = d.box
            cat = cat_of[d.label]
            det = {"image_id": rec.image_id, "category_id": cat, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": d.score,
                   "class_score": d.class_probability}
            box_dets.append(det)
            if d.has_mask:
                det["mask"] = encode_rle(d.mask())  # for the mask IoU of the objects found (model.breakdown)
                mask_dets.append({"image_id": rec.image_id, "category_id": cat, "score": d.score,
                                  "segmentation": det["mask"]})
        if rec.supervision.semantic:
            sem = res.semantic_frame()
            if sem is not None:
                sem_images += 1
                image_cm = confusion(rec.semantic(), sem, n_sem)
                cm += image_cm
                if keep is not None:
                    keep.confusion[rec.image_id] = image_cm
    heads = {"detect", "semantic", "instance"} if heads is None else heads
    if keep is not None:
        keep.box_dets, keep.mask_dets = box_dets, mask_dets
    scored_ids = set(ids)
    sub = dataset.subset([r for r in dataset.records if r.image_id in scored_ids])
    skipped: dict[str, str] = {}
    out: dict = {"images": len(ids), "detections": len(box_dets)}

    def scored(label: str, dets: list, iou_type: str, key: str, has_head: bool, head: str):
        gt_dict = sub.coco_dict(label)
        if not names:
            skipped[key] = "the model has no thing classes"
        elif not has_head:
            skipped[key] = f"the model has no {head} head"
        elif not gt_dict["images"]:
            skipped[key] = f"no image of this dataset has {'instance masks' if label == 'masks' else 'boxes'}"
        else:
            with contextlib.redirect_stdout(io.StringIO()):
                gt = COCO(gt_dict)
            stats, ev, evaluator = _coco_eval(
                gt, [d for d in dets if d["image_id"] in {im["id"] for im in gt_dict["images"]}], iou_type)
            return stats, ev, gt, len(gt_dict["images"]), evaluator
        return None, None, None, 0, None

    box_stats, box_eval, box_gt, n_box, box_ev = scored("boxes", box_dets, "bbox", "box_ap", "detect" in heads,
                                                        "detection")
    mask_stats, mask_eval, mask_gt, n_mask, mask_ev = scored("masks", mask_dets, "segm", "mask_ap", "instance" in heads,
                                                             "instance")
    out["images_scored"] = {"boxes": n_box, "masks": n_mask, "semantic": sem_images}
    if box_stats is not None:
        p_r50, r_p50 = _pr_figures(box_eval, box_gt)
        out.update(box_ap=float(box_stats[0]), box_ap50=float(box_stats[1]), box_ap_small=float(box_stats[3]),
                   box_ap_medium=float(box_stats[4]), box_ap_large=float(box_stats[5]),
                   precision_at_recall50=p_r50, recall_at_precision50=r_p50, best_f1=best_f1(box_ev, box_gt))
    else:
        out.update(box_ap=None, box_ap50=None, precision_at_recall50=None, recall_at_precision50=None)
        skipped.update({k: skipped["box_ap"] for k in ("box_ap50", "precision_at_recall50", "recall_at_precision50")})
    if mask_stats is not None:
        out.update(mask_ap=float(mask_stats[0]), mask_ap50=float(mask_stats[1]))
    else:
        out.update(mask_ap=None, mask_ap50=None)
        skipped["mask_ap50"] = skipped["mask_ap"]
    if "semantic" in heads and cm.any():
        ious = iou_from_confusion(cm)
        out["miou"] = float(np.nanmean(ious))
        out["per_class_iou"] = {n: (None if np.isnan(v) else float(v)) for n, v in zip(sem_names, ious)}
    else:
        out["miou"] = None
        out["per_class_iou"] = {}
        skipped["miou"] = ("the model has no semantic head" if "semantic" not in heads
                           else "no image of this dataset has a semantic map")
    box_pc, mask_pc = _per_class_ap(box_eval, len(names), box_gt), _per_class_ap(mask_eval, len(names), mask_gt)
    out["per_class_ap"] = {n: {"box": b, "mask": m} for n, b, m in zip(names, box_pc, mask_pc)}
    out["errors"], out["preview"] = None, []
    if box_gt is not None:
        errors, per_image = error_breakdown(box_gt, box_ev, names, sub, mask_ev, score_threshold)
        paths = {r.image_id: str(r.path) for r in sub.records}
        errors["worst_images"] = [{"image": paths[e.image_id], "missed": e.missed, "false_positives": e.false_positives}
                                  for e in worst_images(per_image, 10)]
        out["errors"] = errors
        if preview is not None:
            files = write_error_preview(sub, per_image, names, preview, preview_count, score_threshold)
            out["preview"] = [str(f) for f in files]
    out["skipped"] = skipped
    return out


class Resampler:
    """Box AP, mask AP and mIoU of several scorings of one dataset (:class:`Scored`, from
    :func:`evaluate_results`), scored again on sets of its images drawn with replacement: an image drawn twice
    counts twice, under a new id. The ground truth and the detections are grouped by image once; each draw is
    one COCOeval per scoring and label, the same images for every scoring (a paired resample)."""

    _LABELS = (("boxes", "box_ap", "bbox", "box_dets"), ("masks", "mask_ap", "segm", "mask_dets"))
    _DET_KEYS = {"bbox": ("category_id", "bbox", "score"), "segm": ("category_id", "segmentation", "score")}

    def __init__(self, dataset: Dataset, scored: Sequence[Scored]):
        self._gt, self._dets = {}, []
        for label, _key, _iou, _attr in self._LABELS:
            gt = dataset.coco_dict(label)
            anns: dict[int, list[dict]] = {im["id"]: [] for im in gt["images"]}
            for a in gt["annotations"]:
                anns[a["image_id"]].append(a)
            self._gt[label] = ({im["id"]: im for im in gt["images"]}, anns, gt["categories"])
        for s in scored:
            grouped: dict[str, dict[int, list[dict]]] = {}
            for _label, _key, iou_type, attr in self._LABELS:
                by_image: dict[int, list[dict]] = {}
                for d in getattr(s, attr):
                    by_image.setdefault(d["image_id"], []).append({k: d[k] for k in self._DET_KEYS[iou_type]})
                grouped[attr] = by_image
            self._dets.append((grouped, s.confusion))

    def metrics(self, picks: Sequence[int], keys: Iterable[str] = ("box_ap", "mask_ap", "miou")
                ) -> list[dict[str, float | None]]:
        """The metrics ``keys`` (of box_ap, box_ap50, mask_ap, mask_ap50, miou) of each scoring on the images
        ``picks`` (image ids, repeats allowed); None where none of the picked images carries that label."""
        keys = set(keys)
        out: list[dict[str, float | None]] = [{} for _ in self._dets]
        for label, key, iou_type, attr in self._LABELS:
            wanted = [(k, col) for k, col in ((key, 0), (key + "50", 1)) if k in keys]
            if not wanted:
                continue
            images, anns, categories = self._gt[label]
            chosen = [i for i in picks if i in images]
            if not chosen:
                for o in out:
                    o.update({k: None for k, _ in wanted})
                continue
            gt_dict: dict = {"images": [], "annotations": [], "categories": categories}
            for n, i in enumerate(chosen, 1):
                gt_dict["images"].append({**images[i], "id": n})
                gt_dict["annotations"] += [{**a, "id": len(gt_dict["annotations"]) + k + 1, "image_id": n}
                                           for k, a in enumerate(anns[i])]
            with contextlib.redirect_stdout(io.StringIO()):
                gt = COCO(gt_dict)
            for o, (grouped, _cms) in zip(out, self._dets):
                dets = [{**d, "image_id": n} for n, i in enumerate(chosen, 1) for d in grouped[attr].get(i, ())]
                stats = _coco_eval(gt, dets, iou_type)[0]
                o.update({k: float(stats[col]) for k, col in wanted})
        if "miou" in keys:
            for o, (_grouped, cms) in zip(out, self._dets):
                picked = [cms[i] for i in picks if i in cms]
                o["miou"] = float(np.nanmean(iou_from_confusion(np.sum(picked, axis=0)))) if picked else None
        return out


def paired_intervals(dataset: Dataset, first: Scored, second: Scored, keys: Iterable[str], draws: int = DRAWS,
                     level: float = LEVEL, seed: int = 0) -> dict[str, tuple[float, float]]:
    """How far ``first - second`` (in points) moves over sets of ``dataset``'s images drawn with replacement:
    ``draws`` draws, the same for both scorings (a paired bootstrap), each metric of ``keys`` scored on every draw;
    per metric, the interval holding the middle ``level`` of the differences. Metrics no draw can score are left
    out."""
    keys = tuple(keys)
    ids = np.asarray([r.image_id for r in dataset.records])
    resampler = Resampler(dataset, (first, second))
    rng = np.random.default_rng(seed)
    diffs: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(draws):
        a, b = resampler.metrics(rng.choice(ids, size=len(ids), replace=True).tolist(), keys)
        for k in keys:
            if a[k] is not None and b[k] is not None:
                diffs[k].append((a[k] - b[k]) * 100)
    tail = (1 - level) / 2 * 100
    return {k: (round(float(np.percentile(v, tail)), 3), round(float(np.percentile(v, 100 - tail)), 3))
            for k, v in diffs.items() if v}


def validation_score(metrics: dict) -> float:
    """The mean of box AP, mask AP and mIoU over those the labels support (the run keeps the best)."""
    vals = [metrics[k] for k in ("box_ap", "mask_ap", "miou") if metrics.get(k) is not None]
    return float(np.mean(vals)) if vals else 0.0


def per_class_table(metrics: dict, indent: str = "") -> str:
    """Per-class box AP, mask AP and IoU as aligned text lines."""
    iou = metrics.get("per_class_iou", {})
    ap = metrics.get("per_class_ap", {})
    rows = [n for n in iou] if iou else list(ap)
    for n in ap:
        if n not in rows:
            rows.append(n)
    width = max([len(n) for n in rows] + [5])

    def f(v):
        return "   -  " if v is None else f"{v:6.3f}"

    lines = [f"{indent}{'class':<{width}}  box AP mask AP    IoU"]
    for n in rows:
        a = ap.get(n, {})
        lines.append(f"{indent}{n:<{width}}  {f(a.get('box'))}  {f(a.get('mask'))} {f(iou.get(n))}")
    return "\n".join(lines)


def keras_outputs(net, dataset: Dataset, batch_size: int = 16) -> Iterator[tuple[Record, Mapping[str, np.ndarray], object]]:
    """Run a Keras model over a dataset: ``(record, outputs, transform)`` per image."""
    h, w = net.input_shape[1:3]
    recs = dataset.records
    for i in range(0, len(recs), batch_size):
        chunk = recs[i : i + batch_size]
        x = np.empty((len(chunk), h, w, 3), np.uint8)
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
    **breakdown,
) -> dict:
    """Decode model outputs with the runtime's decoder and score them (``breakdown``: ``preview``,
    ``preview_count``, ``score_threshold`` of :func:`evaluate_results`)."""
    heads: set[str] = set()

    def results():
        for rec, outputs, transform in tqdm(produced, total=len(dataset), desc="eval", unit="img", disable=not progress):
            if not heads:
                heads.update(heads_of(outputs))
            yield rec, decode_outputs(outputs, transform, dataset.class_names, options, quants, seg_stride=SEG_STRIDE)

    return evaluate_results(dataset, results(), heads, **breakdown)


def heads_of(outputs: Mapping[str, np.ndarray]) -> set[str]:
    """The heads a model's outputs hold."""
    heads = set()
    if contract.DET_SCORES in outputs:
        heads.add("detect")
    if contract.DET_COEFFS in outputs and contract.MASK_PROTOS in outputs:
        heads.add("instance")
    if contract.SEG_LOGITS in outputs or "seg_labels" in outputs:
        heads.add("semantic")
    return heads


def evaluate_keras(net, dataset: Dataset, progress: bool = True, options: DecodeOptions = EVAL_DECODE,
                   **breakdown) -> dict:
    """Evaluate a Keras model (float) on a dataset (``breakdown`` as for :func:`evaluate_outputs`)."""
    return evaluate_outputs(dataset, keras_outputs(net, dataset), None, options, progress, **breakdown)


def write_metrics(metrics: dict, path: Path | str, extra: Mapping | None = None) -> None:
    """Write metrics as JSON (atomically), with optional extra fields (model, dataset...)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({**(extra or {}), **metrics}, indent=2) + "\n")
    tmp.replace(path)


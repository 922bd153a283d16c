"""Where a detector's loss comes from, per class, and the images it gets most wrong.

The matching is COCOeval's own (faster-coco-eval's ``eval["matched"]``: IoU 0.5, every area, up to 100
detections per image, greedy by score, crowd and VOC ``difficult`` regions ignored), read at the score a
deployment keeps (the runtime's default threshold), since errors counted down to the evaluation's 0.05
would be mostly detections no one ever sees. Each detection kept at that score is then either a true
positive or one of TIDE's false-positive kinds (Bolya et al., 2020), checked in TIDE's order:

- ``duplicate``: IoU >= 0.5 with an object of its class that a higher-scoring detection already found;
- ``wrong_class``: IoU >= 0.5 with an object of another class;
- ``poorly_localised``: IoU 0.1 to 0.5 with an object of its class;
- ``background``: on nothing (IoU under 0.1 with every object).

Beside the counts: AP at IoU 0.5 against 0.75 (a large gap is localisation), AP of COCO's small
(< 32² px), medium and large objects from COCOeval's precision array, and for instance masks the mean
mask IoU of the objects found (are the masks the limit inside correct boxes?).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from ocrnet_edge.runtime.decode import DecodeOptions

from .data import Dataset, to_rle

OPERATING_SCORE = DecodeOptions().score_threshold
"""Score at which errors are counted: the runtime's default threshold."""
MATCH_IOU = 0.5
BACKGROUND_IOU = 0.1
"""Below this IoU with every object a false positive is on the background (TIDE's t_b)."""
FP_KINDS = ("duplicate", "wrong_class", "poorly_localised", "background")
SIZES = (("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, float("inf")))
"""COCO's area ranges (pixels of the image as labelled), as COCOeval's precision array indexes them (1, 2, 3)."""


@dataclass
class ImageErrors:
    """One image's detections and objects at the operating score, for the preview.

    Attributes:
        image_id: The record's image id.
        detections: ``(category, score, box x0 y0 x1 y1, mask RLE or None, kind)``; kind ``tp`` or a false-positive kind.
        objects: ``(category, box x0 y0 x1 y1, state)``; state ``found``, ``missed`` or ``ignored``.
    """

    image_id: int
    detections: list = field(default_factory=list)
    objects: list = field(default_factory=list)

    @property
    def missed(self) -> int:
        return sum(1 for *_, s in self.objects if s == "missed")

    @property
    def false_positives(self) -> int:
        return sum(1 for *_, k in self.detections if k != "tp")

    @property
    def errors(self) -> int:
        """Missed objects plus false positives (what the preview ranks images by)."""
        return self.missed + self.false_positives


def cut_score(det: dict) -> float:
    """What the runtime's score threshold cuts in one scored detection: its class probability (``class_score``,
    which a mask model's ``score`` multiplies by the mask's confidence), else its ``score``."""
    return det.get("class_score", det["score"])


def _xyxy(bbox) -> list[float]:
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


def _ap(prec: np.ndarray) -> float | None:
    return float(prec[prec > -1].mean()) if (prec > -1).any() else None


def error_breakdown(gt, box_ev, names: tuple[str, ...], dataset: Dataset, mask_ev=None,
                    score_threshold: float = OPERATING_SCORE) -> tuple[dict, dict[int, ImageErrors]]:
    """Per-class error counts and AP figures from a box COCOeval that has run ``evaluate`` and ``accumulate``.

    Args:
        gt: The boxes' ground truth (a faster-coco-eval ``COCO`` of :meth:`Dataset.coco_dict`, ids ``1..K``).
        box_ev: faster-coco-eval's ``COCOeval_faster`` for boxes over ``gt``, or None when there was no
            detection at all; detections may carry ``mask`` (an RLE) for the mask IoU.
        names: Class names in category order.
        dataset: The records scored (for which carry instance masks).
        mask_ev: The same for masks, or None.
        score_threshold: Detections whose class probability (``class_score``, else ``score``) is below this
            are not counted as errors or finds: the runtime's threshold applies to the class probability.

    Returns:
        ``(breakdown, per image)``: the JSON-ready breakdown (``score_threshold``, ``per_class``, ``total``)
        and an :class:`ImageErrors` per image id.
    """
    dt_anns = box_ev.cocoDt.anns if box_ev is not None else {}
    matched = {int(k.split("_")[0]): int(k.split("_")[1]) for k in (box_ev.eval.get("matched", {}) if box_ev else {})}
    with_masks = {r.image_id for r in dataset.records if r.supervision.masks}
    hw = {r.image_id: (r.height, r.width) for r in dataset.records}
    n = len(names)
    rows = [{"objects": 0, "missed": 0, "never_detected": 0, "found": 0, "false_positives": 0,
             **{k: 0 for k in FP_KINDS}, "objects_by_size": {s: 0 for s, *_ in SIZES},
             "missed_by_size": {s: 0 for s, *_ in SIZES}, "_mask_ious": []} for _ in range(n)]
    dets_of, gts_of = defaultdict(list), defaultdict(list)
    for a in dt_anns.values():
        if cut_score(a) >= score_threshold:  # the detections the runtime keeps
            dets_of[a["image_id"]].append(a)
    for a in gt.anns.values():
        gts_of[a["image_id"]].append(a)
    found_by = {}  # gt id -> kept detection that found it
    per_image: dict[int, ImageErrors] = {}
    for iid in {*gt.getImgIds()}:
        dets = sorted(dets_of.get(iid, []), key=lambda a: -a["score"])
        gts = [a for a in gts_of.get(iid, []) if not a["iscrowd"]]
        img = per_image[iid] = ImageErrors(iid)
        ious = (mask_utils.iou([d["bbox"] for d in dets], [g["bbox"] for g in gts], [0] * len(gts))
                if dets and gts else np.zeros((len(dets), len(gts))))
        gcat = np.array([g["category_id"] for g in gts], np.int64)
        for i, d in enumerate(dets):
            k = d["category_id"] - 1
            g = matched.get(d["id"])
            if g is not None and gt.anns[g]["iscrowd"]:
                continue  # on an ignored region: neither found nor false
            if g is not None:
                kind = "tp"
                found_by[g] = d
            else:
                same = ious[i][gcat == d["category_id"]] if len(gts) else np.zeros(0)
                other = ious[i][gcat != d["category_id"]] if len(gts) else np.zeros(0)
                best_same = same.max() if len(same) else 0.0
                if best_same >= MATCH_IOU:
                    kind = "duplicate"
                elif len(other) and other.max() >= MATCH_IOU:
                    kind = "wrong_class"
                elif best_same >= BACKGROUND_IOU:
                    kind = "poorly_localised"
                else:
                    kind = "background"
                if 0 <= k < n:
                    rows[k]["false_positives"] += 1
                    rows[k][kind] += 1
            img.detections.append((k, float(d["score"]), _xyxy(d["bbox"]), d.get("mask"), kind))
        matched_gts = set(matched.values())
        for g in gts_of.get(iid, []):
            k = g["category_id"] - 1
            if g["iscrowd"]:
                img.objects.append((k, _xyxy(g["bbox"]), "ignored"))
                continue
            size = next(s for s, lo, hi in SIZES if lo <= g["area"] < hi)
            row = rows[k]
            row["objects"] += 1
            row["objects_by_size"][size] += 1
            row["never_detected"] += g["id"] not in matched_gts
            d = found_by.get(g["id"])
            if d is None:
                row["missed"] += 1
                row["missed_by_size"][size] += 1
            else:
                row["found"] += 1
                if iid in with_masks and d.get("mask") is not None and g.get("segmentation") is not None:
                    h, w = hw[iid]
                    gm = to_rle(g["segmentation"], h, w)
                    row["_mask_ious"].append(float(mask_utils.iou([d["mask"]], [gm], [0])[0, 0]))
            img.objects.append((k, _xyxy(g["bbox"]), "found" if d is not None else "missed"))

    prec = np.asarray(box_ev.eval["precision"]) if box_ev is not None else None  # (T, R, K, A, M)
    mprec = np.asarray(mask_ev.eval["precision"]) if mask_ev is not None and mask_ev.eval else None
    all_ious = [v for r in rows for v in r["_mask_ious"]]
    per_class = {}
    for k, name in enumerate(names):
        row = rows[k]
        ious = row.pop("_mask_ious")
        row.update(_ap_figures(prec if prec is not None and k < prec.shape[2] else None, k, row))
        row["mask_ap50"] = _ap(mprec[0, :, k, 0, -1]) if mprec is not None and k < mprec.shape[2] else None
        row["mask_iou_found"] = float(np.mean(ious)) if ious else None
        per_class[name] = row
    total = {key: sum(r[key] for r in per_class.values())
             for key in ("objects", "missed", "never_detected", "found", "false_positives", *FP_KINDS)}
    total["objects_by_size"] = {s: sum(r["objects_by_size"][s] for r in per_class.values()) for s, *_ in SIZES}
    total["missed_by_size"] = {s: sum(r["missed_by_size"][s] for r in per_class.values()) for s, *_ in SIZES}
    stats = np.asarray(box_ev.stats) if box_ev is not None else np.array(  # no detection at all: AP 0
        [0.0] * 3 + [0.0 if total["objects_by_size"][s] else -1.0 for s, *_ in SIZES])
    total.update(box_ap50=float(stats[1]), box_ap75=float(stats[2]),
                 **{f"box_ap_{s}": (None if stats[3 + i] < 0 else float(stats[3 + i])) for i, (s, *_) in enumerate(SIZES)})
    total["mask_ap50"] = float(mask_ev.stats[1]) if mprec is not None else None
    total["mask_iou_found"] = float(np.mean(all_ious)) if all_ious else None
    return {"score_threshold": score_threshold, "iou_threshold": MATCH_IOU, "per_class": per_class,
            "total": total}, per_image


def _ap_figures(prec: np.ndarray | None, k: int, row: dict) -> dict:
    if prec is None:  # no detection: AP 0 where there are objects
        none = 0.0 if row["objects"] else None
        return {"box_ap50": none, "box_ap75": none,
                **{f"box_ap_{s}": 0.0 if row["objects_by_size"][s] else None for s, *_ in SIZES}}
    return {"box_ap50": _ap(prec[0, :, k, 0, -1]), "box_ap75": _ap(prec[5, :, k, 0, -1]),
            **{f"box_ap_{s}": _ap(prec[:, :, k, 1 + i, -1]) for i, (s, *_) in enumerate(SIZES)}}


def worst_images(per_image: dict[int, ImageErrors], count: int) -> list[ImageErrors]:
    """The ``count`` images with the most errors (missed objects plus false positives), worst first;
    images without any error are left out."""
    bad = [e for e in per_image.values() if e.errors]
    return sorted(bad, key=lambda e: (-e.errors, -e.missed, e.image_id))[:count]


def breakdown_table(doc: dict, indent: str = "") -> str:
    """The breakdown as aligned text lines (see the module docstring for the columns)."""
    rows = {**doc["per_class"], "all": doc["total"]} if len(doc["per_class"]) > 1 else dict(doc["per_class"])
    width = max([len(n) for n in rows] + [5])
    cols = (("objects", 9), ("S/M/L", 12), ("missed", 8), ("S/M/L", 12), ("dup", 5), ("loc", 5), ("cls", 5),
            ("bkg", 5), ("AP50", 6), ("AP75", 6), ("APs", 6), ("APm", 6), ("APl", 6), ("maskAP50", 9),
            ("maskIoU", 8))

    def f(v):
        return "-" if v is None else f"{v:.2f}"

    def sml(d):
        return "/".join(str(d[s]) for s, *_ in SIZES)

    def line(name, values):
        return f"{indent}{name:<{width}}" + "".join(f" {v:>{w - 1}}" for v, (_, w) in zip(values, cols))

    lines = [f"{indent}errors at IoU {doc['iou_threshold']:g} among detections of class probability >= "
             f"{doc['score_threshold']:.2f} (objects and missed also by size: small/medium/large):",
             line("class", [c for c, _ in cols])]
    for n, r in rows.items():
        lines.append(line(n, [r["objects"], sml(r["objects_by_size"]), r["missed"], sml(r["missed_by_size"]),
                              r["duplicate"], r["poorly_localised"], r["wrong_class"], r["background"],
                              f(r["box_ap50"]), f(r["box_ap75"]), f(r["box_ap_small"]), f(r["box_ap_medium"]),
                              f(r["box_ap_large"]), f(r["mask_ap50"]), f(r["mask_iou_found"])]))
    lines.append(f"{indent}(dup: a second detection of a found object; loc: IoU 0.1-0.5 with an object of its class; "
                 "cls: on an object of another class;")
    lines.append(f"{indent} bkg: on nothing; APs/m/l: COCO's areas < 32², < 96², beyond; maskIoU: mean mask IoU of "
                 "the objects found)")
    return "\n".join(lines)


# ---------------------------------------------------------------- preview

PREVIEW_MAX_SIDE = 1024
LABEL = (255, 255, 255)
IGNORED = (150, 150, 150)
_FONT, _SCALE = 0, 0.45  # cv2.FONT_HERSHEY_SIMPLEX


def _tag(img: np.ndarray, text: str, x: int, y: int) -> None:
    """White text on a black box with its top-left corner at (x, y), kept inside the image."""
    import cv2

    (tw, th), base = cv2.getTextSize(text, _FONT, _SCALE, 1)
    x = max(0, min(x, img.shape[1] - tw - 2))
    y = max(0, min(y, img.shape[0] - th - base - 2))
    cv2.rectangle(img, (x, y), (x + tw + 2, y + th + base + 2), (0, 0, 0), -1)
    cv2.putText(img, text, (x + 1, y + th + 1), _FONT, _SCALE, LABEL, 1, cv2.LINE_AA)


def _caption(parts: list[str], width: int) -> np.ndarray:
    """A black bar holding ``parts`` (words) joined by spaces, wrapped to ``width``."""
    import cv2

    lines = [""]
    for p in parts:
        trial = f"{lines[-1]} {p}".strip()
        if lines[-1] and cv2.getTextSize(trial, _FONT, _SCALE, 1)[0][0] > width - 8:
            lines.append(p)
        else:
            lines[-1] = trial
    bar = np.zeros((18 * len(lines) + 4, width, 3), np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(bar, line, (4, 16 + 18 * i), _FONT, _SCALE, LABEL, 1, cv2.LINE_AA)
    return bar


@dataclass(frozen=True)
class _Shown:
    """A detection as :func:`runtime.io.draw.annotate` draws it."""

    category: int
    label: str
    score: float
    box: tuple
    rle: dict | None
    scale: float

    @property
    def has_mask(self) -> bool:
        return self.rle is not None

    def mask(self) -> np.ndarray:
        import cv2

        m = mask_utils.decode(self.rle).astype(np.uint8)
        if self.scale != 1.0:
            m = cv2.resize(m, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_NEAREST)
        return m.astype(bool)


@dataclass(frozen=True)
class _Frame:
    detections: tuple
    semantic: None = None


def write_error_preview(dataset: Dataset, per_image: dict[int, ImageErrors], names: tuple[str, ...], out: Path | str,
                        count: int = 16, score_threshold: float = OPERATING_SCORE) -> list[Path]:
    """Draw the detections against the labels on the ``count`` worst images, as JPEGs in ``out``.

    Detections are drawn as ``run`` draws them (class colour, score, mask), each false positive tagged
    with its kind; the labels are outlined in white (missed ones thick, tagged "missed"), ignored regions in grey.

    Returns:
        The files written, worst image first (``01_<stem>.jpg``...).
    """
    import cv2

    from ocrnet_edge.runtime.errors import OutputError
    from ocrnet_edge.runtime.io.draw import annotate, drawable

    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{out}: cannot create the preview folder ({e.strerror})") from None
    recs = {r.image_id: r for r in dataset.records}
    written = []
    for rank, e in enumerate(worst_images(per_image, count), 1):
        rec = recs[e.image_id]
        img = rec.image()
        s = min(1.0, PREVIEW_MAX_SIDE / max(img.shape[:2]))
        if s < 1.0:
            img = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        shown = tuple(_Shown(k, names[k] if 0 <= k < len(names) else str(k), score, tuple(v * s for v in box), rle, s)
                      for k, score, box, rle, _ in e.detections)
        img = annotate(img, _Frame(shown), semantic=False)
        for k, box, state in e.objects:  # labels in white (outlined in black), whatever the class colours
            x0, y0, x1, y1 = (int(round(v * s)) for v in box)
            if state == "missed":
                cv2.rectangle(img, (x0, y0), (x1, y1), (0, 0, 0), 4)
            cv2.rectangle(img, (x0, y0), (x1, y1), IGNORED if state == "ignored" else LABEL, 2 if state == "missed" else 1)
            if state == "missed":
                _tag(img, f"missed {drawable(names[k]) if 0 <= k < len(names) else ''}", x0, y1 + 1)
        for det, d in zip(e.detections, shown):
            if det[-1] != "tp":
                _tag(img, f"FP {det[-1].replace('_', ' ')}", int(round(d.box[0])), int(round(d.box[3])) + 1)
        kinds = [f"{kind.replace('_', ' ')} {n}" for kind in FP_KINDS
                 if (n := sum(1 for *_, k in e.detections if k == kind))]
        caption = (f"missed {e.missed}, false positives {e.false_positives} ({', '.join(kinds) or 'none'}) "
                   f"at score >= {score_threshold:.2f}; labels in white")
        img = np.vstack([_caption(caption.split(" "), img.shape[1]), img])
        dst = out / f"{rank:02d}_{rec.path.stem}.jpg"
        tmp = dst.with_name(dst.stem + ".partial.jpg")
        if not cv2.imwrite(str(tmp), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]):
            raise OutputError(f"{dst}: cannot write")
        tmp.replace(dst)
        written.append(dst)
    return written

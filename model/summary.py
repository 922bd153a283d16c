"""``ocrnet-edge dataset``: what a dataset holds and what is wrong with it, before any training.

The summary names the format, the splits, the classes with their instance counts, the object size
distribution (COCO's small / medium / large at the model's input: by default the one ``train`` takes), the share
of boxes each detection level learns there (and, for a set with boxes alone, the head ``train`` gives it),
images without labels, what each task is taught by, and every problem found, each naming its file (and line).
``--preview OUT`` draws the labels over a sample of images, as training will see them.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from ocrnet_edge.runtime.contract import InputSize, input_wh, size_json, size_text
from ocrnet_edge.runtime.errors import OutputError
from ocrnet_edge.runtime.io.draw import colour, drawable

from .config import ModelConfig, aspect_input_size
from .data import IGNORE, Dataset, Placement, render, truncated_jpeg, truncated_text
from .formats import available_splits, read_any
from .targets import box_set_assigner, box_set_det_head, box_set_side, level_shares

SIZE_BINS = ((0, 32), (32, 96), (96, 1 << 30))
SIZE_NAMES = ("small (< 32 px)", "medium (32-96 px)", "large (> 96 px)")


def summarize(path: Path | str, input_size: InputSize | None = None) -> dict:
    """Read every split of a dataset (problems collected, not raised) and describe it.

    Args:
        path: Dataset folder or file.
        input_size: Input the object sizes are given at; ``None``: the one ``train`` takes without
            ``--size`` (320, or the photos' shape when they share an aspect), found on the first split.

    Returns:
        A JSON-ready dict: ``format``, ``splits`` (per split: images, classes, sizes, supervision,
        unlabelled images, notes) and ``problems`` (strings naming the file).
    """
    path = Path(path)
    splits = available_splits(path)
    out: dict = {"path": str(path), "splits": {}, "problems": []}
    for split in splits:
        ds = read_any(path, split=split)
        out["format"] = ds.format
        out["thing_classes"] = list(ds.thing_classes)
        out["stuff_classes"] = list(ds.stuff_classes)
        if input_size is None:  # the training split comes first: sizes at the input train would take
            input_size, _ = training_input(ds)
        out["input_size"] = size_json(input_size)
        out["splits"][split] = describe(ds, input_size)
        out["problems"] += [str(p) for p in ds.problems]
    return out


def training_input(ds: Dataset) -> tuple[InputSize, str]:
    """The input ``train`` takes for these images without ``--size`` or a model option, and why
    (:func:`~model.config.aspect_input_size` at the default side, or at the larger side a set of boxes alone gets
    with the decoupled head: :func:`~model.targets.box_set_side`, as ``model.train.box_set_input``)."""
    widths, heights = [r.width for r in ds.records], [r.height for r in ds.records]
    cfg = ModelConfig()
    size, why = aspect_input_size(widths, heights, cfg.input_size)
    boxes_alone = ds.supports("boxes") and not ds.supports("masks") and not ds.supports("semantic")
    if boxes_alone and any(len(r.boxes) for r in ds.records):
        side = box_set_side(cfg.input_size, box_set_det_head(level_shares(ds.records, size, cfg.strides)))
        if side != cfg.input_size:
            size, why = aspect_input_size(widths, heights, side)
            why = f"boxes alone, mostly large: the decoupled head at {side}; {why}"
    return size, why


def describe(ds: Dataset, input_size: InputSize = 320) -> dict:
    """Counts of one split (see :func:`summarize`)."""
    inst = Counter()
    sizes = Counter()
    crowd = 0
    unlabelled = []
    in_w, in_h = input_wh(input_size)
    for r in ds.records:
        for c in r.categories.tolist():
            inst[ds.thing_classes[c]] += 1
        crowd += len(r.crowd)
        if len(r.boxes):
            # Object side as the model sees it: sqrt(area) after the letterbox to the input size.
            s = min(in_w / r.width, in_h / r.height)
            side = np.sqrt(np.prod(r.boxes[:, 2:] - r.boxes[:, :2], axis=1)) * s
            for (lo, hi), name in zip(SIZE_BINS, SIZE_NAMES):
                sizes[name] += int(((side >= lo) & (side < hi)).sum())
        if not len(r.categories) and r.semantic_path is None and not r.stuff:
            unlabelled.append(str(r.path))
    stuff_images = Counter()
    for r in ds.records:
        for sid in {sid for sid, _ in r.stuff}:
            stuff_images[ds.semantic_classes[sid]] += 1
    pixels = label_map_pixels(ds) if ds.format == "labelmap" else None
    sup = {t: ds.supports(t) for t in ("boxes", "masks", "semantic")}
    truncated = [str(r.path) for r in ds.records if truncated_jpeg(r.path)]
    size, why = training_input(ds)
    shape = {"size": size_json(size), "why": why}
    strides = ModelConfig().strides
    levels = level_shares(ds.records, input_size, strides) if any(len(r.boxes) for r in ds.records) else None
    return {
        "images": len(ds),
        "instances": {n: inst.get(n, 0) for n in ds.thing_classes},
        "crowd_regions": crowd,
        "region_classes_in_images": {n: stuff_images.get(n, 0) for n in ds.stuff_classes} if ds.format != "labelmap"
        else None,
        "region_pixels": pixels,
        "object_sizes_at_input": {n: sizes.get(n, 0) for n in SIZE_NAMES},
        "boxes_per_level": None if levels is None else {str(s): round(float(v), 4) for s, v in zip(sorted(strides), levels)},
        "input_size": size_json(input_size),
        "training_input": shape,
        "truncated_jpegs": truncated,
        "images_without_labels": len(unlabelled),
        "first_images_without_labels": unlabelled[:3],
        "supervision": sup,
        "teaches": {
            "detection": f"{sup['boxes']} images with boxes" if ds.thing_classes else "nothing (no thing classes)",
            "instance masks": f"{sup['masks']} images with masks" if ds.thing_classes else "nothing (no thing classes)",
            "semantic map": f"{sup['semantic']} images with a full semantic map",
        },
        "notes": list(ds.notes),
    }


RARE_SHARE = 0.01
"""A region class under this share of a split's labelled pixels is named as rare by ``dataset``: thin and small
classes (poles, signs) are the ones a semantic map loses first, so their IoU in ``eval`` is the one to watch."""


def semantic_pixel_counts(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Per semantic class, over the images whose semantic map is taught: its labelled pixels (255 and void left
    out) and the number of images showing it."""
    n = len(ds.semantic_classes)
    counts = np.zeros(n, np.int64)
    images = np.zeros(n, np.int64)
    for r in ds.records:
        if not r.supervision.semantic:
            continue
        sem = r.semantic()
        c = np.bincount(sem[sem != IGNORE].ravel(), minlength=n)[:n]
        counts += c
        images += c > 0
    return counts, images


def label_map_pixels(ds: Dataset) -> dict:
    """Per semantic class of a label-map split: its share of the labelled pixels (255 and void left out) and the
    number of images showing it."""
    names = ds.semantic_classes
    counts, images = semantic_pixel_counts(ds)
    total = max(1, int(counts.sum()))
    return {n: {"share": round(float(counts[i]) / total, 5), "images": int(images[i])}
            for i, n in enumerate(names) if n != "background" or counts[i]}


def format_summary(doc: dict) -> str:
    """The summary as the lines a person reads."""
    lines = [f"{doc['path']}: {doc.get('format', '?')} dataset"]
    things, stuff = doc.get("thing_classes", []), doc.get("stuff_classes", [])
    lines.append(f"thing classes ({len(things)}): {', '.join(things) or '-'}")
    if stuff:
        lines.append(f"region classes ({len(stuff)}): {', '.join(stuff)}")
    for split, d in doc["splits"].items():
        lines.append(f"\n[{split}] {d['images']} images")
        if things:
            width = max(len(n) for n in things)
            lines.append("  instances per class:")
            for n, c in d["instances"].items():
                lines.append(f"    {n:<{width}}  {c}")
            sizes = ", ".join(f"{n}: {c}" for n, c in d["object_sizes_at_input"].items())
            lines.append(f"  object sizes at a {size_text(d['input_size'])} px input: {sizes}")
        first = split == next(iter(doc["splits"]))  # the training split comes first
        if d.get("boxes_per_level"):
            levels = d["boxes_per_level"]
            line = ("  boxes per detection level at that input: "
                    + ", ".join(f"stride {s} {v:.0%}" for s, v in levels.items()))
            sup = d["supervision"]
            if first and sup["boxes"] and not sup["masks"] and not sup["semantic"]:
                head = box_set_det_head(list(levels.values()))
                assign = " with task-aligned label assignment" if box_set_assigner(head) == "tal" else ""
                line += (f"; boxes alone, so train gives the {head} detection head{assign} (decoupled where the "
                         "coarsest level takes more than the finest; --det-head chooses)")
            lines.append(line)
        if d.get("training_input") and first:
            t = d["training_input"]
            lines.append(f"  input train takes without --size: {size_text(t['size'])} ({t['why']})")
        if d.get("region_classes_in_images"):
            lines.append("  images showing each region class: "
                         + ", ".join(f"{n}: {c}" for n, c in d["region_classes_in_images"].items()))
        if d.get("region_pixels"):
            lines.append("  labelled pixels per class (share, images): "
                         + ", ".join(f"{n} {v['share']:.1%} ({v['images']})" for n, v in d["region_pixels"].items()))
            absent = [n for n, v in d["region_pixels"].items() if not v["images"]]
            rare = [n for n, v in d["region_pixels"].items() if v["images"] and v["share"] < RARE_SHARE]
            if absent:
                lines.append(f"  classes in no image of this split: {', '.join(absent)}")
            if rare:
                lines.append(f"  rare classes (under {RARE_SHARE:.0%} of the pixels): {', '.join(rare)}; thin and small "
                             "classes are the first a semantic map loses: watch their IoU in eval")
        if d["crowd_regions"]:
            kind = "difficult objects" if doc.get("format") == "voc" else "crowd regions"
            lines.append(f"  {kind} (ignored in training and scoring): {d['crowd_regions']}")
        if d.get("truncated_jpegs"):
            lines.append("  " + truncated_text(d["truncated_jpegs"]))
        lines.append(f"  images without labels: {d['images_without_labels']}"
                     + (" (taught as: nothing to detect here)" if d["images_without_labels"] and things else ""))
        lines.append("  teaches: " + "; ".join(f"{k}: {v}" for k, v in d["teaches"].items()))
        for n in d["notes"]:
            lines.append(f"  note: {n}")
    probs = doc["problems"]
    lines.append(f"\nproblems: {len(probs)}" + (" (train refuses the dataset until they are fixed, or skips the "
                                                 "files with --skip-bad)" if probs else ""))
    lines += [f"  {p}" for p in probs[:50]]
    if len(probs) > 50:
        lines.append(f"  ... and {len(probs) - 50} more (--json FILE lists all)")
    return "\n".join(lines)


def write_preview(path: Path | str, out: Path | str, count: int = 16, input_size: InputSize = 320,
                  seed: int = 0) -> list[Path]:
    """Draw the labels over ``count`` sampled images of the training split, letterboxed to the input size as
    training sees them (boxes with class names, masks tinted, label maps blended, ignored areas hatched).

    Returns:
        The written PNG files.
    """

    path, out = Path(path), Path(out)
    split = available_splits(path)[0]
    ds = read_any(path, split=split)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{out}: cannot create the preview folder ({e.strerror})") from None
    bad = {p.file for p in ds.problems}
    recs = [r for r in ds.records if r.path not in bad and r.semantic_path not in bad]
    pick = np.random.default_rng(seed).permutation(len(recs))[:count]
    written = []
    for i in sorted(pick.tolist()):
        r = recs[i]
        rend = render(r, Placement.letterbox(r.width, r.height, input_size))
        img = rend.image.copy()
        sem = rend.semantic
        fg = (sem > 0) & (sem != IGNORE)
        if fg.any():
            lut = np.array([colour(k) for k in range(256)], np.uint8)
            tint = lut[sem]
            img[fg] = (0.55 * img[fg] + 0.45 * tint[fg]).astype(np.uint8)
        if r.supervision.semantic:  # ignored pixels (crowd, objects without a mask) hatched
            hatch = (sem == IGNORE) & (np.add.outer(*(np.arange(n) for n in sem.shape)) % 8 == 0)
            img[hatch & (rend.image != 114).any(axis=2)] = (255, 255, 255)
        kinds = "+".join(r.supervision.tasks()) or "no labels"
        cv2.putText(img, kinds, (3, img.shape[0] - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
        for c, b, m, ok in zip(rend.categories, rend.boxes, rend.masks, rend.mask_valid):
            col = colour(int(c) + 1)
            if ok:
                img[m] = (0.5 * img[m] + 0.5 * np.array(col)).astype(np.uint8)
            x0, y0, x1, y1 = (int(round(v)) for v in b)
            cv2.rectangle(img, (x0, y0), (x1, y1), col, 1)
            cv2.putText(img, drawable(ds.thing_classes[int(c)]) or f"class {int(c)}", (x0 + 1, max(10, y0 - 2)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.35, col, 1, cv2.LINE_AA)
        dst = out / f"{i:05d}_{r.path.stem}.png"
        tmp = dst.with_name(dst.stem + ".partial.png")
        cv2.imwrite(str(tmp), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        tmp.replace(dst)
        written.append(dst)
    return written

"""Decoding: quantized thresholds, class-aware NMS, caps, masks and semantic maps."""

from __future__ import annotations

import numpy as np
import pytest

from ocrnet_edge.runtime.contract import num_locations
from ocrnet_edge.runtime.decode import DecodeOptions
from ocrnet_edge.runtime.decode.detect import anchor_points, decode_detections
from ocrnet_edge.runtime.decode.frame import decode_outputs
from ocrnet_edge.runtime.decode.instance import MaskCrop, assemble_masks, mask_confidence, mask_to_frame
from ocrnet_edge.runtime.preprocess import plan
from ocrnet_edge.runtime.quant import Quant

SIZE = 128
N = num_locations(SIZE)


def _scores_with(locs_classes_scores):
    s = np.zeros((N, 4), np.float32)
    for loc, cls, sc in locs_classes_scores:
        s[loc, cls] = sc
    return s


def _boxes(value=1.0):
    return np.full((N, 4), value, np.float32)


def test_quantized_threshold_matches_float():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, (N, 4)).astype(np.float32) ** 8
    quant = Quant(scale=1 / 255, zero_point=-128)
    q = np.clip(np.round(scores / quant.scale) + quant.zero_point, -128, 127).astype(np.int8)
    opts = DecodeOptions(score_threshold=0.3, max_detections=1000, pre_nms_top_k=5000, iou_threshold=1.0)
    a = decode_detections(quant.dequantize(q), _boxes(), SIZE, opts)
    b = decode_detections(q, _boxes(), SIZE, opts, scores_quant=quant)
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(np.sort(a.scores), np.sort(b.scores), atol=1e-6)


def test_nms_is_class_aware_and_capped():
    centres, _ = anchor_points(SIZE)
    near = int(np.argmin(np.abs(centres[:, 0] - 36) + np.abs(centres[:, 1] - 36)))
    neighbour = near + 1
    scores = _scores_with([(near, 0, 0.9), (neighbour, 0, 0.8), (neighbour, 1, 0.7)])
    det = decode_detections(scores, _boxes(2.0), SIZE, DecodeOptions(iou_threshold=0.5))
    # The same-class neighbour overlaps and goes; the other class at the same place stays.
    assert sorted(det.classes.tolist()) == [0, 1]
    assert det.scores[0] == pytest.approx(0.9)
    many = _scores_with([(i, 0, 0.5 + i / (4 * N)) for i in range(0, N, 7)])
    capped = decode_detections(many, _boxes(0.3), SIZE, DecodeOptions(max_detections=5))
    assert len(capped) == 5 and np.all(np.diff(capped.scores) <= 0)


def test_boxes_stay_inside_input():
    scores = _scores_with([(0, 0, 0.9), (N - 1, 3, 0.9)])
    det = decode_detections(scores, _boxes(50.0), SIZE)
    assert (det.boxes >= 0).all() and (det.boxes <= SIZE).all()


def test_wrong_location_count_is_refused():
    with pytest.raises(ValueError, match="Expected 336 locations"):
        decode_detections(np.zeros((10, 4)), np.zeros((10, 4)), SIZE)


def test_masks_only_for_kept_detections_and_cropped():
    g = SIZE // 4
    protos = np.zeros((1, g, g, 2), np.float32)
    protos[0, :, :, 0] = 5.0  # everywhere "object"
    coeffs = np.zeros((1, N, 2), np.float32)
    coeffs[0, :, 0] = 1.0
    boxes = np.array([[16, 16, 48, 40]], np.float32)
    crops = assemble_masks(coeffs, protos, np.array([3]), boxes, 4)
    assert len(crops) == 1 and crops[0].logits.shape[0] < g  # only the box's cells are computed
    t = plan(SIZE, SIZE, SIZE)
    m = mask_to_frame(crops[0], boxes[0], t, 4)
    ys, xs = np.nonzero(m)
    assert xs.min() >= 16 and xs.max() < 48 and ys.min() >= 16 and ys.max() < 40
    assert m.sum() == 32 * 24


def test_decode_outputs_maps_to_letterboxed_frame():
    # A 256x128 frame letterboxed into 128: scale 0.5, 32 rows of padding on top.
    t = plan(256, 128, SIZE)
    centres, _ = anchor_points(SIZE)
    loc = int(np.argmin(np.abs(centres[:, 0] - 68) + np.abs(centres[:, 1] - 68)))
    out = {
        "det_scores": _scores_with([(loc, 2, 0.95)])[None],
        "det_boxes": _boxes(1.0)[None],
        "seg_logits": np.zeros((1, 32, 32, 5), np.float32),
    }
    res = decode_outputs(out, t)
    (d,) = res.detections
    x0, y0, x1, y1 = d.box
    assert d.label == "rectangle"
    assert (x0 + x1) / 2 == pytest.approx(136, abs=1e-3) and (y0 + y1) / 2 == pytest.approx(72, abs=1e-3)
    assert res.semantic.shape == (32, 32)
    assert res.semantic_frame().shape == (128, 256)
    assert d.mask() is None


def test_cropped_assembly_equals_full_map_inside_the_box():
    import cv2

    rng = np.random.default_rng(7)
    g, k = SIZE // 4, 6
    protos = rng.normal(size=(1, g, g, k)).astype(np.float32)
    coeffs = rng.normal(size=(1, N, k)).astype(np.float32)
    boxes = np.array([[10.3, 20.7, 70.2, 90.9], [0, 0, 128, 128], [100, 5, 127.5, 30]], np.float32)
    locs = np.array([5, 17, 200])
    t = plan(200, 160, SIZE)  # letterboxed, non-square frame
    frame_boxes = t.boxes_to_frame(boxes)
    for crop, loc, fb in zip(assemble_masks(coeffs, protos, locs, boxes, 4), locs, frame_boxes):
        full = protos[0] @ coeffs[0, loc]
        ref = cv2.warpAffine(full, t.frame_to_grid(4), (200, 160), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REPLICATE) > 0
        x0, y0 = int(np.floor(fb[0])), int(np.floor(fb[1]))
        x1, y1 = int(np.ceil(fb[2])), int(np.ceil(fb[3]))
        ours = mask_to_frame(crop, fb, t, 4)
        np.testing.assert_array_equal(ours[y0:y1, x0:x1], ref[y0:y1, x0:x1])
        assert not ours[:y0].any() and not ours[y1:].any() and not ours[:, :x0].any() and not ours[:, x1:].any()


def test_mask_confidence_is_the_mean_foreground_probability_inside_the_box():
    crisp = np.full((6, 6), -8.0, np.float32)
    crisp[1:5, 1:5] = 8.0
    soft = np.where(crisp > 0, 0.5, -0.5).astype(np.float32)
    box = np.array([[4, 4, 20, 20]], np.float32)  # cells 1..4 of a crop starting at cell 0, stride 4
    (c_crisp,) = mask_confidence([MaskCrop(0, 0, crisp)], box, 4)
    (c_soft,) = mask_confidence([MaskCrop(0, 0, soft)], box, 4)
    assert c_crisp == pytest.approx(1 / (1 + np.exp(-8.0)), abs=1e-6)
    assert c_soft == pytest.approx(1 / (1 + np.exp(-0.5)), abs=1e-6)
    # Cells outside the box do not count: a confident margin cannot lift a soft mask.
    margin = soft.copy()
    margin[0, :] = 8.0
    assert mask_confidence([MaskCrop(0, 0, margin)], box, 4)[0] == pytest.approx(c_soft, abs=1e-6)
    # An empty mask has none; a box thinner than a cell uses the crop's cells.
    assert mask_confidence([MaskCrop(0, 0, -crisp - 20)], box, 4)[0] == 0.0
    both = mask_confidence([MaskCrop(0, 0, -crisp - 20), MaskCrop(0, 0, soft), MaskCrop(0, 0, -crisp - 20)],
                           np.repeat(box, 3, 0), 4)
    np.testing.assert_allclose(both, [0.0, c_soft, 0.0], atol=1e-6)  # one call for many, empty ones anywhere
    # Logits far below 0 (an int8 mask's background) neither overflow nor warn.
    with np.errstate(over="raise", invalid="raise"):
        assert mask_confidence([MaskCrop(0, 0, crisp * 40)], box, 4)[0] == pytest.approx(1.0)
    thin = np.array([[5, 5, 5.5, 19]], np.float32)
    assert mask_confidence([MaskCrop(0, 0, crisp)], thin, 4)[0] > 0.99


def test_masks_rescore_detections_but_the_threshold_applies_to_the_class_probability():
    """Two people at class probability 0.9 and 0.5, the first with a blurred mask and the second with a crisp
    one: the crisp one ranks first, each keeps its class probability, and the blurred one, whose product falls
    under the threshold, stays (the threshold is on the class probability)."""
    g = SIZE // 4
    centres, _ = anchor_points(SIZE)
    a = int(np.argmin(np.abs(centres[:, 0] - 36) + np.abs(centres[:, 1] - 36)))
    b = int(np.argmin(np.abs(centres[:, 0] - 92) + np.abs(centres[:, 1] - 92)))
    protos = np.zeros((1, g, g, 2), np.float32)
    protos[0, :16, :16, 0] = 0.1  # weak evidence around the first object
    protos[0, 16:, 16:, 1] = 6.0  # strong around the second
    coeffs = np.zeros((1, N, 2), np.float32)
    coeffs[0, a, 0] = coeffs[0, b, 1] = 1.0
    out = {"det_scores": _scores_with([(a, 0, 0.9), (b, 0, 0.5)])[None], "det_boxes": _boxes(1.0)[None],
           "det_coeffs": coeffs, "mask_protos": protos}
    res = decode_outputs(out, plan(SIZE, SIZE, SIZE), options=DecodeOptions(score_threshold=0.48))
    first, second = res.detections
    assert first.class_score == pytest.approx(0.5) and second.class_score == pytest.approx(0.9)
    assert first.score == pytest.approx(0.5 / (1 + np.exp(-6.0)), abs=1e-5)
    assert second.score == pytest.approx(0.9 / (1 + np.exp(-0.1)), abs=1e-5)
    assert second.score < 0.48 < second.class_probability  # kept: the cut is on the class probability
    # Without masks the score is the class probability.
    plain = decode_outputs({k: out[k] for k in ("det_scores", "det_boxes")}, plan(SIZE, SIZE, SIZE))
    assert [d.score for d in plain.detections] == pytest.approx([0.9, 0.5])
    assert [d.class_probability for d in plain.detections] == pytest.approx([0.9, 0.5])

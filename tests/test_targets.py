"""FCOS-style assignment: every object is learned, positives lie inside their object."""

from __future__ import annotations

import numpy as np

from ocrnet_edge.model.targets import assign, image_targets
from ocrnet_edge.runtime.contract import DEFAULT_STRIDES
from ocrnet_edge.runtime.decode.detect import anchor_points
from ocrnet_edge.runtime.io.scenes import SceneOptions, draw_scene


def test_every_object_gets_a_location_inside_it():
    for i in range(20):
        scene = draw_scene((9, i))
        boxes = np.array([inst.box for inst in scene.instances], np.float32).reshape(-1, 4)
        owner = assign(boxes, 320, DEFAULT_STRIDES)
        assert set(owner[owner >= 0]) == set(range(len(boxes)))
        centres, strides = anchor_points(320)
        for loc in np.nonzero(owner >= 0)[0]:
            b = boxes[owner[loc]]
            x, y = centres[loc]
            # The fallback for slivers may sit up to half a stride outside.
            assert b[0] - strides[loc] <= x <= b[2] + strides[loc] and b[1] - strides[loc] <= y <= b[3] + strides[loc]


def test_large_objects_go_to_coarse_levels():
    boxes = np.array([[10, 10, 30, 30], [20, 20, 300, 300]], np.float32)
    owner = assign(boxes, 320, DEFAULT_STRIDES)
    _, strides = anchor_points(320)
    assert set(strides[owner == 0]) == {8}
    assert set(strides[owner == 1]) == {32}


def test_image_targets_shapes():
    opts = SceneOptions()
    scene = draw_scene(1, opts)
    boxes = np.array([i.box for i in scene.instances], np.float32)
    cats = np.array([i.category for i in scene.instances])
    masks = np.stack([i.mask for i in scene.instances])
    t = image_targets(boxes, cats, masks, scene.semantic, 320, DEFAULT_STRIDES, 16, np.random.default_rng(0))
    assert t["cls_label"].shape == (2100,) and t["box_target"].shape == (2100, 4)
    assert t["mask_target"].shape == (16, 80, 80) and t["semantic"].shape == (320, 320)
    n = int(t["mask_weight"].sum())
    assert n == min(16, int((t["cls_label"] >= 0).sum()))
    assert (t["mask_target"][:n].reshape(n, -1).max(axis=1) > 0).all()

"""The procedural scene generator: determinism and exact, consistent labels."""

from __future__ import annotations

import numpy as np
import pytest

from ocrnet_edge.runtime.contract import THING_CLASSES
from ocrnet_edge.runtime.io.scenes import SceneOptions, draw_scene

SEEDS = [(5, i) for i in range(24)]


def test_same_seed_same_scene():
    a, b = draw_scene((1, 2)), draw_scene((1, 2))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.semantic, b.semantic)
    assert [i.box for i in a.instances] == [i.box for i in b.instances]
    assert not np.array_equal(a.image, draw_scene((1, 3)).image)


@pytest.mark.parametrize("seed", SEEDS)
def test_labels_are_consistent(seed):
    opts = SceneOptions()
    scene = draw_scene(seed, opts)
    assert scene.image.shape == (opts.height, opts.width, 3) and scene.image.dtype == np.uint8
    union = np.zeros(scene.semantic.shape, np.uint8)
    seen = np.zeros(scene.semantic.shape, bool)
    for inst in scene.instances:
        ys, xs = np.nonzero(inst.mask)
        # Each box is exactly its visible mask's extent.
        assert inst.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert inst.area >= opts.min_visible_px
        assert 0 <= inst.category < len(THING_CLASSES)
        assert not (seen & inst.mask).any(), "visible masks must not overlap"
        seen |= inst.mask
        union[inst.mask] = inst.category + 1
    # The semantic map is the union of the visible instances.
    np.testing.assert_array_equal(scene.semantic, union)


def test_every_class_and_size_range_occur():
    scenes = [draw_scene(s) for s in SEEDS]
    cats = {i.category for s in scenes for i in s.instances}
    assert cats == set(range(len(THING_CLASSES)))
    extents = [max(i.box[2] - i.box[0], i.box[3] - i.box[1]) for s in scenes for i in s.instances]
    assert min(extents) < 24 and max(extents) > 100


def test_non_square_frames():
    scene = draw_scene(7, SceneOptions(width=200, height=120))
    assert scene.image.shape == (120, 200, 3)
    assert scene.semantic.shape == (120, 200)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"width": 16}, "at least 32x32"),
        ({"min_objects": 5, "max_objects": 2}, "min_objects <= max_objects"),
        ({"min_size": 200.0}, "Object sizes are empty"),
    ],
)
def test_bad_options_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SceneOptions(**kwargs)

"""Rectangular inputs (``--size 416x320``): the size everywhere it is read, and one model taken from training
through conversion to the runtime at a rectangular size."""

from __future__ import annotations

import dataclasses
import importlib.util
import json

import numpy as np
import pytest

from ocrnet_edge.runtime import contract
from ocrnet_edge.runtime.contract import input_wh, num_locations, parse_size, size_text
from ocrnet_edge.runtime.decode.detect import anchor_points, decode_detections
from ocrnet_edge.runtime.errors import InputError, ModelError
from ocrnet_edge.runtime.preprocess import PAD_VALUE, plan, preprocess_into

from .conftest import SMALL, TINY

RECT = (160, SMALL)
"""Width, height of the tests' rectangular models: 5:4, the tiny models' 128 high."""


@pytest.mark.parametrize("text, want", [
    ("320", 320), (320, 320), ("416x320", (416, 320)), ("416X320", (416, 320)), (" 512 x 288 ", (512, 288)),
    ("320x320", 320), ([416, 320], (416, 320)), ((320, 320), 320),
])
def test_parse_size_reads_a_side_or_width_by_height(text, want):
    assert parse_size(text) == want
    assert parse_size(size_text(want)) == want


@pytest.mark.parametrize("text", ["300", "416x300", "416x", "x320", "32", "0x320", "-320", "416,320", True, [416], "abc"])
def test_parse_size_refuses_bad_sizes_in_one_line(text):
    with pytest.raises(InputError) as e:
        parse_size(text)
    assert "\n" not in str(e.value)


def test_locations_of_a_rectangular_input_are_row_major_per_level():
    w, h = 416, 320
    centres, strides = anchor_points((w, h))
    assert len(centres) == num_locations((w, h)) == sum((h // s) * (w // s) for s in (8, 16, 32))
    first = (h // 8) * (w // 8)
    assert centres[w // 8 - 1].tolist() == [w - 4, 4]  # the end of the first row of stride 8 is at the right edge
    assert centres[w // 8].tolist() == [4, 12]  # then the second row
    assert centres[first - 1].tolist() == [w - 4, h - 4]
    assert strides[first] == 16 and strides[-1] == 32
    assert centres[:, 0].max() < w and centres[:, 1].max() < h


def test_decoded_boxes_are_clipped_to_width_and_height_separately():
    w, h = 416, 320
    n = num_locations((w, h))
    scores = np.zeros((n, 1), np.float32)
    dist = np.zeros((n, 4), np.float32)
    last = n - 1  # bottom-right location of stride 32, centre (400, 304)
    scores[last, 0] = 0.9
    dist[last] = (1.0, 1.0, 5.0, 5.0)  # 32 px left and up, 160 px right and down: past both edges
    det = decode_detections(scores, dist, (w, h))
    assert det.boxes.tolist() == [[368.0, 272.0, float(w), float(h)]]
    with pytest.raises(ValueError, match="416x320"):
        decode_detections(scores[:-1], dist[:-1], (w, h))


def test_letterbox_of_a_4_3_frame_into_a_4_3_input_pads_almost_nothing():
    frame = np.full((480, 640, 3), 200, np.uint8)
    buf = np.zeros((1, 320, 416, 3), np.uint8)
    t = preprocess_into(frame, buf)
    assert t.input_size == (416, 320)
    assert (t.pad_x, t.pad_y) == (0, 4)  # 640x480 * 0.65 = 416x312: 8 rows of bars
    assert (buf[0, :4] == PAD_VALUE).all() and (buf[0, -4:] == PAD_VALUE).all() and (buf[0, 4:-4] == 200).all()
    square = plan(640, 480, 416)
    padded_rect = 1 - (416 * 312) / (416 * 320)
    padded_square = 1 - (416 * 312) / (416 * 416)
    assert square.pad_y == 52 and padded_rect < 0.03 < 0.25 <= padded_square
    back = t.boxes_to_frame(np.array([[0, 4, 416, 316]], np.float32))
    np.testing.assert_allclose(back, [[0, 0, 640, 480]], atol=1e-4)


def test_card_reads_width_and_height():
    from ocrnet_edge.runtime.card import CARD_FORMAT, parse_card

    doc = {"format": CARD_FORMAT, "input": {"size": [416, 320]},
           "outputs": {"seg_logits": {"role": "seg_logits"}}, "semantic_classes": ["background", "a"]}
    assert parse_card(doc).input_size == (416, 320)
    doc["input"]["size"] = [320, 320]
    assert parse_card(doc).input_size == 320
    for bad in ([416], [416, 320, 3], "416x320", [416.0, 320]):
        doc["input"]["size"] = bad
        with pytest.raises(ModelError, match=r"\[width, height\]"):
            parse_card(doc)


def test_board_profile_takes_rectangular_sizes(tmp_path):
    from ocrnet_edge.runtime.system.boards import BOARDS_DIR, parse_board

    text = (BOARDS_DIR / "host.yaml").read_text()
    lines = [ln for ln in text.splitlines() if not ln.startswith(("input_size:", "sizes:"))]
    good = "\n".join([*lines, "input_size: 416x320", "sizes: [256, 320, 416x320, 512x288]"])
    board = parse_board(good, tmp_path / "cam.yaml")
    assert board.input_size == (416, 320)
    assert board.sizes == (256, 320, (416, 320), (512, 288))
    bad = "\n".join([*lines, "input_size: 416x300", "sizes: [320]"])
    with pytest.raises(InputError, match=r"cam.yaml:\d+: input_size: .*multiple of 32"):
        parse_board(bad, tmp_path / "cam.yaml")


def test_model_config_keeps_a_size_canonical_and_refuses_bad_ones():
    from ocrnet_edge.model.config import ModelConfig, model_config_from_dict

    assert ModelConfig(input_size=[416, 320]).input_size == (416, 320)
    assert ModelConfig(input_size=(320, 320)).input_size == 320
    cfg = model_config_from_dict(json.loads(json.dumps(dataclasses.asdict(ModelConfig(input_size=(512, 288))))))
    assert cfg.input_size == (512, 288) and cfg.input_wh == (512, 288)
    with pytest.raises(InputError, match="multiple of 32"):
        ModelConfig(input_size=(416, 300))


@pytest.mark.parametrize("sizes, side, want", [
    ([(640, 480)] * 9 + [(480, 640)], 320, (384, 288)),  # a 4:3 camera (BCCD), one photo turned
    ([(1280, 720)] * 5, 320, (448, 256)),
    ([(1920, 1080)] * 5, 416, (576, 320)),
    ([(600, 400)] * 5, 320, (384, 256)),
    ([(480, 640)] * 5, 320, (288, 384)),  # portrait phone photos
    ([(640, 480)] * 5, 256, (288, 224)),
    ([(500, 480)] * 5, 320, 320),  # about square already
    ([(640, 480), (480, 640), (500, 500), (800, 533), (300, 400)], 320, 320),  # mixed (kangaroo, Penn-Fudan)
    ([], 320, 320),
])
def test_input_is_shaped_after_photos_of_one_aspect_at_the_squares_cost(sizes, side, want):
    from ocrnet_edge.model.config import AREA_RANGE, aspect_input_size

    got, why = aspect_input_size([w for w, _ in sizes], [h for _, h in sizes], side)
    assert got == want, why
    if got != side:
        w, h = got
        assert w % 32 == 0 and h % 32 == 0 and AREA_RANGE[0] <= w * h / side**2 <= AREA_RANGE[1]
        assert "padding" in why


def test_a_resumed_run_keeps_its_input_whatever_the_photos_say():
    from ocrnet_edge.model.config import shaped_input

    assert shaped_input(320, [640] * 4, [480] * 4) == ((384, 288), shaped_input(320, [640] * 4, [480] * 4)[1])
    assert shaped_input(320, [640] * 4, [480] * 4, resumed=320) == (320, "kept from the run being resumed")


def test_dataset_summary_says_which_input_train_takes(tmp_path):
    from ocrnet_edge.model.data import write_scenes
    from ocrnet_edge.model.summary import format_summary, summarize

    path = write_scenes(tmp_path / "cam", 3, seed=1, size=(640, 480), progress=False)
    doc = summarize(path)
    split = next(iter(doc["splits"].values()))
    assert split["training_input"]["size"] == [384, 288]
    assert "input train takes without --size: 384x288" in format_summary(doc)
    # Object sizes are given at that input unless --size says otherwise.
    assert doc["input_size"] == split["input_size"] == [384, 288]
    assert "object sizes at a 384x288 px input" in format_summary(doc)
    chosen = summarize(path, 320)
    assert chosen["input_size"] == 320 and "object sizes at a 320 px input" in format_summary(chosen)
    assert chosen["splits"]["all"]["training_input"]["size"] == [384, 288]  # still what train takes without --size


def test_a_board_size_changes_a_square_model_and_leaves_a_rectangular_one(tiny_model, tmp_path):
    from ocrnet_edge.convert.pipeline import ConvertOptions, _load
    from ocrnet_edge.model.io import save_model
    from ocrnet_edge.model.network import build_ocrnet

    assert _load(tiny_model, ConvertOptions(board_size=(192, 128)))[1].input_size == (192, 128)
    rect = TINY.with_size(RECT)
    save_model(build_ocrnet(rect), rect, tmp_path / "rect.keras")
    assert _load(tmp_path / "rect.keras", ConvertOptions(board_size=256))[1].input_size == RECT
    assert _load(tmp_path / "rect.keras", ConvertOptions(size=256, board_size=192))[1].input_size == 256
    # a square input train chose for a set of large boxes is kept too; --size still chooses
    save_model(build_ocrnet(TINY), TINY, tmp_path / "large.keras", data={"input_for": "large boxes"})
    assert _load(tmp_path / "large.keras", ConvertOptions(board_size=256))[1].input_size == TINY.input_size
    assert _load(tmp_path / "large.keras", ConvertOptions(size=256, board_size=192))[1].input_size == 256


def test_rectangular_model_outputs_match_the_contract():
    from ocrnet_edge.model.network import build_ocrnet, output_spec

    cfg = TINY.with_size(RECT)
    net = build_ocrnet(cfg, batch_size=1)
    assert net.input_shape == (1, RECT[1], RECT[0], 3)
    out = net(np.zeros((1, RECT[1], RECT[0], 3), np.float32))
    spec = output_spec(cfg)
    assert {k: tuple(v.shape) for k, v in out.items()} == spec
    assert spec[contract.DET_SCORES][1] == num_locations(RECT)
    assert spec[contract.SEG_LOGITS][1:3] == (RECT[1] // 4, RECT[0] // 4)


def test_training_images_and_targets_at_a_rectangular_input(small_dataset):
    from ocrnet_edge.model.augment import AugmentOptions, mosaic
    from ocrnet_edge.model.data import load_dataset
    from ocrnet_edge.model.targets import image_targets
    from ocrnet_edge.model.train import prepare_record

    w, h = 416, 320
    ds = load_dataset(small_dataset, TINY.class_names)
    rng = np.random.default_rng(0)
    plain = prepare_record(ds.records[0], (w, h))  # a square scene letterboxed: bars left and right
    assert plain.image.shape == (h, w, 3) and plain.semantic.shape == (h, w)
    assert (plain.image[:, :40] == PAD_VALUE).all() and (plain.image[:, -40:] == PAD_VALUE).all()
    assert (plain.boxes[:, 0] >= 48).all() and (plain.boxes[:, 2] <= w - 48).all()
    for r in (plain, prepare_record(ds.records[1], (w, h), rng, AugmentOptions()),
              mosaic(ds.records[:4], (w, h), rng, AugmentOptions())):
        assert r.image.shape == (h, w, 3) and r.masks.shape[1:] == (h, w)
        assert (r.boxes[:, 2] <= w).all() and (r.boxes[:, 3] <= h).all()
        t = image_targets(r.boxes, r.categories, r.masks, r.semantic, (w, h), (8, 16, 32), 16, rng,
                          r.mask_valid, r.ignore)
        assert t["cls_label"].shape == (num_locations((w, h)),) and (t["cls_label"] >= 0).any()
        assert t["mask_target"].shape == (16, h // 4, w // 4)
        pos = t["cls_label"] >= 0
        centres, _ = anchor_points((w, h))
        boxes = t["box_target"][pos]
        inside = ((centres[pos] >= boxes[:, :2]) & (centres[pos] <= boxes[:, 2:])).all(axis=1)
        assert inside.all()


@pytest.mark.slow
@pytest.mark.long
def test_rectangular_model_trains_converts_and_runs(small_dataset, calib_dir, tmp_path):
    """Train two rounds at 160x128, convert (int8, card, gate on generated scenes at that size), and run a
    4:3 frame through the runtime: every stage takes the width and height, none assumes a square."""
    from ocrnet_edge.convert.pipeline import ConvertOptions, convert_model
    from ocrnet_edge.model.config import TrainConfig
    from ocrnet_edge.model.train import train
    from ocrnet_edge.runtime.engine import Engine, EngineOptions
    from ocrnet_edge.runtime.io.scenes import SceneOptions, draw_scene
    from ocrnet_edge.runtime.modelfile import inspect_model

    cfg = TrainConfig(steps=4, val_every=2, batch_size=4, val_images=0, mosaic=0.5, model=TINY.with_size(RECT))
    model_path = train(small_dataset, tmp_path / "run", cfg, verbose=0)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["input_size"] == list(RECT)

    onnx = importlib.util.find_spec("tf2onnx") is not None and importlib.util.find_spec("onnxruntime") is not None
    opts = ConvertOptions(calib=calib_dir, min_calib=10, heldout_images=4, name="rect", max_drop=100.0,
                          progress=False, onnx=onnx)
    res = convert_model(model_path, tmp_path / "int8", opts)
    assert res.report["edgetpu_check"]["mapped_share"] == 1.0
    card = json.loads(res.card.read_text())
    assert card["input"]["size"] == list(RECT)
    assert res.report["input_size"] == list(RECT) and "input size: 160x128" in res.report_md.read_text()
    info = inspect_model(res.int8)
    assert tuple(info.tensors[info.inputs[0]].shape) == (1, RECT[1], RECT[0], 3)

    scene = draw_scene((5, 0), SceneOptions(width=640, height=512))
    builds = [(res.int8, EngineOptions())]
    if onnx:  # the Jetson path: the same size in the ONNX graph TensorRT builds from
        builds.append((res.onnx_qdq, EngineOptions(backend="onnxruntime")))
    for path, options in builds:
        with Engine.open(path, options=options) as engine:
            assert engine.input_size == RECT
            result = engine.process(scene.image)
        assert result.transform.input_size == RECT and (result.transform.pad_x, result.transform.pad_y) == (0, 0)
        assert result.semantic.shape == (RECT[1] // 4, RECT[0] // 4)
        assert result.semantic_frame().shape == (512, 640)
        for d in result.detections:
            x0, y0, x1, y1 = d.box
            assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 512
            assert d.mask().shape == (512, 640)

    with pytest.raises(InputError, match="multiple of 32"):
        ConvertOptions(size=(160, 100))
    assert input_wh(ConvertOptions(size="192x128").size) == (192, 128)

"""The whole path as a new user walks it, with the commands the README gives: their labelled export,
``dataset``, ``train``, ``convert`` with its defaults (calibration and gate from their data), ``run`` on
a video made from their images; their class names come back in every output."""

from __future__ import annotations

import json

import cv2
import pytest

from ocrnet_edge.cli import main
from ocrnet_edge.runtime.errors import EXIT_INPUT

from .conftest import TINY_TRAIN_CONFIG, USER_CLASSES, USER_REGION, write_coco_export, write_yolo_seg

EPOCHS = "2"
FRAME_SIZE = (480, 360)
"""Video frames: the 4:3 of a camera, as the images are not."""


def _video_from(images, path):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, FRAME_SIZE)
    for p in images:
        w.write(cv2.resize(cv2.imread(str(p)), FRAME_SIZE))
    w.release()
    return path


def _walk(data, tmp_path, capsys, roomy_board, images, regions):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY_TRAIN_CONFIG))
    assert main(["dataset", str(data)]) == 0
    summary = capsys.readouterr().out
    for name in USER_CLASSES:
        assert name in summary
    assert "problems: 0" in summary

    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--config", str(cfg), "--epochs", EPOCHS,
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "augmentation on" in out and "casque de sécurité" in out

    conv = tmp_path / "conv"
    # The fidelity gate of a model trained for two epochs is noise; what is checked here is where its images come from.
    assert main(["convert", str(run / "model.keras"), "--out", str(conv), "--quiet", "--max-drop", "100"]) == 0
    out = capsys.readouterr().out
    assert f"calibration: sampled from the training data {data.resolve()}" in out
    card = json.loads((conv / "run.card.json").read_text())
    assert card["thing_classes"] == list(USER_CLASSES)
    assert card["semantic_classes"] == ["background", *USER_CLASSES, *([USER_REGION] if regions else [])]
    assert card["calibration"]["source"].startswith("sampled from the training data")
    assert card["gate"]["source"].startswith("validation data:")
    report = json.loads((conv / "run.report.json").read_text())
    assert report["fidelity"]["heldout"].startswith("validation data:")

    video = _video_from(images, tmp_path / "clip.avi")
    lines = tmp_path / "clip.jsonl"
    assert main(["run", str(conv / "run_int8.tflite"), "--source", str(video), "--json-out", str(lines),
                 "--board", str(roomy_board), "--score", "0.005", "--quiet", "--save", str(tmp_path / "a.avi")]) == 0
    frames = [json.loads(x) for x in lines.read_text().splitlines()]
    assert len(frames) == len(images)
    labels = {d["class"] for f in frames for d in f["detections"]}
    assert labels and labels <= set(USER_CLASSES)
    sem = {k for f in frames for k in f.get("semantic", {})}
    assert sem and sem <= set(card["semantic_classes"])
    return run, conv


@pytest.mark.slow
@pytest.mark.long
def test_yolo_segmentation_export_to_a_video(tmp_path, capsys, roomy_board):
    data = write_yolo_seg(tmp_path / "yolo", train=24, val=6)
    run, conv = _walk(data, tmp_path, capsys, roomy_board, sorted((data / "images" / "val").glob("*.jpg")), True)
    # eval on the converted file reads the same dataset (its val split) with no further flag
    assert main(["eval", str(conv / "run_int8.tflite"), "--data", str(data), "--quiet"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert all(metrics[k] is not None for k in ("box_ap", "mask_ap", "miou"))


@pytest.mark.slow
@pytest.mark.long
def test_coco_export_with_boxes_only_on_half(tmp_path, capsys, roomy_board):
    data = write_coco_export(tmp_path / "coco", 24, boxes_only_every=2)
    images = sorted((data / "images" / "batch_1").glob("*.jpg"))[:6]
    run, conv = _walk(data, tmp_path, capsys, roomy_board, images, True)
    held = json.loads((run / "data.json").read_text())["val"]
    assert held["holdout"] == {"fraction": 0.1, "seed": 0}


@pytest.mark.slow  # a conversion of its own
def test_convert_says_what_to_pass_without_data(tmp_path, capsys, calib_dir):
    """A model with other classes and no record of its data is never calibrated on the bundled scenes."""
    import dataclasses

    import keras

    from ocrnet_edge.model.io import save_model
    from ocrnet_edge.model.network import build_ocrnet

    from .conftest import TINY

    cfg = dataclasses.replace(TINY, class_names=USER_CLASSES)
    keras.utils.set_random_seed(0)
    path = tmp_path / "m.keras"
    save_model(build_ocrnet(cfg), cfg, path)
    out = tmp_path / "conv"
    assert main(["convert", str(path), "--out", str(out)]) == EXIT_INPUT
    assert "pass --calib DIR with images of the model's own domain" in capsys.readouterr().err
    assert not out.exists()
    assert main(["convert", str(path), "--out", str(out), "--calib", "calibration_data", "--min-calib", "10"]) == EXIT_INPUT
    assert "pass --val DIR (labelled images of its domain) or --no-gate" in capsys.readouterr().err
    # What is checked from here on is the report's first line and the card: the small calibration folder serves.
    assert main(["convert", str(path), "--out", str(out), "--calib", str(calib_dir), "--min-calib", "10", "--no-gate",
                 "--quiet"]) == 0
    md = (out / "m.report.md").read_text()
    assert md.startswith("**NOT GATED: converted with --no-gate")
    assert json.loads((out / "m.card.json").read_text())["gate"] == {"source": None, "skipped": "--no-gate"}

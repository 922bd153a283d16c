"""Standard backbones and their weights from the files users have.

The proof that a TFLite import is exact, not merely "loaded": the Coral classifier rebuilt in float Keras
from its imported weights ranks the photos as the file does, and its logits agree with the file's
within its quantization steps.
"""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest

from ocrnet_edge.model.config import ModelConfig
from ocrnet_edge.runtime.errors import InputError, ModelError

from .conftest import PEERS, SMALL

needs_peers = pytest.mark.skipif(not PEERS.is_dir(), reason="../shared/peers/coral is not beside this checkout")
V2_FILE = PEERS / "mobilenet_v2_1.0_224_quant.tflite"
V1_FILE = PEERS / "mobilenet_v1_0.5_160_quant.tflite"
TOP1 = {"cat.bmp": 286, "parrot.jpg": 89}
"""Top-1 of both Coral classifiers (index 0 is background): 'Egyptian cat', 'macaw'."""
PHOTOS = ("cat.bmp", "parrot.jpg", "grace_hopper.bmp", "bird.bmp")
MAX_LOGIT_STEPS = 5.0
"""Largest difference of a float logit from the file's int8 logit, in the file's quantization steps (the
file quantizes every activation on the way; measured: at most 3.9)."""
MEAN_LOGIT_STEPS = 1.0
"""Mean difference over the 1001 logits, in steps (measured: 0.5 to 0.8)."""


def _photo(name, size):
    img = cv2.cvtColor(cv2.imread(str(PEERS / name)), cv2.COLOR_BGR2RGB)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


@needs_peers
@pytest.mark.parametrize(("path", "backbone", "width", "size"),
                         [(V2_FILE, "mobilenet_v2", 1.0, 224), (V1_FILE, "mobilenet_v1", 0.5, 160)],
                         ids=["mobilenet_v2_1.0", "mobilenet_v1_0.5"])
def test_rebuilt_classifier_agrees_with_the_file(path, backbone, width, size):
    from ai_edge_litert.interpreter import Interpreter

    from ocrnet_edge.model.pretrained import rebuild_classifier
    from ocrnet_edge.runtime.modelfile import inspect_model

    net = rebuild_classifier(path, backbone, width, size)
    info = inspect_model(path)
    logits_t = info.tensors[next(o for o in info.ops if o.name == "SOFTMAX").inputs[0]]
    it = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    for name in PHOTOS:
        x = _photo(name, size)
        it.set_tensor(inp["index"], x[None])
        it.invoke()
        file_logits = (it.get_tensor(logits_t.index).reshape(-1).astype(np.float32) - logits_t.zero_point) * logits_t.scale
        ours = np.asarray(net(((x.astype(np.float32) - 128.0) / 128.0)[None]))[0]  # the file's input: (q - 128) / 128
        assert int(ours.argmax()) == int(file_logits.argmax()), name
        if name in TOP1:
            assert int(ours.argmax()) == TOP1[name]
        steps = np.abs(ours - file_logits) / logits_t.scale
        assert steps.max() <= MAX_LOGIT_STEPS and steps.mean() <= MEAN_LOGIT_STEPS, (name, steps.max(), steps.mean())


@needs_peers
def test_backbone_weights_come_from_the_coral_file():
    import keras

    from ocrnet_edge.model.network import build_ocrnet
    from ocrnet_edge.model.pretrained import conv_plan, load_pretrained, read_tflite_convs

    cfg = ModelConfig(input_size=SMALL, backbone="mobilenet_v2", width=1.0)
    net = build_ocrnet(cfg)
    line, rec = load_pretrained(net, cfg, str(V2_FILE))
    plan = conv_plan("mobilenet_v2", 1.0)
    assert len(plan) == 51, "MobileNetV2 up to its last inverted residual"
    assert line.startswith(f"--pretrained: loaded {rec['tensors']} backbone tensors (51 convolutions of MobileNetV2 "
                           f"width 1) from {V2_FILE}")
    convs = read_tflite_convs(V2_FILE)
    np.testing.assert_array_equal(net.get_layer("Conv1").get_weights()[0], convs[0].kernel)
    gamma, beta, mean, var = net.get_layer("bn_Conv1").get_weights()
    np.testing.assert_array_equal(beta, convs[0].bias)
    assert (gamma == 1).all() and (mean == 0).all()
    assert all(not layer.trainable for layer in net.layers
               if isinstance(layer, keras.layers.BatchNormalization) and layer.name.endswith("BN"))
    assert net.get_layer("block_16_project").trainable


@needs_peers
def test_deeplab_file_at_width_half_brings_its_own_channel_layout():
    """TF-Slim's DeepLab does not round depth-multiplied channels to 8 (12 at stride 4 where Keras has 16):
    the file is read, the model takes its backbone, width and layout, and every convolution loads exactly."""
    from ocrnet_edge.model.network import build_ocrnet
    from ocrnet_edge.model.pretrained import file_backbone, load_pretrained, model_for_pretrained, read_tflite_convs

    path = PEERS / "deeplabv3_mnv2_dm05_pascal_quant.tflite"
    assert file_backbone(path) == ("mobilenet_v2", 0.5, 1)
    assert file_backbone(V2_FILE) == ("mobilenet_v2", 1.0, 8)
    cfg, line = model_for_pretrained(ModelConfig(input_size=SMALL), str(path))
    assert (cfg.backbone, cfg.width, cfg.channel_divisor) == ("mobilenet_v2", 0.5, 1)
    assert "holds MobileNetV2 width 0.5 in TF-Slim's channel layout; the model takes that backbone" in line
    same, _ = model_for_pretrained(ModelConfig(input_size=SMALL, backbone="mobilenet_v2", width=0.5), str(path))
    assert same.channel_divisor == 1 and same.width == 0.5, "a matching --backbone/--width only takes the layout"
    other, _ = model_for_pretrained(ModelConfig(input_size=SMALL, backbone="mobilenet_v1", width=0.5), str(path))
    assert other.backbone == "mobilenet_v1", "another backbone asked for is left to load_pretrained to refuse"
    net = build_ocrnet(cfg)
    _, rec = load_pretrained(net, cfg, str(path))
    assert rec["tensors"] == 51 * 5
    convs = read_tflite_convs(path)
    np.testing.assert_array_equal(net.get_layer("block_1_project").get_weights()[0], convs[5].kernel)
    assert net.get_layer("block_1_project").get_weights()[0].shape == (1, 1, 48, 12)
    np.testing.assert_array_equal(net.get_layer("block_16_project").get_weights()[0], convs[50].kernel)


def test_the_deeplab_channel_layout_is_for_mobilenet_v2_only():
    with pytest.raises(InputError, match="channel_divisor must be 8, or 1 with the mobilenet_v2 backbone"):
        ModelConfig(backbone="mobilenet_v1", width=0.5, channel_divisor=1)
    with pytest.raises(InputError, match="channel_divisor"):
        ModelConfig(channel_divisor=4, backbone="mobilenet_v2", width=0.5)


def test_a_frozen_backbone_does_not_move_then_steps_at_its_fraction():
    import keras

    from ocrnet_edge.model.train import ScaledAdamW

    backbone, head = keras.Variable(np.ones(4, "float32")), keras.Variable(np.ones(4, "float32"))
    opt = ScaledAdamW(scaled=[backbone], scale=0.1, learning_rate=1e-2, weight_decay=0.5, frozen_steps=2)
    for _ in range(2):
        opt.apply([keras.ops.ones(4), keras.ops.ones(4)], [backbone, head])
    np.testing.assert_array_equal(np.asarray(backbone), 1.0, "no step and no weight decay while frozen")
    assert (1 - np.asarray(head) > 0.01).all()
    opt.apply([keras.ops.ones(4), keras.ops.ones(4)], [backbone, head])
    assert (1 - np.asarray(backbone) > 0).all(), "it fine-tunes once the frozen steps are over"


def test_the_backbone_steps_at_its_fraction_of_the_learning_rate():
    """Adam normalises gradients away, so the fraction must scale the step itself (and the weight decay)."""
    import keras

    from ocrnet_edge.model.train import ScaledAdamW

    backbone, head = keras.Variable(np.ones(4, "float32")), keras.Variable(np.ones(4, "float32"))
    opt = ScaledAdamW(scaled=[backbone], scale=0.1, learning_rate=1e-2, weight_decay=0.5)
    for _ in range(3):
        opt.apply([keras.ops.ones(4), keras.ops.ones(4)], [backbone, head])
    moved_backbone, moved_head = 1 - np.asarray(backbone), 1 - np.asarray(head)
    assert (moved_head > 0.02).all()
    np.testing.assert_allclose(moved_backbone, 0.1 * moved_head, rtol=0.02)


def test_backbone_variables_are_the_standard_backbones_convolutions():
    from ocrnet_edge.model.network import build_ocrnet
    from ocrnet_edge.model.pretrained import backbone_variables, conv_plan

    cfg = ModelConfig(input_size=SMALL, backbone="mobilenet_v1", width=0.25)
    net = build_ocrnet(cfg)
    names = {v.path.split("/")[0] for v in backbone_variables(net, cfg)}
    assert {n for n, _, _ in conv_plan("mobilenet_v1", 0.25)} <= names
    assert not names & {"lat3", "lat3_conv", "det_cls", "seg_logits"}, "neck and heads train at the full rate"


@needs_peers
@pytest.mark.parametrize(("path", "backbone", "width", "message"), [
    (V2_FILE, "mobilenet_v2", 0.5, "holds MobileNetV2 width 1, expected MobileNetV2 width 0.5"),
    (V1_FILE, "mobilenet_v2", 1.0, "holds MobileNetV1 width 0.5, expected MobileNetV2 width 1"),
    (PEERS / "deeplabv3_mnv2_dm05_pascal_quant.tflite", "mobilenet_v2", 0.5,
     "holds MobileNetV2 width 0.5 in TF-Slim's channel layout, expected MobileNetV2 width 0.5"),
])
def test_a_file_of_another_backbone_is_named(path, backbone, width, message):
    from ocrnet_edge.model.pretrained import tflite_backbone_weights

    with pytest.raises(InputError, match=message):
        tflite_backbone_weights(path, backbone, width)


@needs_peers
def test_deeplab_segmenter_backbone_imports():
    from ocrnet_edge.model.pretrained import tflite_backbone_weights

    weights, n = tflite_backbone_weights(PEERS / "deeplabv3_mnv2_pascal_quant.tflite", "mobilenet_v2", 1.0)
    assert n == 51 and len(weights) == 2 * 51


IMAGENET_CHECK = """
import sys, urllib.request
import numpy as np
from pathlib import Path
from ocrnet_edge.model.config import ModelConfig
from ocrnet_edge.model.network import build_ocrnet
from ocrnet_edge.model.pretrained import imagenet_file, keras_application, keras_cache, load_pretrained
from ocrnet_edge.runtime.errors import EnvironmentMissing

def offline(*a, **k):
    raise OSError("network unreachable (test)")
urllib.request.urlopen = urllib.request.urlretrieve = offline
backbone, width, size = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
cfg = ModelConfig(input_size=size, backbone=backbone, width=width)
net = build_ocrnet(cfg)
try:
    load_pretrained(net, cfg, "imagenet")
    sys.exit("loaded without a file")
except EnvironmentMissing as e:
    print("OFFLINE", e)
# A weights file where Keras looks, written from a randomly initialised model (legacy .h5, as published).
src = keras_application(backbone, width)
for layer in src.layers:
    layer.set_weights([np.random.default_rng(len(layer.name)).normal(size=w.shape).astype(np.float32) ** 2 + 0.1
                       for w in layer.get_weights()])
keras_cache().mkdir(parents=True, exist_ok=True)
src.save(keras_cache() / imagenet_file(backbone, width))
line, rec = load_pretrained(net, cfg, "imagenet")
first = "conv1" if backbone == "mobilenet_v1" else "Conv1"
last = "conv_pw_13" if backbone == "mobilenet_v1" else "block_16_project"
for name in (first, last):
    for a, b in zip(net.get_layer(name).get_weights(), src.get_layer(name).get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
print("LOADED", rec["file"])
"""


@pytest.mark.slow  # a subprocess that imports TensorFlow and builds a Keras Applications backbone
@pytest.mark.parametrize(("backbone", "width"), [("mobilenet_v2", 0.35), ("mobilenet_v1", 0.25)])
def test_imagenet_weights_through_the_keras_cache(tmp_path, backbone, width):
    """Keras fetches ImageNet weights into its cache; the test puts its own file there (no network)."""
    import os
    import subprocess
    import sys

    from ocrnet_edge.model.pretrained import imagenet_file

    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    p = subprocess.run([sys.executable, "-c", IMAGENET_CHECK, backbone, str(width), str(SMALL)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    cache = tmp_path / "keras" / "models"
    name = imagenet_file(backbone, width)
    assert f"OFFLINE --pretrained imagenet: Keras could not fetch {name}" in p.stdout
    assert f"put it in {cache}/" in p.stdout
    assert f"LOADED {cache / name}" in p.stdout


@pytest.mark.slow  # builds two Keras Applications backbones and an OCRNet on each
def test_keras_weights_file(tmp_path):
    from ocrnet_edge.model.network import build_ocrnet
    from ocrnet_edge.model.pretrained import keras_application, load_pretrained

    src = keras_application("mobilenet_v2", 0.5)
    path = tmp_path / "mine.weights.h5"
    src.save_weights(path)
    cfg = ModelConfig(input_size=SMALL, backbone="mobilenet_v2", width=0.5)
    line, _ = load_pretrained(build_ocrnet(cfg), cfg, str(path))
    assert "Keras weights file" in line
    other = dataclasses.replace(cfg, width=0.75)
    with pytest.raises(InputError, match="not the Keras MobileNetV2 width 0.75"):
        load_pretrained(build_ocrnet(other), other, str(path))


@needs_peers
@pytest.mark.slow
@pytest.mark.long
def test_a_pretrained_run_records_its_source_in_the_run_and_the_card(tmp_path, small_dataset, calib_dir, capsys):
    from ocrnet_edge.cli import main

    run = tmp_path / "run"
    assert main(["train", "--data", str(small_dataset), "--out", str(run), "--epochs", "1", "--size", str(SMALL),
                 "--backbone", "mobilenet_v1", "--width", "0.5", "--pretrained", str(V1_FILE), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert (f"--pretrained: loaded 135 backbone tensors (27 convolutions of MobileNetV1 width 0.5) from {V1_FILE}"
            in out), out
    assert "the backbone fine-tunes at 0.1 x the learning rate" in out
    record = json.loads((run / "data.json").read_text())["pretrained"]
    assert record["file"] == str(V1_FILE) and record["backbone_lr"] == 0.1 and record["tensors"] == 135
    assert json.loads((run / "config.json").read_text())["pretrained"] == str(V1_FILE)
    assert main(["convert", str(run / "model.keras"), "--out", str(tmp_path / "int8"), "--name", "m",
                 "--calib", str(calib_dir), "--min-calib", "10", "--no-gate", "--quiet"]) == 0, capsys.readouterr().err
    card = json.loads((tmp_path / "int8" / "m.card.json").read_text())
    assert card["notes"]["pretrained"]["file"] == str(V1_FILE)


def test_pretrained_bad_input_leaves_no_run(tmp_path, small_dataset, capsys):
    from ocrnet_edge.cli import main

    (tmp_path / "notes.tflite").write_text("not a model")
    trunc = tmp_path / "trunc.tflite"
    if V2_FILE.is_file():
        trunc.write_bytes(V2_FILE.read_bytes()[:200_000])
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"model": {"input_size": SMALL}}))
    base = ["train", "--data", str(small_dataset), "--config", str(cfg), "--epochs", "1"]
    cases = [
        (["--backbone", "mobilenet_v2", "--pretrained", str(tmp_path / "missing.tflite")], 3, "--pretrained file not found"),
        (["--backbone", "mobilenet_v2", "--pretrained", str(tmp_path / "notes.tflite")], 4, "not a TFLite model"),
        (["--pretrained", "imagenet"], 3, "--pretrained needs a standard backbone"),
        (["--backbone", "mobilenet_v2", "--width", "0.6"], 3, "Keras Applications defines it at widths"),
        (["--backbone", "mobilenet_v2", "--init", str(tmp_path / "x.keras"), "--pretrained", "imagenet"], 3,
         "--init and --pretrained both give starting weights"),
    ]
    if trunc.is_file():
        cases.append((["--backbone", "mobilenet_v2", "--pretrained", str(trunc)], 4, "truncated or malformed"))
    for i, (extra, code, message) in enumerate(cases):
        out = tmp_path / f"run{i}"
        assert main([*base, "--out", str(out), *extra]) == code, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (extra, err)
        assert not out.exists(), extra


@pytest.mark.slow
@pytest.mark.parametrize(("backbone", "width", "head"), [
    ("mobilenet_v2", 0.35, {}), ("mobilenet_v1", 0.25, {}),
    # the default for a set with boxes alone: the decoupled head with its bottom-up path
    ("mobilenet_v2", 0.35, {"det_head": "decoupled", "tasks": ("detect",)}),
])
def test_standard_backbones_convert_full_int8_and_map_to_the_edge_tpu(tmp_path, calib_dir, backbone, width, head):
    import keras

    from ocrnet_edge.convert.pipeline import ConvertOptions, convert_model
    from ocrnet_edge.model.io import save_model
    from ocrnet_edge.model.network import build_ocrnet

    cfg = ModelConfig(input_size=SMALL, backbone=backbone, width=width, neck_channels=32, head_channels=32,
                      num_protos=8, ocr_channels=16, **head)
    keras.utils.set_random_seed(0)
    path = tmp_path / "model.keras"
    save_model(build_ocrnet(cfg), cfg, path)
    res = convert_model(path, tmp_path / "out", ConvertOptions(calib=calib_dir, min_calib=10, gate=False,
                                                               write_float=False, progress=False))
    assert res.report["graph"]["problems"] == []
    tpu = res.report["edgetpu_check"]
    assert tpu["mapped_share"] == 1.0 and not tpu["problems"], tpu
    card = json.loads(res.card.read_text())
    assert card["notes"]["model_config"]["backbone"] == backbone
    assert card["notes"]["model_config"]["det_head"] == head.get("det_head", "shared")


def test_unknown_model_file_for_import(tmp_path):
    from ocrnet_edge.model.pretrained import read_tflite_convs

    p = tmp_path / "x.tflite"
    p.write_bytes(b"\x00" * 100)
    with pytest.raises(ModelError, match="not a TFLite model"):
        read_tflite_convs(p)


def test_photographs_start_from_the_bundled_deeplab_backbone_by_default():
    """What `train` gives a user who chose no model: size s on the bundled DeepLab MobileNetV2 0.5, which ships
    with the package and is read like any other file."""
    from ocrnet_edge.model.config import SIZE_PRESETS, TrainConfig
    from ocrnet_edge.model.pretrained import BUNDLED, DEFAULT_START, file_backbone, resolve_source
    from ocrnet_edge.model.train import PHOTO_PRESET, photo_defaults

    cfg, line = photo_defaults(TrainConfig())
    assert cfg.pretrained == DEFAULT_START and PHOTO_PRESET in line and DEFAULT_START in line
    assert all(getattr(cfg.model, k) == v for k, v in SIZE_PRESETS[PHOTO_PRESET].items())
    path = resolve_source(cfg.pretrained)
    assert path == str(BUNDLED / DEFAULT_START) and (BUNDLED / "LICENSE").is_file()
    assert file_backbone(path) == ("mobilenet_v2", 0.5, 1)
    assert resolve_source("none") == "" and resolve_source("imagenet") == "imagenet"
    assert resolve_source("not_bundled.tflite") == "not_bundled.tflite", "left for load_pretrained to refuse"


def test_a_missing_pretrained_file_names_the_bundled_ones():
    from ocrnet_edge.model.network import build_ocrnet
    from ocrnet_edge.model.pretrained import DEFAULT_START, load_pretrained

    cfg = ModelConfig(input_size=SMALL, backbone="mobilenet_v2", width=0.5, channel_divisor=1)
    with pytest.raises(InputError, match=f"--pretrained file not found .*imagenet, none, or a bundled file's name: "
                                         f"{DEFAULT_START}"):
        load_pretrained(build_ocrnet(cfg), cfg, "nowhere.tflite")


@pytest.mark.parametrize(("extra", "defaults", "auto_size", "auto_head", "auto_assigner"), [
    ([], True, True, True, True),
    (["--backbone", "compact"], False, True, False, False),
    (["--size-preset", "n"], False, True, False, False),
    (["--pretrained", "none"], False, True, False, False),
    (["--steps", "5", "--size", "256"], True, False, True, True),
    (["--size", "384x288"], True, False, True, True),
    (["--det-head", "shared"], True, True, False, False),
    (["--assigner", "fcos"], True, True, True, False),
])
def test_train_takes_the_photo_defaults_only_when_no_model_is_chosen(monkeypatch, tmp_path, extra, defaults,
                                                                     auto_size, auto_head, auto_assigner):
    import ocrnet_edge.model.train as train_module
    from ocrnet_edge.cli import main

    seen = {}
    monkeypatch.setattr(train_module, "train", lambda *a, **kw: seen.update(kw) or tmp_path / "model.keras")
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), *extra]) == 0
    assert seen["defaults"] is defaults and seen["auto_size"] is auto_size and seen["auto_head"] is auto_head
    assert seen["auto_assigner"] is auto_assigner


def test_a_set_of_boxes_alone_gets_the_head_its_box_sizes_call_for_and_says_so():
    from ocrnet_edge.model.train import box_set_head

    boxes = ModelConfig(tasks=("detect",))
    large = np.array([0.08, 0.27, 0.65])  # kangaroo's shares at 320, finest level first
    small = np.array([0.40, 0.57, 0.03])  # BCCD's blood cells at 384x288
    model, line = box_set_head(boxes, large)
    assert model.det_head == "decoupled"
    assert "mostly large" in line and "65% of its boxes at stride 32" in line and "--det-head" in line
    cheap, line = box_set_head(boxes, small)
    assert cheap.det_head == "shared" and "mostly small" in line and "40% at stride 8" in line
    assert box_set_head(boxes, np.array([0.3, 0.4, 0.3]))[0].det_head == "shared", "a tie takes the cheaper head"
    assert box_set_head(boxes, np.zeros(3))[0].det_head == "shared", "a set without boxes takes the cheaper head"
    for tasks in (("detect", "semantic", "instance"), ("semantic",), ("detect", "semantic")):
        assert box_set_head(ModelConfig(tasks=tasks), large) == (ModelConfig(tasks=tasks), ""), "masks keep the shared head"
    assert box_set_head(boxes, small, resumed="decoupled")[0].det_head == "decoupled", "a resumed run keeps its head"
    assert box_set_head(boxes, large, resumed="shared") == (boxes, ""), "a run begun with the shared head resumes with it"


def test_a_set_of_large_boxes_trains_at_a_larger_input_shaped_after_its_photos_and_says_so():
    from ocrnet_edge.model.targets import box_set_side
    from ocrnet_edge.model.train import box_set_input

    assert box_set_side(320, "decoupled") == 416 and box_set_side(256, "decoupled") == 320
    assert box_set_side(320, "shared") == 320, "small objects keep the default side"
    large = ModelConfig(tasks=("detect",), det_head="decoupled")
    mixed = ([600, 480, 500, 348], [400, 360, 250, 348])  # kangaroo's mixed aspects keep the square
    model, line = box_set_input(large, 320, *mixed)
    assert model == large.with_size(416), "only the input changes"
    assert line.startswith("input: 416, the default for a set with boxes alone whose objects are mostly large")
    assert "aspects differ" in line and line.endswith("--size chooses")
    camera = ([640] * 4, [480] * 4)  # one 4:3 camera: its shape at about the larger side's pixels
    assert box_set_input(large, 320, *camera)[0].input_size == (512, 384)
    small = ModelConfig(tasks=("detect",), det_head="shared")
    assert box_set_input(small, 320, *camera) == (small, ""), "small objects keep the input they have"
    for tasks in (("detect", "semantic", "instance"), ("detect", "semantic")):
        fused = ModelConfig(tasks=tasks, det_head="decoupled")
        assert box_set_input(fused, 320, *mixed) == (fused, ""), "models with masks or maps keep theirs"


@pytest.mark.slow
def test_train_gives_a_set_of_large_boxes_the_decoupled_head_at_the_larger_input_and_says_why(tmp_path, capsys):
    """The wiring: the input follows the head the rule chose for a new run, and a resumed run keeps both."""
    from ocrnet_edge.model.config import TrainConfig
    from ocrnet_edge.model.train import train

    from .conftest import TINY
    from .test_voc import write_devkit

    # the devkit's 64x48 photos at 384x288 (320's shape for 4:3): a third of the boxes at stride 32, none at stride 8
    cfg = TrainConfig(steps=1, val_every=1, batch_size=2, val_images=0, augment="off", model=TINY.with_size(320))
    data = write_devkit(tmp_path / "voc")
    train(data, tmp_path / "run", cfg, verbose=0, auto_size=True, auto_head=True, auto_assigner=True)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["det_head"] == "decoupled" and saved["model"]["input_size"] == [512, 384]
    out = capsys.readouterr().out
    assert "detection head: decoupled, the default for a set with boxes alone whose objects are mostly large" in out
    assert "input: 512x384, the default for a set with boxes alone whose objects are mostly large" in out
    assert out.count("input: ") == 1, "one input line: the one the run takes"
    record = tmp_path / "run" / "data.json"
    assert json.loads(record.read_text())["input_for"] == "large boxes", "convert --board keeps such an input"
    train(data, tmp_path / "run", dataclasses.replace(cfg, steps=2), verbose=0, auto_size=True, auto_head=True,
          auto_assigner=True)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"] == saved["model"], "resumed as begun"
    assert json.loads(record.read_text())["input_for"] == "large boxes", "and its record says so still"


def test_a_set_of_small_boxes_gets_task_aligned_assignment_with_its_shared_head_and_says_so():
    from ocrnet_edge.model.config import LossConfig
    from ocrnet_edge.model.train import box_set_assignment

    loss = LossConfig()
    assert loss.assigner == "fcos"
    small, line = box_set_assignment(loss, ModelConfig(tasks=("detect",), det_head="shared"))
    assert small == dataclasses.replace(loss, assigner="tal"), "only the assigner changes"
    assert line.startswith("label assignment: task-aligned, the default with the shared head") and "--assigner" in line
    assert box_set_assignment(loss, ModelConfig(tasks=("detect",), det_head="decoupled")) == (loss, ""), \
        "large objects keep the static assigner, and nothing is said"
    tal = dataclasses.replace(loss, assigner="tal")
    assert box_set_assignment(tal, ModelConfig(tasks=("detect",), det_head="decoupled"))[0].assigner == "fcos"
    for tasks in (("detect", "semantic", "instance"), ("detect", "semantic")):
        assert box_set_assignment(loss, ModelConfig(tasks=tasks)) == (loss, ""), "models with masks or maps keep theirs"
    assert box_set_assignment(loss, ModelConfig(tasks=("detect",)), resumed="fcos") == (loss, ""), \
        "a run begun with the static assigner resumes with it"
    assert box_set_assignment(loss, ModelConfig(tasks=("detect",), det_head="decoupled"), resumed="tal")[0] == tal


@pytest.mark.slow
def test_train_gives_a_set_of_small_boxes_the_shared_head_and_task_aligned_assignment_and_says_why(tmp_path, capsys):
    """The wiring: ``train`` measures the training split's boxes at the model's input and records the head."""
    from ocrnet_edge.model.config import TrainConfig
    from ocrnet_edge.model.train import train

    from .conftest import TINY
    from .test_voc import write_devkit

    cfg = TrainConfig(steps=1, val_every=1, batch_size=2, val_images=0, augment="off",
                      model=dataclasses.replace(TINY, det_head="decoupled"))
    train(write_devkit(tmp_path / "voc"), tmp_path / "run", cfg, verbose=0, auto_head=True, auto_assigner=True)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["det_head"] == "shared" and saved["loss"]["assigner"] == "tal"
    out = capsys.readouterr().out
    assert "detection head: shared, the default for a set with boxes alone whose objects are mostly small" in out
    assert "label assignment: task-aligned, the default with the shared head" in out
    # the devkit's train split letterboxed from 64x48 to 128: the dog and the small cat at stride 8, the large cat at
    # stride 16 (half its largest side, 36 px at the input), the difficult dog not counted
    assert "(0% of its boxes at stride 32, 67% at stride 8; --det-head chooses)" in out


def test_level_shares_follow_the_assigners_level_ranges_at_the_letterboxed_input():
    from types import SimpleNamespace

    from ocrnet_edge.model.targets import assign, level_shares
    from ocrnet_edge.runtime.decode.detect import anchor_points

    # a 640x480 photo letterboxed to 320x240 halves every side; half of each largest side at the input:
    # 10 (stride 8), 31.5 (8), 32 (16), 63 (16), 64 (32), 150 (32)
    sides = [40, 126, 128, 252, 256, 600]
    rec = SimpleNamespace(width=640, height=480,
                          boxes=np.array([[0, 0, s, min(s, 480) // 2] for s in sides], np.float32))
    shares = level_shares([rec, SimpleNamespace(width=10, height=10, boxes=np.zeros((0, 4)))], (320, 240), (8, 16, 32))
    np.testing.assert_allclose(shares, [2 / 6, 2 / 6, 2 / 6])
    # the assigner teaches an object well inside a level's range on the level level_shares names, and there alone
    # (near a range's edge its off-centre locations reach the next level too)
    for side, level in ((24, 8), (70, 16), (140, 32)):
        box = np.array([[160 - side / 2, 120 - side / 2, 160 + side / 2, 120 + side / 2]], np.float32)
        _, st = anchor_points((320, 240))
        taken = set(st[assign(box, (320, 240), (8, 16, 32)) == 0].tolist())
        share = level_shares([SimpleNamespace(width=320, height=240, boxes=box)], (320, 240), (8, 16, 32))
        assert taken == {level} and share[[8, 16, 32].index(level)] == 1.0, (side, taken, share)
    assert not level_shares([], 320, (8, 16, 32)).any()

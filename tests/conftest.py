"""Shared fixtures: small datasets and models built by the tests themselves."""

from __future__ import annotations

import fcntl
import os
import pickle

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO.parent / "shared" / "peers" / "coral"
SMALL = 128
"""Input size of the tiny models and scenes the tests build (a multiple of 32)."""


SLOW_FIXTURES = {"onnx_dir"}
"""Fixtures that export a model of their own (the ONNX runtime tests' reference model at 128: half a minute):
a test that uses one is marked slow, so that ``scripts/test --fast`` leaves it out (CI runs it)."""


LONGEST_FILES = ("test_pretrained.py", "test_user_path.py", "test_convert.py", "test_train.py", "test_rect.py",
                 "test_jax_backend.py", "test_onnx_convert.py", "test_onnx_runtime.py", "test_hardening.py",
                 "test_golden.py", "test_bench_boards.py", "test_recipe.py", "test_install.py")
"""Test files that train or convert, longest first (seconds each on the 2-core machine, from ``scripts/test
--durations=0`` before the tests marked long left the test command: 167, 154, 148, 110, 79, 79, 64, 63, 53, 51, 45,
41, 30; every other file takes under 15). The order serves both selections (``scripts/test`` and ``--long``). The two
workers take whole files in the order collected (``scripts/test`` turns off pytest-xdist's reordering by test
count, which put the files with the fewest tests, the longest here, last): longest first, the workers finish
within seconds of each other instead of one running a long file alone at the end."""


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("long"):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its own order


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    """12 procedural scenes of 128x128 in COCO format."""
    from ocrnet_edge.model.data import write_scenes

    return write_scenes(tmp_path_factory.mktemp("data") / "small", 12, seed=3, size=SMALL, progress=False)


def _tiny():
    from ocrnet_edge.model.config import ModelConfig

    return ModelConfig(input_size=SMALL, width=0.5, neck_channels=32, head_channels=32, num_protos=8, ocr_channels=16)


TINY = _tiny()
CALIB_IMAGES = 24


def built_once(tmp_path_factory, worker_id: str, name: str, build):
    """A session resource built once for all pytest-xdist workers: the first to ask builds it into a folder of the
    run's shared temporary root, under a lock, and leaves it pickled there; the other workers wait for the lock and
    read it. A conversion costs half a minute; built once per worker, each session paid for it twice. Without
    xdist (``OCRNET_TEST_WORKERS=0``) it is simply built.

    Args:
        name: Folder and file stem of the resource.
        build: ``build(folder) -> value``; the value must pickle.
    """
    if worker_id == "master":
        return build(tmp_path_factory.mktemp(name))
    root = tmp_path_factory.getbasetemp().parent  # one per run, shared by its workers
    with (root / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        done = root / f"{name}.pickle"
        if done.is_file():
            return pickle.loads(done.read_bytes())
        folder = root / name
        shutil.rmtree(folder, ignore_errors=True)  # what a worker that failed to build left
        folder.mkdir()
        value = build(folder)
        done.write_bytes(pickle.dumps(value))
        return value


@pytest.fixture(scope="session")
def calib_dir(tmp_path_factory, worker_id):
    """A small calibration folder: photos and scenes from the repository's calibration_data."""

    def build(d):
        files = sorted((REPO / "calibration_data").glob("*.jpg"))
        for f in files[:8] + files[-(CALIB_IMAGES - 8):]:
            shutil.copy(f, d / f.name)
        return d

    return built_once(tmp_path_factory, worker_id, "calib", build)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, worker_id):
    """An untrained tiny model saved with its configuration."""

    def build(d):
        import keras

        from ocrnet_edge.model.io import save_model
        from ocrnet_edge.model.network import build_ocrnet

        keras.utils.set_random_seed(0)
        save_model(build_ocrnet(TINY), TINY, d / "model.keras")
        return d / "model.keras"

    return built_once(tmp_path_factory, worker_id, "model", build)


@pytest.fixture(scope="session")
def converted(tiny_model, calib_dir, tmp_path_factory, worker_id):
    """The tiny model converted by the real pipeline (int8 + card + reports + float32), once for all workers."""

    def build(out):
        from ocrnet_edge.convert.pipeline import ConvertOptions, convert_model

        # An untrained model's near-tied logits make its int8 metrics arbitrary: the gate is tested on its own.
        opts = ConvertOptions(calib=calib_dir, min_calib=10, heldout_images=6, name="tiny", max_drop=100.0,
                              progress=False)
        return convert_model(tiny_model, out, opts)

    return built_once(tmp_path_factory, worker_id, "converted", build)


@pytest.fixture(scope="session")
def roomy_board(tmp_path_factory):
    """The host profile with a budget for a test process that also holds TensorFlow and JAX (over 1 GB):
    runs inside pytest measure the whole pytest process, not a device process."""
    text = (REPO / "boards" / "host.yaml").read_text()
    text = text.replace("ram_mb: 16384", "ram_mb: 65536").replace("memory_budget_mb: 1024", "memory_budget_mb: 65536")
    path = tmp_path_factory.mktemp("boards") / "roomy.yaml"
    path.write_text(text)
    return path


# ---------------------------------------------------------------- datasets as labelling tools export them

USER_CLASSES = ("Gabelstapler", "casque de sécurité", "palette")
"""Thing classes the reference model never had (a space and a non-ASCII letter on purpose)."""
USER_REGION = "floor"
SCENE_TO_USER = (0, 1, 2, 2)
"""Scene category -> user class: ellipse, triangle, rectangle and star (a second kind of pallet)."""
USER_SIZES = ((480, 360), (360, 480), (400, 400), (640, 360))
"""Images of several sizes and aspects, as photographs come."""


def user_scene(seed, i: int):
    """One image with user classes and a floor region: ``(rgb, [(class, mask)], floor polygon (K, 2))``."""
    import numpy as np

    from ocrnet_edge.runtime.io.scenes import SceneOptions, draw_scene

    w, h = USER_SIZES[i % len(USER_SIZES)]
    scene = draw_scene((seed, i), SceneOptions(width=w, height=h, min_objects=1, max_objects=4, max_size_frac=0.4))
    img = scene.image.copy()
    top = int(h * (0.62 + 0.1 * ((i * 7) % 3) / 2))
    floor = np.array([[0, top], [w - 1, top - (i % 5) * 4], [w - 1, h - 1], [0, h - 1]], np.float64)
    band = np.zeros((h, w), bool)
    import cv2

    cv2.fillPoly(band.view(np.uint8), [floor.astype(np.int32)], 1)
    free = band & (scene.semantic == 0)
    rng = np.random.default_rng([seed, i, 7])
    tex = np.clip(np.array([150, 120, 80]) + rng.normal(0, 12, (h, w, 1)), 0, 255).astype(np.uint8)
    img[free] = tex[free]
    objects = [(SCENE_TO_USER[inst.category], inst.mask) for inst in scene.instances]
    return img, objects, floor


def mask_polygons(mask):
    """Outer contours of a mask as flat [x1, y1, ...] lists (pixel corners), largest first."""
    import cv2
    import numpy as np

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = [c.reshape(-1, 2).astype(float) + 0.5 for c in contours if len(c) >= 3]
    polys.sort(key=lambda p: -cv2.contourArea(p.astype(np.float32)))
    return [p.ravel().tolist() for p in polys]


def write_label_maps(root, classes, maps: dict, image_ext: str = ".jpg"):
    """A label-map dataset as users write one: ``classes.txt`` (one name per line), and per stem in ``maps`` a flat
    grey image in ``images/`` and its single-channel PNG class ids in ``labels/``."""
    import cv2
    import numpy as np

    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    (root / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    for stem, lab in maps.items():
        cv2.imwrite(str(root / "images" / f"{stem}{image_ext}"), np.full((*lab.shape, 3), 90, np.uint8))
        cv2.imwrite(str(root / "labels" / f"{stem}.png"), lab)


def write_yolo_seg(root, train: int, val: int, seed: int = 11, regions: bool = True):
    """An Ultralytics YOLO segmentation dataset: data.yaml, images/{train,val}, labels/{train,val}."""
    import cv2
    import yaml

    root = Path(root)
    names = [*USER_CLASSES, USER_REGION] if regions else list(USER_CLASSES)
    for split, n, offset in (("train", train, 0), ("val", val, 10_000)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            img, objects, floor = user_scene(seed, offset + i)
            h, w = img.shape[:2]
            stem = f"{split}_{i:04d}"
            cv2.imwrite(str(root / "images" / split / f"{stem}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            lines = []
            if regions:
                lines.append(f"{len(USER_CLASSES)} " + " ".join(f"{x / w:.5f} {y / h:.5f}" for x, y in floor))
            for cls, m in objects:
                polys = mask_polygons(m)
                if not polys:  # a sliver of a few pixels: a labeller would not draw it either
                    continue
                poly = polys[0]
                lines.append(f"{cls} " + " ".join(f"{v / (w if k % 2 == 0 else h):.5f}" for k, v in enumerate(poly)))
            (root / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    doc = {"path": ".", "train": "images/train", "val": "images/val", "names": dict(enumerate(names))}
    if regions:
        doc["regions"] = [USER_REGION]
    (root / "data.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
    return root


def write_coco_export(root, count: int, seed: int = 12, boxes_only_every: int = 2):
    """A COCO export as CVAT writes it: images in a nested folder, annotations/instances_default.json,
    several polygons per object, one object per image as uncompressed RLE, box-only annotations
    (``segmentation: []``) on every ``boxes_only_every``-th image, an ``iscrowd`` region, and the floor
    as an ``isthing: 0`` category on the images with masks."""
    import json

    import cv2
    import numpy as np
    from pycocotools import mask as mask_utils

    from ocrnet_edge.runtime.io.rle import rle_counts

    root = Path(root)
    (root / "images" / "batch_1").mkdir(parents=True)
    (root / "annotations").mkdir()
    cats = [{"id": k + 1, "name": n, "supercategory": ""} for k, n in enumerate(USER_CLASSES)]
    cats.append({"id": len(cats) + 1, "name": USER_REGION, "supercategory": "", "isthing": 0})
    images, anns = [], []
    for i in range(count):
        img, objects, floor = user_scene(seed, i)
        h, w = img.shape[:2]
        fname = f"batch_1/frame_{i:04d}.jpg"
        cv2.imwrite(str(root / "images" / fname), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        images.append({"id": i + 1, "file_name": fname, "width": w, "height": h, "license": 0})
        boxes_only = boxes_only_every and i % boxes_only_every == 1
        for j, (cls, m) in enumerate(objects):
            ys, xs = np.nonzero(m)
            x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
            if boxes_only:
                seg = []
            elif j == 0:
                rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                seg = {"size": [h, w], "counts": rle_counts(m)}
                assert mask_utils.area(rle) == m.sum()
            else:
                seg = mask_polygons(m)
                if not seg:
                    continue
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cls + 1, "segmentation": seg,
                         "area": float(m.sum()), "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0,
                         "attributes": {"occluded": False}})
        if not boxes_only:
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": len(cats),
                         "segmentation": [floor.ravel().tolist()], "area": 0.0,
                         "bbox": [0.0, float(floor[:, 1].min()), float(w), float(h - floor[:, 1].min())], "iscrowd": 0})
        if i == 0:
            anns.append({"id": len(anns) + 1, "image_id": 1, "category_id": 3,
                         "segmentation": [[2, 2, 40, 2, 40, 30, 2, 30]], "area": 1064.0,
                         "bbox": [2.0, 2.0, 38.0, 28.0], "iscrowd": 1})
    doc = {"licenses": [{"name": "", "id": 0, "url": ""}], "info": {"description": "", "version": ""},
           "categories": cats, "images": images, "annotations": anns}
    (root / "annotations" / "instances_default.json").write_text(json.dumps(doc, ensure_ascii=False))
    return root


TINY_TRAIN_CONFIG = {"model": {"input_size": SMALL, "width": 0.5, "neck_channels": 32, "head_channels": 32,
                               "num_protos": 8, "ocr_channels": 16}, "batch_size": 8, "learning_rate": 3e-3}
"""A training configuration of the tiny architecture (the classes come from the data)."""


# ---------------------------------------------------------------- live viewer helpers

def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str) -> bytes:
    import time
    import urllib.error
    import urllib.request

    for _ in range(300):  # the run may take seconds to start on a loaded machine
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.read()
        except urllib.error.HTTPError:
            raise
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(url)


@pytest.fixture(scope="session")
def yolo_seg_dir(tmp_path_factory):
    """A small YOLO-segmentation export (8 train, 3 val images): user classes and a floor region."""
    return write_yolo_seg(tmp_path_factory.mktemp("yolo") / "ds", train=8, val=3)


@pytest.fixture(scope="session")
def coco_export_dir(tmp_path_factory):
    """A small CVAT-style COCO export of 8 images, boxes only on every second one."""
    return write_coco_export(tmp_path_factory.mktemp("coco") / "export", 8)

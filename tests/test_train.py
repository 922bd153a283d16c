"""Training: a tiny run overfits a handful of scenes, saves its model and configuration, resumes."""

from __future__ import annotations

import csv
import dataclasses
import json
import platform

import h5py
import pytest

from ocrnet_edge.model.config import TrainConfig
from ocrnet_edge.model.io import load_model
from ocrnet_edge.model.train import train
from ocrnet_edge.runtime.errors import InputError

from .conftest import SMALL, TINY

LOSS_DROP = 0.5
"""A handful of scenes must lose at least half of the first round's loss."""
STEPS, ROUND = 120, 6
"""120 steps (40 passes over 12 scenes at batch 4), saved every 6: twenty rounds. Every round writes the model
and the resumable state; forty rounds of three steps spent a third of the test saving. The first round stays short
(two passes) so that its mean loss is that of a model that has barely trained."""


@pytest.mark.slow
@pytest.mark.long
def test_tiny_run_overfits_and_resumes(small_dataset, tmp_path):
    cfg = TrainConfig(steps=STEPS, val_every=ROUND, batch_size=4, learning_rate=5e-3, val_images=0, model=TINY)
    out = tmp_path / "run"
    out.mkdir()
    (out / "history.csv").write_text("loss,epoch\n9.0,1\n")  # an earlier run's rows: a fresh run drops them
    # Two loader threads (as on a GPU machine; Keras restarts its enqueuer every round): the run trains, saves
    # and resumes through them (the resume below continues without).
    model_path = train(small_dataset, out, cfg, verbose=0, workers=2)
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert len(rows) == STEPS // ROUND
    first, last = float(rows[0]["loss"]), float(rows[-1]["loss"])
    assert last < LOSS_DROP * first, (first, last)
    for term in ("cls", "box", "sem", "aux", "mask"):
        assert term in rows[0]
    assert json.loads((out / "config.json").read_text())["model"]["input_size"] == SMALL
    state = json.loads((out / "state.json").read_text())
    assert (state["steps_done"], state["round_steps"], state["total_steps"]) == (STEPS, ROUND, STEPS)
    net = load_model(model_path)
    assert net.input_shape[1:] == (SMALL, SMALL, 3)

    # Resume: asking for more steps continues after the last finished round.
    more = dataclasses.replace(cfg, steps=STEPS + ROUND)
    train(small_dataset, out, more, verbose=0)
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, STEPS // ROUND + 2))
    assert [int(r["step"]) for r in rows] == list(range(ROUND, STEPS + 2 * ROUND, ROUND))

    # A state whose optimizer part does not fit (here: none) is refused, not resumed from step 0 of the schedule.
    with h5py.File(out / "last.weights.h5", "r+") as f:
        del f["optimizer"]
    with pytest.raises(InputError, match="optimizer state does not fit"):
        train(small_dataset, out, dataclasses.replace(more, steps=STEPS + 2 * ROUND), verbose=0)


def test_a_resume_asking_for_more_steps_keeps_the_runs_round_length():
    """The automatic round length follows --steps (a twentieth of the run, at least a pass): resumed with more
    steps, the rounds already done must still count as the steps they were."""
    from ocrnet_edge.model.config import plan_schedule
    from ocrnet_edge.model.train import resumed_rounds

    cfg = TrainConfig(steps=40, batch_size=12, model=TINY)  # 12 images: one pass = 1 step; alone, rounds of 2
    assert plan_schedule(12, cfg).round_steps == 2
    state = {"epochs_done": 4, "steps_done": 4, "round_steps": 1}  # a 4-step run: rounds of 1
    assert plan_schedule(12, resumed_rounds(cfg, state)).round_steps == 1
    assert resumed_rounds(dataclasses.replace(cfg, val_every=5), state).val_every == 5  # chosen: kept
    assert resumed_rounds(dataclasses.replace(cfg, steps=0, epochs=3), state).val_every == 0  # epochs: a pass
    assert resumed_rounds(cfg, {"epochs_done": 4}) == cfg  # a state written before steps were recorded
    # A run of automatic length keeps the length it was planned with (the rule may have changed since).
    auto = dataclasses.replace(cfg, steps=0)
    assert resumed_rounds(auto, {**state, "total_steps": 1000}).steps == 1000
    assert resumed_rounds(cfg, {**state, "total_steps": 1000}).steps == 40  # --steps given: it decides


def test_resume_refuses_other_architecture(small_dataset, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    cfg = TrainConfig(epochs=1, model=TINY)
    (out / "state.json").write_text(json.dumps({"epochs_done": 1}))
    (out / "config.json").write_text(json.dumps({"model": {"input_size": 256}}))
    with pytest.raises(InputError, match="another model configuration"):
        train(small_dataset, out, cfg, verbose=0)


def test_init_starts_from_a_saved_model(tiny_model):

    import numpy as np

    from ocrnet_edge.model.config import to_dict
    from ocrnet_edge.model.train import OCRNetTrainer, _load_init

    cfg = TrainConfig(model=TINY, init=str(tiny_model))
    trainer = OCRNetTrainer(to_dict(TINY))
    _load_init(trainer, cfg)
    for got, want in zip(trainer.net.get_weights(), load_model(tiny_model).get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)

    # Another architecture: what has the same shape comes over, the rest starts fresh and is named.
    other = dataclasses.replace(TINY, num_protos=4)
    line = _load_init(OCRNetTrainer(to_dict(other)), dataclasses.replace(cfg, model=other))
    assert "started fresh (other classes or shapes): det_coeff" in line and "mask_protos" in line
    with pytest.raises(InputError, match="not found"):
        _load_init(trainer, dataclasses.replace(cfg, init=str(tiny_model) + ".missing"))


FAULTS_CODE = """
import resource
import ocrnet_edge.model.network  # what training imports first
import tensorflow as tf
step = tf.function(lambda x: tf.nn.relu(x * 2.0 + 1.0) * 3.0)
x = tf.ones([4, 160, 160, 96])  # 39 MB: above the largest size glibc keeps in its heap (32 MB)
step(x)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step(x)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_tensorflow_keeps_freed_activations_for_the_next_step():
    """Importing ocrnet_edge turns on TensorFlow's BFC CPU allocator: a step's large tensors reuse the memory
    the last step freed instead of being mapped and page-faulted afresh (44% of a Penn-Fudan training step's CPU
    time went to the kernel without it). Counted in page faults against the allocator turned off, not in seconds."""
    import os
    import subprocess
    import sys

    # Eigen's kernels in both: with oneDNN's, this graph's control faulted once in ten steps and showed nothing.
    base = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"} | {"TF_CPP_MIN_LOG_LEVEL": "3",
                                                                                      "TF_ENABLE_ONEDNN_OPTS": "0"}
    # Both at once (two TensorFlow imports dominate the time): the package's default, and TensorFlow's own allocator.
    procs = [subprocess.Popen([sys.executable, "-c", FAULTS_CODE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for env in (base, base | {"TF_CPU_ALLOCATOR_USE_BFC": "false"})]
    kept, fresh = (int(out.split()[-1]) for out in (_finished(p) for p in procs))
    pages = 10 * 2 * 4 * 160 * 160 * 96 * 4 // 4096  # two 39 MB results per step
    assert fresh > pages // 2, fresh  # the control really maps afresh; else the test shows nothing
    assert kept < fresh // 10, (kept, fresh)


ONEDNN_CODE = """
import ocrnet_edge.model.network  # what training imports first
from tensorflow.python.util import _pywrap_util_port
print(_pywrap_util_port.IsMklEnabled())
"""


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="oneDNN is turned on on x86-64 only")
def test_tensorflow_runs_onednn_kernels_on_x86():
    """Importing ocrnet_edge turns on TensorFlow's oneDNN kernels, which its x86 build leaves off on AVX2 CPUs (a
    training step of the photo default took 1.47 times as long without them); TF_ENABLE_ONEDNN_OPTS=0 in the
    environment still turns them off."""
    import os
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"} | {"TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = [subprocess.Popen([sys.executable, "-c", ONEDNN_CODE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for env in (base, base | {"TF_ENABLE_ONEDNN_OPTS": "0"})]
    on, off = (_finished(p).split()[-1] for p in procs)
    assert (on, off) == ("True", "False")


def _finished(p) -> str:
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-2000:]
    return out


def test_history_keeps_the_rounds_a_run_resumes_after(tmp_path):
    from ocrnet_edge.model.train import _trim_history

    path = tmp_path / "history.csv"
    path.write_text("loss,epoch,step\n1.0,1,5\n0.8,2,10\n0.7,3,15\n")
    _trim_history(path, 2)  # stopped after writing round 3's row, before its state
    assert path.read_text().splitlines() == ["loss,epoch,step", "1.0,1,5", "0.8,2,10"]
    _trim_history(path, 5)
    assert len(path.read_text().splitlines()) == 3
    _trim_history(path, 0)  # started afresh
    assert not path.exists()
    _trim_history(path, 0)  # nothing there: nothing to do


@pytest.mark.slow
def test_a_photo_set_with_masks_trains_the_default_length_within_its_budget_and_says_so(small_dataset, tmp_path,
                                                                                      monkeypatch, capsys):
    """``train`` gives a set of photographs with instance masks, whose length nobody gave, the planned length and its
    time budget (:func:`~model.config.auto_length`; lengths shrunk so that the run takes seconds), writes them to
    ``config.json`` and says so; generated scenes keep the plain automatic length."""
    import shutil

    import ocrnet_edge.model.config as config

    photos = tmp_path / "photos"
    shutil.copytree(small_dataset, photos)
    ann = photos / "annotations.json"
    doc = json.loads(ann.read_text())
    doc.pop("ocrnet_edge_generated")
    doc["info"] = {"description": "a user's photos"}
    ann.write_text(json.dumps(doc))
    monkeypatch.setattr(config, "AUTO_MIN_STEPS", 2)
    monkeypatch.setattr(config, "AUTO_MIN_EPOCHS", 1)
    monkeypatch.setattr(config, "AUTO_STEPS_MASKS", 6)
    cfg = TrainConfig(batch_size=4, val_images=0, augment="off", model=TINY)
    train(photos, tmp_path / "run", cfg, verbose=0)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["steps"], saved["time_hours"], saved["min_steps"]) == (6, 0.8, 3)
    assert json.loads((tmp_path / "run" / "state.json").read_text())["steps_done"] == 6
    printed = capsys.readouterr().out
    assert "length: 6 steps within 48 min and never under 3" in printed
    assert ("within the default budget of 48 min 00 s (the end moves sooner if the rounds are slow, never before "
            "step 3)") in printed and "at most 0.8 h" not in printed
    train(small_dataset, tmp_path / "scenes", dataclasses.replace(cfg, val_every=3), verbose=0)
    scenes = json.loads((tmp_path / "scenes" / "config.json").read_text())
    assert (scenes["steps"], scenes["time_hours"], scenes["min_steps"]) == (0, 0.0, 0), "scenes: auto_steps alone"
    assert json.loads((tmp_path / "scenes" / "state.json").read_text())["steps_done"] == 3

"""The device side of ONNX and TensorRT: ONNX files in the engine, the onnxruntime and tensorrt backends, the
engine cache, precision per board, and the bad inputs. TensorRT and a GPU are not here: their code runs up to
the hardware boundary on fakes (a fake ``tensorrt`` module and a fake CUDA runtime), and the one test that
needs them is marked ``hardware`` and skips with its reason."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from ocrnet_edge.cli import main
from ocrnet_edge.runtime import errors, trtcache
from ocrnet_edge.runtime.backends import BACKENDS, Backend, OnnxRuntimeBackend, TensorRtBackend
from ocrnet_edge.runtime.engine import Engine, EngineOptions
from ocrnet_edge.runtime.modelfile import inspect_file
from ocrnet_edge.runtime.precision import GpuCaps, choose_precision
from ocrnet_edge.runtime.system import gpu
from ocrnet_edge.runtime.system.boards import load_board
from ocrnet_edge.runtime.system.gpu import GpuDevice

from .conftest import REPO, SMALL

for _module in ("onnxruntime", "onnx", "tf2onnx"):  # the export makes the test files; the runtime needs onnxruntime only
    pytest.importorskip(_module, reason="the onnx extra is not installed")

SOURCE = "synthetic://?seed=5&size=160x120&frames=2"
FRAMES = 3
"""Scenes written as image files for the comparison (a file source is read in order, never dropping frames)."""
SCORE = "0.2"
"""Score threshold for the comparison (the reference model at the tests' small size scores lower than at 320)."""
REFERENCE = REPO / "models" / "reference" / "model.keras"
MAX_DET = "20"
BOX_TOLERANCE_PX = 1.0
ORIN = GpuDevice(0, "Orin", (8, 7), True, 7620.0)
NANO = GpuDevice(0, "NVIDIA Tegra X1", (5, 3), True, 3956.0)
TRT_VERSION = "10.3.0"
GPU_MB_TAKEN = 400.0
"""What the fake GPU's free memory drops by while an engine loads (far above what RSS grows by in a frame)."""
BUDGET_MARGIN_MB = 100
"""Budget above the test process's RSS: the fake GPU's memory crosses it only where it is counted."""


@pytest.fixture(scope="module")
def onnx_dir(converted, tmp_path_factory):
    """A folder as ``convert --onnx`` leaves it, at the tests' size: ``tiny.onnx``, ``tiny_float32.tflite``
    (both from the trained reference model: an untrained model's scores are all tied, so its detections say
    nothing), and the session's int8 build ``tiny_int8.tflite`` with its ``tiny.card.json``."""
    from ocrnet_edge.convert.card import write_with_card
    from ocrnet_edge.convert.export import keras_to_tflite
    from ocrnet_edge.convert.onnx_export import keras_to_onnx
    from ocrnet_edge.model.io import load_model, load_model_config

    d = tmp_path_factory.mktemp("onnx")
    for f in (converted.int8, converted.card):
        shutil.copy(f, d / f.name)
    net, cfg = load_model(REFERENCE), load_model_config(REFERENCE).with_size(SMALL)
    write_with_card(keras_to_tflite(net, cfg, None), cfg, "tiny", REFERENCE, d / "tiny_float32.tflite")
    keras_to_onnx(net, cfg, d / "tiny.onnx")
    return d


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- run and bench on the float ONNX file

def test_run_float_onnx_gives_the_float32_tflite_detections(onnx_dir, roomy_board, tmp_path):
    import cv2

    from ocrnet_edge.runtime.io.scenes import draw_scene

    (tmp_path / "frames").mkdir()
    for i in range(FRAMES):
        cv2.imwrite(str(tmp_path / "frames" / f"{i}.png"), draw_scene((5, i)).image[..., ::-1])
    common = ["--source", str(tmp_path / "frames"), "--board", str(roomy_board), "--quiet", "--score", SCORE,
              "--max-det", MAX_DET]
    assert main(["run", str(onnx_dir / "tiny.onnx"), "--backend", "onnxruntime", "--json-out", str(tmp_path / "o.jsonl"),
                 "--summary", str(tmp_path / "o.json"), *common]) == 0
    assert main(["run", str(onnx_dir / "tiny_float32.tflite"), "--json-out", str(tmp_path / "t.jsonl"), *common]) == 0
    onnx, tfl = _jsonl(tmp_path / "o.jsonl"), _jsonl(tmp_path / "t.jsonl")
    assert len(onnx) == len(tfl) == FRAMES
    assert sum(len(f["detections"]) for f in tfl) > 0, "no detections to compare: lower SCORE"
    for a, b in zip(onnx, tfl):
        assert [d["class"] for d in a["detections"]] == [d["class"] for d in b["detections"]]
        for da, db in zip(a["detections"], b["detections"]):
            assert np.abs(np.subtract(da["box"], db["box"])).max() <= BOX_TOLERANCE_PX
    summary = json.loads((tmp_path / "o.json").read_text())
    assert summary["backend"] == "onnxruntime" and summary["precision"] == "fp32"


def test_bench_measures_the_onnx_file(onnx_dir, tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", str(onnx_dir / "tiny.onnx"), "--board", "host", "--frames", "6", "--warmup", "1",
                 "--threads", "1", "--json", str(out), "--quiet", "--source", "synthetic://?seed=1&size=160x120"]) == 0
    doc = json.loads(out.read_text())
    (r,) = doc["results"]  # the host's cpu backend runs no .onnx: onnxruntime, from the registry, does
    assert r["ok"], r.get("reason")
    assert r["config"]["backend"] == "onnxruntime" and r["ran"]["precision"] == "fp32"
    assert r["stages_ms"]["invoke"]["median"] > 0 and r["model"]["format"] == "onnx"
    assert r["model"]["macs"] == inspect_file(onnx_dir / "tiny_float32.tflite").macs  # same graph, same MACs
    assert r["memory_mb"]["gpu"] is None
    assert "onnxruntime" in capsys.readouterr().out


def test_auto_on_a_jetson_profile_runs_the_onnx_build_beside_the_tflite(onnx_dir, capsys):
    """``run x_int8.tflite`` on a Jetson: TensorRT is missing here, so ONNX Runtime serves, and the int8 build
    runs from the float ONNX file (no QDQ file beside it), each said once."""
    jetson = load_board("jetson-orin-nano")
    opts = EngineOptions(order=jetson.backends, board_precision=jetson.precision)
    with Engine.open(onnx_dir / "tiny_int8.tflite", options=opts) as e:
        assert e.backend.name == "onnxruntime" and e.path == onnx_dir / "tiny.onnx"
        res = e.process(np.zeros((120, 160, 3), np.uint8))
    assert res.semantic.shape == (SMALL // 4, SMALL // 4)
    err = capsys.readouterr().err
    assert "no tiny_int8_qdq.onnx beside tiny_int8.tflite for INT8: the float model instead" in err
    assert "running tiny.onnx (fp32) for tiny_int8.tflite" in err
    assert err.count("backend: onnxruntime") == 1 and "tensorrt: tensorrt backend unavailable" in err


def test_the_runtime_reads_onnx_without_the_onnx_package(onnx_dir):
    info = inspect_file(onnx_dir / "tiny.onnx")
    assert info.format == "onnx" and not info.is_qdq and info.opset == 17
    assert [t.name for t in info.inputs] == ["image"] and info.inputs[0].shape == (1, SMALL, SMALL, 3)
    assert {t.name for t in info.outputs} == {"det_scores", "det_boxes", "det_coeffs", "seg_logits", "mask_protos"}
    assert info.card()["name"] == "tiny"


# ---------------------------------------------------------------- the Backend protocol

def test_the_new_backends_satisfy_the_backend_protocol(onnx_dir):
    members = [n for n in vars(Backend) if not n.startswith("_")] + list(Backend.__annotations__)
    for name in ("onnxruntime", "tensorrt"):
        cls = BACKENDS[name]
        declared = {k for c in cls.__mro__ for k in getattr(c, "__annotations__", {})}
        assert not [m for m in members if not hasattr(cls, m) and m not in declared], name
        assert cls.name == name and cls.formats == ("onnx",)
    with Engine.open(onnx_dir / "tiny.onnx", options=EngineOptions(backend="onnxruntime")) as e:
        assert isinstance(e.backend, Backend) and isinstance(e.backend, OnnxRuntimeBackend)
        assert e.backend.device_memory_mb() is None


# ---------------------------------------------------------------- bad inputs

def _one_error_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("error")]
    assert len(err) == 1, err
    return err[0]


def test_not_onnx_and_truncated_onnx_are_one_line(onnx_dir, roomy_board, tmp_path, capsys):
    rnd = tmp_path / "random.onnx"
    rnd.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    data = (onnx_dir / "tiny.onnx").read_bytes()
    for cut in (40, len(data) // 2, len(data) - 30):
        (tmp_path / f"cut{cut}.onnx").write_bytes(data[:cut])
        with pytest.raises(errors.ModelError, match="truncated or not an ONNX model|not an ONNX model"):
            inspect_file(tmp_path / f"cut{cut}.onnx")
    with pytest.raises(errors.ModelError, match="not an ONNX model"):
        inspect_file(rnd)
    for bad, fragment in ((rnd, "not an ONNX model"), (tmp_path / f"cut{len(data) // 2}.onnx", "truncated")):
        rc = main(["run", str(bad), "--source", SOURCE, "--board", str(roomy_board), "--quiet"])
        assert rc == errors.EXIT_MODEL and fragment in _one_error_line(capsys)


MUTATIONS = 60
"""Mutated copies of the ONNX file the light protobuf reader is given."""


def test_mutated_onnx_files_give_a_line_or_an_inspection(onnx_dir, tmp_path):
    data = (onnx_dir / "tiny.onnx").read_bytes()
    rng = np.random.default_rng(4)
    refused = 0
    for i in range(MUTATIONS):
        mutated = bytearray(data)
        for pos in rng.integers(0, 4096, 6):
            mutated[pos] = rng.integers(0, 256)
        p = tmp_path / f"m{i}.onnx"
        p.write_bytes(bytes(mutated))
        try:
            inspect_file(p)
        except errors.ModelError as e:
            assert str(e).startswith(str(p)) and "\n" not in str(e)
            refused += 1
    assert refused > 0


def test_onnx_without_a_card_runs_with_card(onnx_dir, tmp_path):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(onnx_dir / "tiny.onnx"))
    del model.metadata_props[:]
    bare = tmp_path / "other.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(errors.ModelError, match="no model card.*--card FILE"):
        Engine.open(bare, options=EngineOptions(backend="onnxruntime"))
    card = tmp_path / "other.card.json"
    card.write_text(json.dumps(inspect_file(onnx_dir / "tiny.onnx").card()))
    with Engine.open(bare, card=card, options=EngineOptions(backend="onnxruntime")) as e:
        assert e.card.name == "tiny"


def test_backend_tensorrt_without_tensorrt_is_exit_6(onnx_dir, roomy_board, capsys):
    rc = main(["run", str(onnx_dir / "tiny.onnx"), "--backend", "tensorrt", "--source", SOURCE,
               "--board", str(roomy_board), "--quiet"])
    line = _one_error_line(capsys)
    assert rc == errors.EXIT_ENVIRONMENT and "tensorrt backend unavailable" in line
    assert "pip install tensorrt" in line or "no CUDA GPU" in line


def test_onnxruntime_missing_says_the_pip_line(onnx_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(errors.EnvironmentMissing, match=r"pip install onnxruntime"):
        Engine.open(onnx_dir / "tiny.onnx", options=EngineOptions(backend="onnxruntime"))


def test_cpu_backend_refuses_an_onnx_file(onnx_dir):
    with pytest.raises(errors.ModelError, match="the cpu backend runs .tflite files, not onnx"):
        Engine.open(onnx_dir / "tiny.onnx", options=EngineOptions(backend="cpu"))


# ---------------------------------------------------------------- precision per board

@pytest.mark.parametrize("int8_build, asked, board, caps, expected, said", [
    (True, "auto", ("int8", "fp16"), GpuCaps("Orin", True, True), "int8", None),
    (False, "auto", ("int8", "fp16"), GpuCaps("Orin", True, True), "fp16", None),
    (True, "auto", ("fp16",), GpuCaps("Tegra X1", False, True), "fp16", "lists no int8"),
    (True, "auto", ("int8", "fp16"), GpuCaps("Tegra X1", False, True), "fp16", "Tegra X1 has no fast INT8: FP16"),
    (False, "int8", ("fp16",), GpuCaps("Tegra X1", False, True), "fp16", "has no fast INT8"),
    (False, "fp16", ("fp16",), GpuCaps("GP104", True, False), "fp32", "has no fast FP16: FP32"),
    (True, "auto", ("int8", "fp16"), GpuCaps(), "int8", None),  # GPU unknown: nothing decided on it
])
def test_precision_choice(int8_build, asked, board, caps, expected, said):
    precision, notes = choose_precision(int8_build, asked, board, caps)
    assert precision == expected
    assert (said is None and not notes) or (said is not None and any(said in n for n in notes))


def test_jetson_profiles_and_their_precision():
    nano, orin = load_board("jetson-nano"), load_board("jetson-orin-nano")
    assert nano.backends == orin.backends == ("tensorrt", "onnxruntime", "cpu")
    assert nano.precision == ("fp16",) and orin.precision == ("int8", "fp16")
    assert load_board("rpi5").precision == ("fp16", "fp32")  # optional key, float by default
    assert NANO.fast_fp16 and not NANO.fast_int8 and ORIN.fast_int8 and ORIN.fast_fp16


@pytest.mark.parametrize("line, match", [
    ("precision: [int4]\n", r"bad\.yaml:\d+: unknown precision \['int4'\]"),
    ("precision: [fp16, fp16]\n", r"bad\.yaml:\d+: precision lists a value twice"),
    ("precision: fp16\n", r"bad\.yaml:\d+: precision must be a non-empty list"),
])
def test_board_loader_refuses_bad_precision(line, match, tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text((REPO / "boards" / "jetson-nano.yaml").read_text().replace("precision: [fp16]\n", line))
    with pytest.raises(errors.InputError, match=match):
        load_board(f)


# ---------------------------------------------------------------- the engine cache

def _key(sha: str = "a" * 64, gpu_name: str = "Orin", trt: str = TRT_VERSION, precision: str = "fp16"):
    return trtcache.EngineKey(sha, gpu_name, "8.7", trt, precision)


def test_engine_cache_names_and_invalidation(tmp_path):
    model = tmp_path / "x.onnx"
    model.write_bytes(b"model")
    first = trtcache.lookup(model, _key())
    assert first.status == "build" and first.path.name == f"x.onnx.orin-sm87.trt{TRT_VERSION}.fp16.engine"
    trtcache.store(first.path, b"engine", _key(), 1.0)
    assert trtcache.meta_path(first.path).is_file()
    assert trtcache.lookup(model, _key()).status == "reuse"
    changed = trtcache.lookup(model, _key(sha="b" * 64))
    assert changed.status == "rebuild" and "x.onnx changed since it was built" in changed.message
    other_gpu = trtcache.lookup(model, _key(gpu_name="NVIDIA Tegra X1"))
    assert other_gpu.status == "rebuild" and "was built for Orin" in other_gpu.message
    assert other_gpu.path.name.startswith("x.onnx.nvidia-tegra-x1-sm87.")
    other_trt = trtcache.lookup(model, _key(trt="8.6.2"))
    assert other_trt.status == "rebuild" and f"TensorRT {TRT_VERSION}, fp16; this is" in other_trt.message
    assert trtcache.lookup(model, _key(precision="int8")).status == "build"  # another precision: its own engine
    trtcache.meta_path(first.path).unlink()
    assert "no readable checksum" in trtcache.lookup(model, _key()).message


# ---------------------------------------------------------------- TensorRT up to the hardware boundary

class FakeCuda:
    """The CUDA runtime calls the TensorRT backend makes, on host memory."""

    def __init__(self, device: GpuDevice):
        self.dev, self.mem, self.free_mb, self.path = device, {}, 1000.0, "fake"

    def device(self, index=0):
        return self.dev

    def mem_info(self):
        return self.free_mb, self.dev.total_mb

    def malloc(self, nbytes):
        self.mem[len(self.mem) + 1] = np.zeros(nbytes, np.uint8)
        self.free_mb -= GPU_MB_TAKEN / 8
        return len(self.mem)

    def free(self, ptr):
        self.mem.pop(ptr)

    def host_array(self, shape, dtype):
        return np.zeros(shape, dtype)

    def free_host(self, arr):
        pass

    def stream(self):
        return 7

    def destroy_stream(self, s):
        pass

    def h2d(self, dst, src, stream):
        self.mem[dst][:] = np.frombuffer(src.tobytes(), np.uint8)

    def d2h(self, dst, src, stream):
        dst.reshape(-1).view(np.uint8)[:] = self.mem[src]

    def sync(self, stream):
        pass


def fake_tensorrt(cuda: FakeCuda, outputs: dict[str, tuple[int, ...]], built: list):
    """A ``tensorrt`` module: builds "engines" that list the ONNX outputs in reverse order (binding by index
    would then be wrong) and fill output k with k + 1 (binding by name is checked on the values)."""
    trt = types.SimpleNamespace(__version__=TRT_VERSION)
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=None: None})
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.nptype = lambda dtype: np.float32
    names = ["image", *reversed(sorted(outputs))]
    shapes = {"image": (1, SMALL, SMALL, 3), **outputs}

    class Config:
        def __init__(self):
            self.flags = []

        def set_memory_pool_limit(self, pool, size):
            pass

        def set_flag(self, flag):
            self.flags.append(flag)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return object()

        def create_builder_config(self):
            return Config()

        def build_serialized_network(self, network, config):
            built.append(sorted(config.flags))
            return b"ENGINE:" + ",".join(config.flags).encode()

    class Parser:
        def __init__(self, network, logger):
            self.num_errors = 0

        def parse(self, data):
            return data[:1] == b"\x08"

    class Context:
        def __init__(self):
            self.addr = {}

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def execute_async_v3(self, stream):
            for k, n in enumerate(names[1:]):
                cuda.mem[self.addr[n]][:] = np.frombuffer(np.full(shapes[n], k + 1, np.float32).tobytes(), np.uint8)
            return True

    class Engine_:
        num_io_tensors = len(names)

        def get_tensor_name(self, i):
            return names[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "image" else trt.TensorIOMode.OUTPUT

        def get_tensor_shape(self, name):
            return shapes[name]

        def get_tensor_dtype(self, name):
            return "float32"

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine_() if data.startswith(b"ENGINE:") else None

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, Parser, Runtime
    return trt, names


@pytest.fixture
def fake_gpu(monkeypatch, onnx_dir):
    """TensorRT and a GPU as the backend sees them: a fake ``tensorrt`` module and CUDA runtime (an Orin)."""
    info = inspect_file(onnx_dir / "tiny.onnx")
    cuda = FakeCuda(ORIN)
    built: list = []
    trt, names = fake_tensorrt(cuda, {t.name: t.shape for t in info.outputs}, built)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(gpu, "cuda", lambda: cuda)
    monkeypatch.setattr(gpu, "gpu_reason", lambda: None)
    monkeypatch.setattr(gpu, "first_gpu", lambda index=0: cuda.dev)
    return types.SimpleNamespace(cuda=cuda, built=built, names=names)


def test_tensorrt_builds_caches_and_binds_outputs_by_name(fake_gpu, onnx_dir, tmp_path, capsys):
    model = tmp_path / "tiny.onnx"
    shutil.copy(onnx_dir / "tiny.onnx", model)
    opts = EngineOptions(backend="tensorrt")
    with Engine.open(model, options=opts) as e:
        assert e.backend.precision == "fp16" and e.backend.served_by == "Orin GPU"
        raw, _ = e.invoke_raw(np.zeros((120, 160, 3), np.uint8))
        e.process(np.zeros((120, 160, 3), np.uint8))  # decoding shared with the other backends
        assert e.backend.device_memory_mb() > 0
    order = fake_gpu.names[1:]  # the engine lists outputs in another order than the card; values say which is which
    for role, arr in raw.items():
        assert float(arr.flat[0]) == order.index(role) + 1, role
    engine = tmp_path / f"tiny.onnx.orin-sm87.trt{TRT_VERSION}.fp16.engine"
    assert engine.is_file() and trtcache.meta_path(engine).is_file()
    assert fake_gpu.built == [["FP16"]]
    assert "building a TensorRT engine for tiny.onnx" in capsys.readouterr().err
    with Engine.open(model, options=opts):
        pass
    assert len(fake_gpu.built) == 1 and "(cached, built for Orin" in capsys.readouterr().err
    fake_gpu.cuda.dev = GpuDevice(0, "Orin NX", (8, 7), True, 15000.0)  # the card moved to another board
    with Engine.open(model, options=opts):
        pass
    assert len(fake_gpu.built) == 2 and "rebuilding: the cached" in capsys.readouterr().err


@pytest.mark.parametrize("device, over", [(ORIN, True), (GpuDevice(0, "NVIDIA H200", (9, 0), False, 143000.0), False)])
def test_budget_counts_gpu_memory_where_the_gpu_shares_the_boards(device, over, fake_gpu, onnx_dir, tmp_path):
    from ocrnet_edge.runtime.run import MemoryBudgetError, check_budget
    from ocrnet_edge.runtime.system.memory import peak_rss_mb

    fake_gpu.cuda.dev = device
    shutil.copy(onnx_dir / "tiny.onnx", tmp_path / "tiny.onnx")
    board = tmp_path / "board.yaml"
    budget = int(peak_rss_mb()) + BUDGET_MARGIN_MB
    board.write_text((REPO / "boards" / "host.yaml").read_text().replace("ram_mb: 16384", "ram_mb: 1000000")
                     .replace("memory_budget_mb: 1024", f"memory_budget_mb: {budget}"))
    with Engine.open(tmp_path / "tiny.onnx", options=EngineOptions(backend="tensorrt")) as e:
        if over:
            with pytest.raises(MemoryBudgetError, match="on the GPU, which shares the board's memory"):
                check_budget(e, load_board(board), 1.0)
        else:
            figures = check_budget(e, load_board(board), 1.0)
            assert figures.gpu >= GPU_MB_TAKEN / 2 and not figures.shared and figures.counted == figures.peak


def test_tensorrt_int8_where_the_board_and_gpu_have_it(fake_gpu, onnx_dir, tmp_path, capsys):
    """An int8 build on a profile asking INT8: the Orin builds INT8 from the QDQ file; a Nano's GPU has no INT8,
    so it builds FP16 from the float file, and says so."""
    for f in ("tiny_int8.tflite", "tiny.onnx", "tiny.card.json"):
        shutil.copy(onnx_dir / f, tmp_path / f)
    shutil.copy(onnx_dir / "tiny.onnx", tmp_path / "tiny_int8_qdq.onnx")  # the plan reads names; a stand-in QDQ file
    opts = EngineOptions(order=("tensorrt", "onnxruntime", "cpu"), board_precision=("int8", "fp16"))
    plan = TensorRtBackend.plan(tmp_path / "tiny_int8.tflite", inspect_file(tmp_path / "tiny_int8.tflite"), opts)
    assert plan.path.name == "tiny_int8_qdq.onnx" and plan.precision == "int8"
    fake_gpu.cuda.dev = NANO
    with Engine.open(tmp_path / "tiny_int8.tflite", options=opts) as e:
        assert e.backend.name == "tensorrt" and e.backend.precision == "fp16" and e.path.name == "tiny.onnx"
    err = capsys.readouterr().err
    assert "INT8 asked but NVIDIA Tegra X1 (sm 5.3) has no fast INT8: FP16 instead" in err
    assert fake_gpu.built == [["FP16"]]


def test_tensorrt_refuses_a_tflite_with_no_onnx_beside(fake_gpu, converted):
    with pytest.raises(errors.ModelError, match="runs .onnx files and finds no ONNX build beside it"):
        Engine.open(converted.int8, options=EngineOptions(backend="tensorrt"))


def test_doctor_lists_cuda_tensorrt_and_onnxruntime(capsys):
    assert main(["doctor", "--board", "jetson-orin-nano"]) == 0
    out = capsys.readouterr().out
    assert "GPU precision int8, fp16" in out
    assert "CUDA: " in out and "TensorRT: " in out and "ONNX Runtime: " in out and "CPUExecutionProvider" in out


@pytest.mark.hardware
def test_tensorrt_on_a_real_gpu(onnx_dir, tmp_path):
    reason = TensorRtBackend.is_available()
    if reason:
        pytest.skip(f"needs TensorRT and an NVIDIA GPU: {reason}")
    shutil.copy(onnx_dir / "tiny.onnx", tmp_path / "tiny.onnx")
    frame = np.random.default_rng(2).integers(0, 255, (120, 160, 3), np.uint8)
    with Engine.open(tmp_path / "tiny.onnx", options=EngineOptions(backend="tensorrt", precision="fp32")) as g, \
            Engine.open(tmp_path / "tiny.onnx", options=EngineOptions(backend="onnxruntime", device="cpu")) as c:
        rg, _ = g.invoke_raw(frame)
        rc, _ = c.invoke_raw(frame)
    for name in rc:
        np.testing.assert_allclose(rg[name], rc[name], atol=1e-3, rtol=1e-3)

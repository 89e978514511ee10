"""Serving backends: the fp16 graph and its checks, `auto`'s choice (as pure selection over what a
machine offers), clear refusals of backends this machine cannot run, PyTorch staying fp32 on a
CPU, and batch inference's parallel decoding giving the rows of a sequential pass. The `gpu`
tests check the CUDA backends against CPU fp32 where a CUDA GPU is present."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from clip_har.config import GateConfig
from clip_har.export import tensorrt
from clip_har.export.onnx_export import IMAGE_ONNX, export_untrained
from clip_har.export.tensorrt import ENGINE, STAMP, EngineStamp
from clip_har.export.verify import (
    CPU_EP,
    CUDA_EP,
    FP16_ONNX,
    HALF_MAX_REL_DIFF,
    INT8_ONNX,
    RECORD,
    ExportRecord,
    check_fp16,
    cuda_refusal,
    half_check,
    held_out_batch,
    onnx_logits,
    verify_export,
)
from clip_har.serving import batch
from clip_har.serving.predictor import (
    CUDA_BACKENDS,
    TORCH_DIR,
    Machine,
    Predictor,
    choose_backend,
)

H100 = EngineStamp("10.9", "13.0", "NVIDIA H100 80GB HBM3", "9.0")
GPU_ORT = ("CUDAExecutionProvider", "CPUExecutionProvider")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, tiny_data_master: Path) -> Path:
    """An untrained tiny model, exported and checked (its record inside), PyTorch weights beside."""
    onnx = export_untrained(tmp_path_factory.mktemp("backends") / "onnx")
    torch_dir = onnx.with_name(onnx.name + "-torch")
    verify_export(torch_dir, onnx, tiny_data_master)
    shutil.copytree(torch_dir, onnx / TORCH_DIR)
    return onnx


def _images(model: Path, data: Path) -> np.ndarray:
    """Every split's images: a pool large enough to hold some decisive ones (see _decisive)."""
    return np.concatenate([held_out_batch(model / TORCH_DIR, data, s, n=200) for s in ("test", "val", "train")])


def _decisive(ref: np.ndarray, tie: float = 0.02) -> np.ndarray:
    """Images whose fp32 top-2 margin is at least `tie` of the largest logit. An untrained model's
    logits bunch up (median margin ~1 %): flips of near-ties say nothing about a precision."""
    top2 = np.sort(ref, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) >= tie * np.abs(ref).max()


# ---------------------------------------------------------------- the fp16 graph and its checks


def test_fp16_graph_ships_with_float32_io_and_agrees_on_the_cpu(model: Path, tiny_data_master: Path) -> None:
    import onnx

    record = ExportRecord.load(model / RECORD)
    assert record.fp16["shipped"] is True and record.fp16["measured_on"] in (CPU_EP, CUDA_EP)
    graph = onnx.load(str(model / FP16_ONNX))
    onnx.checker.check_model(graph, full_check=True)  # topologically sorted, well typed
    float32 = onnx.TensorProto.FLOAT
    assert {t.type.tensor_type.elem_type for t in [*graph.graph.input, *graph.graph.output]} == {float32}
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.graph.initializer)
    images = held_out_batch(model / TORCH_DIR, tiny_data_master)
    ref, got = onnx_logits(model / IMAGE_ONNX, images), onnx_logits(model / FP16_ONNX, images)
    assert got.dtype == np.float32 and 0 < np.abs(got - ref).max() <= HALF_MAX_REL_DIFF * np.abs(ref).max()
    assert record.fp16["agreement"] >= 0.99 and record.fp16["why_not"] == []


def test_half_check_says_why_a_variant_does_not_ship() -> None:
    ref = np.array([[4.0, 1.0, 0.0], [0.0, 3.0, 1.0]], np.float32)
    assert half_check(ref, ref + 0.01, 0.99, "cpu")["shipped"] is True
    flipped = half_check(ref, np.array([[1.0, 4.0, 0.0], [0.0, 3.0, 1.0]], np.float32), 0.99, "cpu")
    assert not flipped["shipped"] and "top-1 agreement 0.5000 < 0.99" in flipped["why_not"][0]
    off = half_check(ref, ref + np.array([0.0, 0.0, 0.5], np.float32), 0.99, "cpu")
    assert not off["shipped"] and off["why_not"] == [
        f"max |Δ logit| 0.5 > 0.2 ({HALF_MAX_REL_DIFF:.0%} of the largest fp32 logit)"
    ]
    overflow = half_check(ref, np.full_like(ref, np.inf), 0.0, "cpu")
    assert not overflow["shipped"] and overflow["max_abs_logit_diff"] is None and "non-finite" in overflow["why_not"][0]


def test_a_refused_fp16_graph_is_deleted(model: Path, tmp_path: Path, tiny_data_master: Path) -> None:
    shutil.copy(model / IMAGE_ONNX, tmp_path / IMAGE_ONNX)
    images = held_out_batch(model / TORCH_DIR, tiny_data_master, n=4)
    result = check_fp16(tmp_path / IMAGE_ONNX, images, onnx_logits(tmp_path / IMAGE_ONNX, images), 1.01)
    assert result["shipped"] is False and "agreement" in result["why_not"][0]
    assert not (tmp_path / FP16_ONNX).exists()


def test_records_written_before_the_gpu_backends_still_load(model: Path, tmp_path: Path) -> None:
    raw = json.loads((model / RECORD).read_text())
    old = {k: raw[k] for k in ("parity", "latency", "int8", "tensorrt")}
    (tmp_path / RECORD).write_text(json.dumps(old))
    record = ExportRecord.load(tmp_path / RECORD)
    assert record.fp16 == {} and record.bf16 == {} and record.serve_backend == "onnx"
    assert ExportRecord.load(model / RECORD).bf16["measured"] in (True, False)


# ---------------------------------------------------------------- `auto`: selection over a machine


def _fake_model(
    root: Path,
    files: tuple[str, ...],
    serve: str = "onnx",
    fp16: bool = True,
    bf16: bool | None = None,
    engine_checked: bool = True,
) -> Path:
    """A model directory holding (empty) artifacts and an export record: enough for selection."""
    root.mkdir()
    for name in files:
        if name == TORCH_DIR:
            (root / name).mkdir()
        else:
            (root / name).write_bytes(b"")
    bf = {} if bf16 is None else {"measured": True, "shipped": bf16}
    record = {"parity": {"n": 1, "max_abs_logit_diff": 0.0, "top1_agreement": 1.0}, "latency": []}
    record |= {"fp16": {"shipped": fp16}, "bf16": bf, "serve_backend": serve}
    record["tensorrt"] = {"built": ENGINE in files and engine_checked}
    (root / RECORD).write_text(json.dumps(record))
    if ENGINE in files:
        (root / STAMP).write_text(json.dumps(asdict(H100)))
    return root


ALL = (IMAGE_ONNX, INT8_ONNX, FP16_ONNX, TORCH_DIR)
CPU_ONLY = Machine(False, ("CPUExecutionProvider",), None)


@pytest.mark.parametrize(
    ("files", "record", "machine", "expected"),
    [
        # a CPU machine serves what the gate checked, as before `auto` existed
        (ALL, {}, CPU_ONLY, "onnx"),
        (ALL, {"serve": "onnx-int8"}, CPU_ONLY, "onnx-int8"),
        ((IMAGE_ONNX,), {"serve": "onnx-int8"}, CPU_ONLY, "onnx"),  # int8 did not ship
        # a GPU: the fastest usable GPU backend
        ((*ALL, ENGINE), {}, Machine(True, GPU_ORT, H100), "tensorrt"),
        (
            (*ALL, ENGINE),
            {},
            Machine(True, GPU_ORT, EngineStamp("10.9", "13.0", "NVIDIA A10", "8.6")),
            "pytorch",
        ),
        ((*ALL, ENGINE), {}, Machine(True, GPU_ORT, None), "pytorch"),  # no TensorRT here
        ((*ALL, ENGINE), {"engine_checked": False}, Machine(True, GPU_ORT, H100), "pytorch"),  # left unchecked
        ((IMAGE_ONNX, FP16_ONNX), {}, Machine(True, GPU_ORT, None), "onnx-cuda-fp16"),  # no PyTorch weights
        ((IMAGE_ONNX, FP16_ONNX, TORCH_DIR), {"bf16": False}, Machine(True, GPU_ORT, None), "onnx-cuda-fp16"),
        (ALL, {"fp16": False}, Machine(True, GPU_ORT, None), "pytorch"),  # a hand-copied fp16 graph never serves
        (ALL, {}, Machine(True, ("CPUExecutionProvider",), None), "pytorch"),  # CPU-only ONNX Runtime
        ((IMAGE_ONNX, TORCH_DIR), {"bf16": True}, Machine(True, GPU_ORT, None), "pytorch"),
        ((IMAGE_ONNX, TORCH_DIR), {"bf16": False}, Machine(True, GPU_ORT, None), "onnx-cuda"),
        ((IMAGE_ONNX, INT8_ONNX), {"serve": "onnx-int8"}, Machine(True, ("CPUExecutionProvider",), None), "onnx-int8"),
    ],
)
def test_auto_picks_the_fastest_backend_that_passed_and_runs_here(
    tmp_path: Path, files: tuple[str, ...], record: dict, machine: Machine, expected: str
) -> None:
    backend, why = choose_backend(_fake_model(tmp_path / "m", files, **record), machine)
    assert backend == expected and why.startswith("auto: ") and "\n" not in why
    if expected in ("onnx", "onnx-int8") and machine.cuda:
        assert "no GPU backend usable here" in why and "pytorch (no torch in the model)" in why


def test_auto_without_a_record_serves_fp32(tmp_path: Path) -> None:
    root = _fake_model(tmp_path / "m", ALL, serve="onnx-int8")
    (root / RECORD).unlink()
    assert choose_backend(root, CPU_ONLY)[0] == "onnx"
    assert choose_backend(root, Machine(True, GPU_ORT, None))[0] == "pytorch"  # fp16 unchecked: not served


def test_auto_here_is_what_the_gate_checked(model: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the gpu tests cover it")
    p = Predictor(model)
    assert (p.requested, p.backend, p.on_gpu) == ("auto", "onnx", False)
    assert p.why == "auto: no CUDA GPU here; onnx is the CPU backend the gate checked"
    assert Predictor(model, "onnx").why == "configured"  # an explicit backend wins over auto


# ---------------------------------------------------------------- refusals, in one line


@pytest.mark.parametrize("backend", ["onnx-cuda", "onnx-cuda-fp16"])
def test_onnx_cuda_is_refused_without_the_cuda_provider(model: Path, backend: str) -> None:
    if cuda_refusal() is None:
        pytest.skip("this ONNX Runtime has the CUDA provider")
    with pytest.raises(RuntimeError, match=f"backend {backend}: this ONNX Runtime has no CUDAExecutionProvider") as exc:
        Predictor(model, backend)
    assert "\n" not in str(exc.value) and "pip install '.[gpu]'" in str(exc.value)


def test_tensorrt_is_refused_without_tensorrt(model: Path, tmp_path: Path) -> None:
    if tensorrt.current_stamp() is not None:
        pytest.skip("TensorRT and a GPU are here")
    with pytest.raises(FileNotFoundError, match="engines are built only where TensorRT and a GPU exist"):
        Predictor(model, "tensorrt")
    store = Path(shutil.copytree(model, tmp_path / "store"))
    (store / ENGINE).write_bytes(b"not an engine")
    (store / STAMP).write_text(json.dumps(asdict(H100)))
    with pytest.raises(RuntimeError, match="^backend tensorrt: TensorRT/CUDA not available here$"):
        Predictor(store, "tensorrt")
    with pytest.raises(RuntimeError, match="no CUDA GPU|tensorrt is not installed"):
        tensorrt.build_engine(store / FP16_ONNX, tmp_path / "engine", 32)
    assert not (tmp_path / "engine").exists()


def test_export_step_records_why_no_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clip_har.config import ExportConfig
    from clip_har.pipeline.export import serve_backend, tensorrt_engine
    from clip_har.pipeline.rundir import RunDir

    run_dir, shipped = RunDir(tmp_path), {"shipped": True}
    off = tensorrt_engine(ExportConfig(tensorrt=False), shipped, run_dir, tmp_path, 32)
    assert off == {"built": False, "skipped": "disabled by config (export.tensorrt=false)"}
    if tensorrt.unavailable_reason():
        assert (
            tensorrt_engine(ExportConfig(), shipped, run_dir, tmp_path, 32)["skipped"] == tensorrt.unavailable_reason()
        )
    monkeypatch.setattr(tensorrt, "unavailable_reason", lambda: None)  # selection only: nothing is built
    refused = {"shipped": False, "why_not": ["top-1 agreement 0.9 < 0.99"]}
    no_fp16 = tensorrt_engine(ExportConfig(), refused, run_dir, tmp_path, 32)
    assert no_fp16["skipped"] == "needs the fp16 graph, which did not ship (top-1 agreement 0.9 < 0.99)"
    cases = [("onnx", True), ("onnx-int8", True), ("onnx-int8", False), ("auto", True), ("auto", False)]
    assert [serve_backend(w, s) for w, s in cases] == ["onnx", "onnx-int8", "onnx", "onnx-int8", "onnx"]


def test_pytorch_backend_stays_fp32_on_the_cpu(model: Path, tiny_data_master: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the gpu test covers bf16")
    images = held_out_batch(model / TORCH_DIR, tiny_data_master, n=6)
    pt = Predictor(model, "pytorch")
    probs, emb = pt.run(images)
    ref_probs, ref_emb = Predictor(model, "onnx").run(images)
    assert not pt.on_gpu and probs.dtype == emb.dtype == np.float32
    # bf16 would miss by ~1e-2: this agreement is fp32's
    assert np.allclose(probs, ref_probs, atol=1e-5) and np.allclose(emb, ref_emb, atol=1e-5)


# ---------------------------------------------------------------- batch inference


@pytest.fixture(scope="module")
def inputs(tiny_data_master: Path, tmp_path_factory: pytest.TempPathFactory, write_video: Callable) -> list[Path]:
    """Images, a video, an undecodable file and a missing one, interleaved."""
    tmp = tmp_path_factory.mktemp("batch")
    images = sorted((tiny_data_master / "images").rglob("*.jpg"))[:23]
    video = write_video(tmp / "clip.mp4", [Image.open(p).convert("RGB") for p in images[:3]], fps=2)
    (tmp / "broken.jpg").write_bytes(b"not an image")
    return [*images[:5], video, tmp / "broken.jpg", *images[5:14], tmp / "missing.png", *images[14:]]


def test_parallel_decoding_gives_the_rows_of_a_sequential_pass(model: Path, inputs: list[Path]) -> None:
    predictor = Predictor(model, "onnx")
    one = batch.predict_files(predictor, inputs, 4, 3, 2.0, workers=1)
    four = batch.predict_files(predictor, inputs, 4, 3, 2.0, workers=4)
    assert four == one  # the same batches in the same order: identical rows
    assert [Path(r.path).name for r in one if r.frame_s is None] == [p.name for p in inputs if p.suffix != ".mp4"]
    assert [r.frame_s for r in one if r.frame_s is not None] == sorted(r.frame_s for r in one if r.frame_s is not None)
    errors = {Path(r.path).name: r.error for r in one if r.error}
    assert set(errors) == {"broken.jpg", "missing.png"} and "No such file" in errors["missing.png"]
    image_rows = [r for r in one if r.frame_s is None and not r.error]
    for row, path in zip(image_rows, _readable_images(inputs), strict=True):
        alone = predictor.predict(predictor.decode(path.read_bytes())[None], 3)[0]  # batch composition aside
        assert row.label == alone.label and abs(row.score - alone.score) < 1e-5


def _readable_images(inputs: list[Path]) -> list[Path]:
    return [p for p in inputs if p.suffix == ".jpg" and p.exists() and p.name != "broken.jpg"]


def test_decoding_runs_at_most_a_batch_ahead(model: Path, inputs: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory stays bounded: when the first batch is predicted, at most the next batch is decoded."""
    images = _readable_images(inputs)
    decoded: list[int] = []  # decodings started
    at_predict: list[int] = []  # decodings started when each batch was predicted
    real_decode, real_predict = Predictor.decode, Predictor.predict

    def decode(self: Predictor, data: bytes) -> np.ndarray:
        decoded.append(1)
        return real_decode(self, data)

    def predict(self: Predictor, x: np.ndarray, top_k: int = 5) -> list:
        at_predict.append(len(decoded))
        return real_predict(self, x, top_k)

    monkeypatch.setattr(Predictor, "decode", decode)
    monkeypatch.setattr(Predictor, "predict", predict)
    rows = batch.predict_files(Predictor(model, "onnx"), images, 3, 1, 1.0, workers=4)
    assert len(rows) == len(images) > 12 and len(at_predict) == -(-len(images) // 3)
    assert at_predict[0] <= 2 * 3  # the batch, and the one decoding behind it: not the whole input


def test_batch_size_follows_the_backend() -> None:
    assert batch.BATCH_SIZE == 0  # the flow's default: chosen per backend
    assert batch.default_batch_size(SimpleNamespace(on_gpu=True)) == batch.GPU_BATCH == 256  # type: ignore[arg-type]
    assert batch.default_batch_size(SimpleNamespace(on_gpu=False)) == batch.CPU_BATCH == 32  # type: ignore[arg-type]


# ---------------------------------------------------------------- on a CUDA GPU


def _need_cuda_ort() -> None:
    reason = cuda_refusal()
    if reason:
        pytest.skip(reason)


@pytest.mark.gpu
def test_onnx_cuda_matches_cpu_fp32_within_the_gate(model: Path, tiny_data_master: Path) -> None:
    _need_cuda_ort()
    gate, images = GateConfig(), _images(model, tiny_data_master)
    ref, got = onnx_logits(model / IMAGE_ONNX, images), onnx_logits(model / IMAGE_ONNX, images, cuda=True)
    assert np.abs(got - ref).max() <= gate.max_export_logit_diff
    assert (got.argmax(1) == ref.argmax(1)).mean() >= gate.min_export_agreement
    p = Predictor(model, "onnx-cuda")
    assert p.on_gpu and np.allclose(p.run(images)[0], Predictor(model, "onnx").run(images)[0], atol=1e-4)


@pytest.mark.gpu
def test_fp16_on_cuda_agrees_with_cpu_fp32(model: Path, tiny_data_master: Path) -> None:
    _need_cuda_ort()
    images = _images(model, tiny_data_master)
    ref, got = onnx_logits(model / IMAGE_ONNX, images), onnx_logits(model / FP16_ONNX, images, cuda=True)
    assert np.isfinite(got).all() and np.abs(got - ref).max() <= HALF_MAX_REL_DIFF * np.abs(ref).max()
    keep = _decisive(ref)
    assert keep.sum() >= 5 and (got[keep].argmax(1) == ref[keep].argmax(1)).mean() >= GateConfig().min_export_agreement
    assert Predictor(model, "onnx-cuda-fp16").run(images[:4])[0].dtype == np.float32


@pytest.mark.gpu
def test_pytorch_runs_bf16_on_cuda_and_agrees(model: Path, tiny_data_master: Path) -> None:
    import torch

    from clip_har.export.verify import check_bf16
    from clip_har.models.artifact import load_model

    images = _images(model, tiny_data_master)
    ref = onnx_logits(model / IMAGE_ONNX, images)
    result = check_bf16(load_model(model / TORCH_DIR)[0].eval(), images, ref, 0.0)
    assert result["measured"] and result["max_abs_logit_diff"] <= HALF_MAX_REL_DIFF * np.abs(ref).max()
    p = Predictor(model, "pytorch")
    probs, emb = p.run(images)
    ref_probs = Predictor(model, "onnx").run(images)[0]
    keep = _decisive(ref)
    assert p.on_gpu and torch.cuda.is_available() and probs.dtype == emb.dtype == np.float32
    assert (probs[keep].argmax(1) == ref_probs[keep].argmax(1)).mean() >= GateConfig().min_export_agreement
    assert not np.allclose(probs, ref_probs, atol=1e-6)  # bf16 arithmetic, not fp32's


@pytest.mark.gpu
def test_auto_picks_a_gpu_backend(model: Path) -> None:
    p = Predictor(model)
    assert p.requested == "auto" and (p.backend in CUDA_BACKENDS or p.backend == "pytorch") and p.on_gpu
    assert p.why.startswith("auto: fastest usable GPU backend")
    assert p.run(np.zeros((2, 3, p.preprocess.image_size, p.preprocess.image_size), np.uint8))[0].shape[0] == 2


@pytest.mark.gpu
def test_tensorrt_engine_agrees_with_fp32(model: Path, tmp_path: Path, tiny_data_master: Path) -> None:
    """Only where TensorRT imports (the device machine of ../shared/STACK.md has none)."""
    if tensorrt.unavailable_reason():
        pytest.skip(tensorrt.unavailable_reason())
    from clip_har.export.verify import check_engine

    store = Path(shutil.copytree(model, tmp_path / "store"))
    engine = tensorrt.build_engine(store / FP16_ONNX, store, Predictor(store).preprocess.image_size, (1, 8, 64))
    assert tensorrt.check_stamp(store) is None
    result = check_engine(engine, store / TORCH_DIR, tiny_data_master, 0.0)
    assert result["shipped"], result["why_not"]  # within HALF_MAX_REL_DIFF of fp32
    p = Predictor(store, "tensorrt")
    images = _images(model, tiny_data_master)
    assert p.run(images)[0].shape == (len(images), len(p.classes))  # more than one profile's worth

"""ONNX export parity, the int8 decision, TensorRT gating, and the ORT predictor."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clip_har.config import load_config
from clip_har.export.onnx_export import IMAGE_ONNX, TEXT_ONNX, OnnxMeta, export_onnx
from clip_har.export.tensorrt import EngineStamp, check_stamp, unavailable_reason
from clip_har.export.verify import INT8_ONNX, held_out_batch, parity, verify_export
from clip_har.models.artifact import ModelMeta, load_model, save_model
from clip_har.models.factory import build_model
from clip_har.preprocess import PreprocessConfig
from clip_har.serving.predictor import Predictor


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = load_config("tiny")
    bundle, clf = build_model(cfg)
    pre = PreprocessConfig(bundle.image_size, bundle.mean, bundle.std)
    meta = ModelMeta("tiny", list(cfg.data.classes), list(cfg.data.classes), list(cfg.model.templates), pre.to_dict())
    return save_model(clf, bundle, meta, tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("onnx") / "onnx"
    export_onnx(tiny_model, dest)
    return dest


def test_export_has_both_towers_and_metadata(tiny_onnx: Path) -> None:
    meta = OnnxMeta.load(tiny_onnx)
    assert (tiny_onnx / IMAGE_ONNX).is_file() and (tiny_onnx / TEXT_ONNX).is_file()
    assert len(meta.image_sha256) == 64 and meta.model.classes[0] == "calling"
    assert meta.context_length == 32 and meta.logit_scale > 1


def test_parity_on_held_out_images_with_dynamic_batch(
    tiny_model: Path, tiny_onnx: Path, tiny_data_master: Path
) -> None:
    images = held_out_batch(tiny_model, tiny_data_master, n=7)  # an odd batch: the axis is dynamic
    p = parity(load_model(tiny_model)[0].eval(), tiny_onnx / IMAGE_ONNX, images)
    assert p.n == 7 and p.max_abs_logit_diff < 1e-3 and p.top1_agreement == 1.0


def test_int8_ships_only_when_it_passes(tiny_model: Path, tiny_onnx: Path, tiny_data_master: Path) -> None:
    record = verify_export(tiny_model, tiny_onnx, tiny_data_master)
    assert {lat.backend for lat in record.latency} == {"pytorch", "onnx", "onnx-int8"}
    shipped = record.int8["shipped"]
    assert (tiny_onnx / INT8_ONNX).is_file() == shipped
    if not shipped:
        assert record.int8["why_not"], "a rejected int8 variant must say why"


def test_tensorrt_is_skipped_with_a_reason_without_gpu(tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        assert unavailable_reason()
    here = EngineStamp("10.0", "12.4", "NVIDIA H100", "9.0")
    assert check_stamp(tmp_path, here) == "engine has no stamp"
    (tmp_path / "engine_stamp.json").write_text(
        '{"tensorrt": "10.0", "cuda": "12.4", "gpu": "NVIDIA A10", "compute_capability": "8.6"}'
    )
    assert "built for" in (check_stamp(tmp_path, here) or "")
    assert check_stamp(tmp_path, EngineStamp("10.0", "12.4", "NVIDIA A10", "8.6")) is None


def test_predictor_predicts_and_classifies_free_text(tiny_onnx: Path, tiny_data_master: Path) -> None:
    pred = Predictor(tiny_onnx)
    img = next((tiny_data_master / "images").rglob("*.jpg")).read_bytes()
    batch = np.stack([pred.decode(img), pred.decode(img)])
    out = pred.predict(batch, top_k=3)
    assert len(out) == 2 and len(out[0].top_k) == 3 and out[0].label in pred.classes
    assert abs(sum(s for _, s in pred.predict(batch, top_k=99)[0].top_k) - 1.0) < 1e-4
    scores = pred.classify(batch, ["a cat", "someone running"])
    assert scores.shape == (2, 2) and np.allclose(scores.sum(1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="cannot decode"):
        pred.decode(b"not an image")
    buf = io.BytesIO()
    Image.new("RGB", (400, 400)).save(buf, format="PNG")
    small = Predictor(tiny_onnx, max_pixels=100 * 100)
    with pytest.raises(ValueError, match="more than the limit"):
        small.decode(buf.getvalue())
    with pytest.raises(ValueError, match="label"):
        pred.classify(batch, [])


def test_pytorch_backend_matches_onnx(
    tiny_model: Path, tiny_onnx: Path, tmp_path: Path, tiny_data_master: Path
) -> None:
    import shutil

    store = Path(shutil.copytree(tiny_onnx, tmp_path / "store"))
    with pytest.raises(FileNotFoundError, match="without PyTorch weights"):
        Predictor(store, "pytorch")
    shutil.copytree(tiny_model, store / "torch")
    images = held_out_batch(tiny_model, tiny_data_master, n=4)
    p_onnx, e_onnx = Predictor(store).run(images)
    p_torch, e_torch = Predictor(store, "pytorch").run(images)
    assert np.allclose(p_onnx, p_torch, atol=1e-4) and np.allclose(e_onnx, e_torch, atol=1e-4)
    with pytest.raises(ValueError, match="unknown backend"):
        Predictor(store, "tensorflow")


@pytest.mark.integration
def test_bento_holds_the_model_just_saved_under_the_configured_name(
    tiny_model: Path, tiny_onnx: Path, tmp_path: Path
) -> None:
    """Packaging under another model name (CLIP_HAR_MODEL_NAME) builds a Bento with that model,
    not the bentofile's default."""
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    code = (
        "import json, sys; from pathlib import Path; sys.path.insert(0, '.'); import bentoml;"
        "from deployments.bento_pack import package;"
        f"tags = package(Path({str(tiny_onnx)!r}), {{'data_version': 'd1'}}, 'har', Path({str(tiny_model)!r}));"
        "models = [str(m.tag) for m in bentoml.bentos.get(tags['bento']).info.models];"
        "print(json.dumps({**tags, 'models': models}))"
    )
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml")}  # BentoML reads it at import
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["bento_model"].startswith("har:") and result["models"] == [result["bento_model"]]


def test_batch_inference_predicts_a_video_in_batches(
    tiny_onnx: Path, tmp_path: Path, write_video: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frames go to the model `batch_size` at a time as they are decoded, never all at once."""
    from clip_har.serving import batch

    frames = [Image.new("RGB", (32, 32), (i * 30 % 255, 90, 40)) for i in range(10)]
    video = write_video(tmp_path / "v.mp4", frames, fps=10, size=96)
    sizes: list[int] = []
    real = Predictor.predict

    def spy(self: Predictor, pixels: np.ndarray, top_k: int = 5) -> list:
        sizes.append(len(pixels))
        return real(self, pixels, top_k)

    monkeypatch.setattr(Predictor, "predict", spy)
    rows = batch.predict_files(Predictor(tiny_onnx), [video], batch_size=4, top_k=1, video_fps=10)
    assert len(rows) == sum(sizes) >= 9 and max(sizes) <= 4 and all(r.error is None for r in rows)
    assert [r.frame_s for r in rows] == sorted(r.frame_s for r in rows)

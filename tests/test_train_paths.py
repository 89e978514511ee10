"""Training on GPUs, checked wherever it can be on a CPU: precision and strategy choice, memory
format, uint8 batches normalised and mirrored on the device, fused AdamW, compiling without
renaming weights, training on a machine with no MLOps stack; on a CUDA machine, the three
strategies train the tiny model alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy, SingleDeviceStrategy
from torch.utils.data import DataLoader, TensorDataset

from clip_har.config import load_config
from clip_har.data.datamodule import HARDataModule, loader_kwargs, split_dataset
from clip_har.models.artifact import load_model
from clip_har.models.factory import build_model
from clip_har.models.presets import build_clip
from clip_har.preprocess import PreprocessConfig, preprocess
from clip_har.synth.generate import SynthSpec, synthesize
from clip_har.train.module import (
    HARModule,
    adamw_kwargs,
    compile_in_place,
    is_convnet,
    is_distributed,
    normalize_pixels,
    wants_channels_last,
)
from clip_har.train.trainer import make_strategy, resolve_precision, use_compile

# What the GPU image lacks (docs/STACK.md, "The GPU machine"): training must not need any of it.
MLOPS = ("mlflow", "prefect", "bentoml", "great_expectations", "evidently", "dvc", "httpx")
BLOCK_MLOPS = textwrap.dedent(f"""
    import importlib.abc, sys

    class _NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {MLOPS!r}:
                raise ImportError(f"{{name}} is not installed here")
            return None

    sys.meta_path.insert(0, _NotInstalled())
""")
TRAINING_MODULES = (
    "clip_har.train.trainer",
    "clip_har.train.launch",
    "clip_har.train.module",
    "clip_har.train.checkpoint",
    "clip_har.data.datamodule",
    "clip_har.models.artifact",
    "clip_har.models.classifier",
    "clip_har.models.factory",
    "clip_har.models.presets",
    "clip_har.models.pretrain",
    "clip_har.preprocess",
)


def _python(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)


def _tiny_module(**kwargs: object) -> HARModule:
    cfg = load_config("tiny")
    bundle, model = build_model(cfg)
    return HARModule(model, len(cfg.data.classes), mean=bundle.mean, std=bundle.std, **kwargs)  # type: ignore[arg-type]


# -- choices made before the fit --------------------------------------------------------------


PRECISIONS = [
    (True, True, "auto", "bf16-mixed"),
    (True, True, "fsdp", "bf16-mixed"),
    (True, False, "auto", "16-mixed"),  # a GPU without native bf16 (V100, T4): fp16 with loss scaling
    (True, False, "fsdp", "32-true"),  # ModelParallelStrategy takes no 16-mixed
    (False, False, "auto", "32-true"),
    (False, True, "ddp", "32-true"),
]


@pytest.mark.parametrize(("cuda", "bf16", "strategy", "expected"), PRECISIONS)
def test_auto_precision_follows_the_gpu(cuda: bool, bf16: bool, strategy: str, expected: str) -> None:
    assert resolve_precision(load_config("tiny", [f"train.strategy={strategy}"]).train, cuda, bf16) == expected


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-true", "32-true"])
def test_an_explicit_precision_passes_through(precision: str) -> None:
    t = load_config("tiny", [f"train.precision={precision}"]).train
    assert resolve_precision(t, True, True) == resolve_precision(t, False, False) == precision


@pytest.mark.parametrize("cuda", [True, False])
@pytest.mark.parametrize("strategy", ["auto", "ddp", "fsdp"])
@pytest.mark.parametrize("num_nodes", [1, 3])
def test_strategy_is_fsdp2_on_gpus_too_and_spans_devices_times_nodes(
    cuda: bool, strategy: str, num_nodes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    cfg = load_config("tiny", [f"train.strategy={strategy}", "train.devices=2", f"train.num_nodes={num_nodes}"])
    chosen = make_strategy(cfg)
    assert not isinstance(chosen, FSDPStrategy)  # FSDP1 crashes on the first validation (STACK.md)
    if strategy == "fsdp":
        assert isinstance(chosen, ModelParallelStrategy)
        assert chosen._data_parallel_size == 2 * num_nodes and chosen._tensor_parallel_size == 1
    else:
        assert chosen == strategy  # Lightning spreads it over devices × num_nodes itself


def test_compile_is_honoured_on_cuda_only() -> None:
    t = load_config("tiny", ["train.compile=true"]).train
    assert use_compile(t, cuda=True) and not use_compile(t, cuda=False)
    assert not use_compile(load_config("tiny").train, cuda=True)


def test_channels_last_only_for_a_convnet_on_one_cpu() -> None:
    vit, convnet = build_clip("tiny").model.visual, build_clip("demo").model.visual
    assert is_convnet(convnet) and not is_convnet(vit)
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert wants_channels_last(convnet, cpu, distributed=False)
    assert not wants_channels_last(convnet, cpu, distributed=True)  # DDP, FSDP: never
    assert not wants_channels_last(convnet, gpu, distributed=False)
    assert not wants_channels_last(vit, cpu, distributed=False)
    assert not is_distributed(SingleDeviceStrategy(device=cpu))
    assert is_distributed(DDPStrategy()) and is_distributed(ModelParallelStrategy())


def test_fused_adamw_only_when_every_parameter_is_on_a_gpu() -> None:
    on = SimpleNamespace  # a parameter is only asked where it lives; no GPU needed to ask
    assert adamw_kwargs([on(device=torch.device("cuda", 0)), on(device=torch.device("cuda", 1))]) == {"fused": True}
    assert adamw_kwargs([torch.zeros(1)]) == {}
    assert adamw_kwargs([on(device=torch.device("cuda", 0)), torch.zeros(1)]) == {}
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], **adamw_kwargs([torch.zeros(1)]))  # a valid call on CPU


def test_loaders_pin_and_keep_workers_only_when_asked() -> None:
    assert loader_kwargs(0, False) == {"num_workers": 0, "pin_memory": False}  # the CPU demo, cached
    kw = loader_kwargs(4, True)
    assert kw["pin_memory"] and kw["persistent_workers"] and kw["prefetch_factor"] >= 2


# -- the device-side half of preprocessing ----------------------------------------------------


def test_cache_is_uint8_and_device_normalisation_equals_the_float_path(tiny_data: Path) -> None:
    cfg = load_config("tiny")
    bundle = build_clip("tiny")
    pre = PreprocessConfig(bundle.image_size, bundle.mean, bundle.std)
    raw = split_dataset(tiny_data, "val", cfg.data.classes, pre, cache=True, raw=True)
    assert raw._cache is not None and raw._cache.dtype == torch.uint8
    assert raw._cache.shape == (len(raw), 3, pre.image_size, pre.image_size)
    floats = split_dataset(tiny_data, "val", cfg.data.classes, pre, cache=False)  # what evaluation reads
    expected = torch.stack([floats[i][0] for i in range(len(floats))])
    assert expected.dtype == torch.float32
    assert torch.equal(expected[0], torch.from_numpy(preprocess(tiny_data / floats.paths[0], pre)))
    module = _tiny_module().eval()
    x, _ = module.on_after_batch_transfer((raw._cache.clone(), torch.zeros(len(raw))), 0)
    assert x.dtype == torch.float32
    torch.testing.assert_close(x, expected, atol=1e-6, rtol=0)
    dm = HARDataModule(tiny_data, cfg.data.classes, pre, batch_size=8)
    dm.setup("fit")
    batch, labels = next(iter(dm.train_dataloader()))
    assert batch.dtype == torch.uint8 and batch.shape == (8, 3, pre.image_size, pre.image_size)


def _mirrored(module: HARModule, x: torch.Tensor) -> torch.Tensor:
    """Which images of `x` came out of the module's batch hook mirrored (each must be one or the other)."""
    out, _ = module.on_after_batch_transfer((x, torch.zeros(len(x))), 0)
    plain = normalize_pixels(x, module.pixel_mean, module.pixel_std)
    mirror = normalize_pixels(x.flip(-1), module.pixel_mean, module.pixel_std)
    same = (out == plain).flatten(1).all(1)
    flipped = (out == mirror).flatten(1).all(1)
    assert bool((same | flipped).all())
    return flipped


def test_train_batches_are_mirrored_at_random_and_evaluation_batches_never() -> None:
    module = _tiny_module()
    torch.manual_seed(0)
    x = torch.randint(0, 256, (200, 3, 8, 8), dtype=torch.uint8)  # random: no image is its own mirror
    mirrored = _mirrored(module.train(), x)
    assert 60 < int(mirrored.sum()) < 140  # p = 1/2 per image: 100 ± 40 is beyond 5 sigma
    assert not _mirrored(module.eval(), x).any()


class _Recording(HARModule):
    """Records, for each batch Lightning hands over, the stage and whether the module trains."""

    seen: list[tuple[str, bool]]

    def on_after_batch_transfer(self, batch, dataloader_idx):  # type: ignore[no-untyped-def]
        self.seen.append((self.trainer.state.stage.value, self.training))
        return super().on_after_batch_transfer(batch, dataloader_idx)


def test_lightning_fetches_validation_batches_in_eval_mode(tmp_path: Path) -> None:
    """The flip keys on `self.training`: that Lightning sets it before each loop fetches batches."""
    cfg = load_config("tiny")
    bundle, model = build_model(cfg)
    module = _Recording(model, len(cfg.data.classes), mean=bundle.mean, std=bundle.std)
    module.seen = []
    s = bundle.image_size
    data = TensorDataset(torch.randint(0, 256, (8, 3, s, s), dtype=torch.uint8), torch.arange(8) % 3)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=1,
    )
    module.train()
    trainer.fit(module, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))
    assert {training for stage, training in module.seen if stage == "train"} == {True}
    assert {training for stage, training in module.seen if stage != "train"} == {False}
    assert {stage for stage, _ in module.seen} >= {"train", "validate", "sanity_check"}


def test_checkpoints_hold_model_weights_only_so_older_ones_load_strictly() -> None:
    module = _tiny_module()
    state = module.state_dict()
    assert state and all(k.startswith("model.") for k in state)  # no pixel_mean/pixel_std
    module.load_state_dict(state, strict=True)


@pytest.mark.parametrize("sharded", [False, True])
def test_compiling_keeps_parameter_names_and_outputs(sharded: bool) -> None:
    """`eager` backend: the same Dynamo capture as on a GPU, without Inductor's code generation."""
    torch._dynamo.reset()
    model = build_model(load_config("tiny"))[1].eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        before, names = model(x), list(model.state_dict())
    compile_in_place(model, sharded=sharded, backend="eager")
    with torch.no_grad():
        after = model(x)
    assert list(model.state_dict()) == names  # no `_orig_mod.`: checkpoints and _best_state unchanged
    torch.testing.assert_close(after, before)
    model(x).sum().backward()  # gradients flow through the compiled parts
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    torch._dynamo.reset()


# -- without the MLOps stack ------------------------------------------------------------------


def test_training_modules_import_without_the_mlops_stack() -> None:
    imports = "\n".join(f"import {m}" for m in TRAINING_MODULES)
    check = f"assert not {{n.partition('.')[0] for n in sys.modules}} & set({MLOPS!r})"
    proc = _python(f"{BLOCK_MLOPS}\n{imports}\n{check}\n")
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_a_cpu_fit_without_mlflow_writes_a_model(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = f"""{BLOCK_MLOPS}
import json
from dataclasses import asdict
from pathlib import Path
from clip_har.config import load_config
from clip_har.train.trainer import train
result = train(load_config("tiny", ["train.max_epochs=1"]), Path({str(tiny_data)!r}), Path({str(out)!r}),
               tracking_uri="")
print("RESULT", json.dumps(asdict(result)))
"""
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert result["run_id"] == "" and result["epochs"] == 1
    model, _, meta = load_model(Path(result["model_dir"]))
    assert meta.lineage["mlflow_run_id"] == "" and len(meta.classes) == 15
    assert list(out.glob("metrics/*/metrics.csv"))  # the metrics went somewhere readable


# -- on a CUDA GPU ----------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.integration
def test_auto_ddp_and_fsdp_train_alike_on_one_gpu(tmp_path: Path) -> None:
    """Each strategy in its own launcher process (DDP/FSDP start a process group), bf16-mixed by
    `precision: auto`, no MLflow. The demo model on the demo's data learns (macro-F1 0.94 after 10
    epochs on CPU, float32), so the three must land close together, whatever their batch order."""
    data = synthesize(tmp_path / "data", SynthSpec(n=3000, seed=0, size=64))
    scores = {}
    for strategy in ("auto", "ddp", "fsdp"):
        result = tmp_path / f"{strategy}.json"
        cmd = [sys.executable, "-m", "clip_har.train.launch", "--profile", "demo", "--data-root", str(data)]
        cmd += ["--out", str(tmp_path / strategy), "--result", str(result)]
        sets = (f"train.strategy={strategy}", "train.accelerator=gpu", "train.devices=1", "train.max_epochs=10")
        for o in (*sets, "train.early_stopping_patience=100"):
            cmd += ["--set", o]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{strategy}: {(proc.stdout + proc.stderr)[-3000:]}"
        out = json.loads(result.read_text())
        scores[strategy] = out["best_val_f1"]
        assert load_model(Path(out["model_dir"]))[2].classes[0] == "calling"
    assert min(scores.values()) > 0.5, scores  # chance is 1/15
    assert max(scores.values()) - min(scores.values()) <= 0.1, scores

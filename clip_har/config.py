"""Typed pipeline configuration: one model per concern, loaded from a named profile plus
dotted overrides (`train.max_epochs=3`). Unknown keys and bad values are errors with one
readable line, never silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clip_har.classes import DEFAULT_TEMPLATES, HAR_CLASSES, phrase_for

PROFILE_DIR = Path(__file__).parent / "profiles"
# train/val/test fractions wherever a dataset is split (profiles, ingest, the synthetic world)
DEFAULT_SPLITS = (0.7, 0.15, 0.15)


class ConfigError(ValueError):
    """A profile or override that cannot be used; the message is one line for the user."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SynthConfig(_Strict):
    n: int = 3000
    seed: int = 0
    size: int = 128
    style: Literal["day", "night"] = "day"
    priors: tuple[float, ...] = ()  # class priors, a drift knob; empty = uniform


class DataConfig(_Strict):
    source: Literal["synth", "folder", "csv"] = "synth"
    path: str | None = None  # image folder or CSV for the non-synthetic sources
    allow_outside: bool = False  # csv: rows may name files outside the CSV's folder
    name: str = "demo"  # dataset name in the data registry
    classes: tuple[str, ...] = HAR_CLASSES
    splits: tuple[float, float, float] = DEFAULT_SPLITS
    split_seed: int = 0
    synth: SynthConfig = SynthConfig()
    min_per_class: int = 10  # data gate: fewer examples of a class than this fails the run
    min_side: int = 16  # data gate: sane image sizes
    max_side: int = 8192


class ModelConfig(_Strict):
    preset: str = "demo"  # tiny | demo | any open_clip model name (ViT-B-32, ViT-B-16…)
    pretrained: str | None = None  # open_clip tag (needs network) or a local weights file
    phrases: dict[str, str] = {}  # per-class prompt phrase overrides
    templates: tuple[str, ...] = DEFAULT_TEMPLATES


class PretrainConfig(_Strict):
    """Contrastive pre-training of the base CLIP (offline profiles with no pretrained weights)."""

    enabled: bool = False
    n: int = 6000  # synthetic image-caption pairs (generator seed disjoint from the dataset's)
    seed: int = 1000
    epochs: int = 7
    batch_size: int = 64
    lr: float = 2e-3


class TrainConfig(_Strict):
    mode: Literal["linear_probe", "last_n", "full"] = "full"
    last_n: int = 2
    max_epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    head_lr: float | None = None  # defaults to lr
    weight_decay: float = 0.05
    label_smoothing: float = 0.0
    # "auto": bf16-mixed on a CUDA GPU that supports bf16, else 32-true (CPU); or any Lightning value
    precision: str = "auto"
    compile: bool = False  # torch.compile the model (CUDA; pays off on long runs, costs a warm-up)
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    accelerator: str = "auto"
    devices: int = 1  # processes (GPUs) per node
    # Hosts: each runs `torchrun --nnodes N --nproc-per-node <devices> … -m clip_har.train.launch`
    # (README, "Running beyond one machine"); Lightning reads the ranks torchrun sets.
    num_nodes: int = Field(default=1, ge=1)
    num_workers: int = 0
    cache_images: bool = True  # decode the dataset once into memory (small datasets)
    early_stopping_patience: int = 3
    seed: int = 0


class GateConfig(_Strict):
    min_improvement: float = 0.005  # macro-F1 a challenger must add over the champion
    zero_shot_margin: float = 0.0  # macro-F1 a model must add over zero-shot on the same split
    max_class_regression: float = 0.05  # largest per-class F1 drop allowed vs the champion
    max_export_logit_diff: float = 1e-3  # ONNX vs PyTorch on held-out images
    min_export_agreement: float = 0.99  # top-1 agreement ONNX vs PyTorch
    latency_p95_ms: float = 100.0  # single-image p95 budget of the backend that will serve


class ExportConfig(_Strict):
    enabled: bool = True
    # The CPU backend the gate's latency budget checks and `auto` serves without a GPU; int8 only if
    # it shipped. "auto": int8 whenever it shipped (shipping requires it to be faster), else fp32.
    serve_backend: Literal["onnx", "onnx-int8", "auto"] = "onnx"
    int8_min_agreement: float = 0.99
    fp16: bool = True  # export an fp16 graph (GPU serving); it ships only if it agrees with fp32
    # top-1 agreement with fp32 the fp16 graph, PyTorch bf16 and the TensorRT engine need to serve
    half_min_agreement: float = 0.99
    tensorrt: bool = True  # build an engine from the fp16 graph where a GPU and TensorRT exist; skipped otherwise
    package: bool = True  # BentoML model + Bento for promoted models


class RegistryConfig(_Strict):
    experiment: str = "clip-har"  # the MLflow experiment; the registered model's name is a setting


class RolloutConfig(_Strict):
    """How a model that passed the gate replaces the champion (clip_har.rollout)."""

    # Live requests the challenger scores in shadow beside the champion before the decision;
    # 0: no shadow, the alias moves as soon as the gate passes (the demo and the tests).
    shadow_requests: int = Field(default=0, ge=0)
    # Top-1 agreement with the champion on live images: a gated model that disagrees more than
    # this on real traffic behaves unlike the one the test split measured.
    min_agreement: float = Field(default=0.8, ge=0.0, le=1.0)
    # The challenger's accuracy on the review queue's labelled images (people's labels of live
    # traffic); counted only from `min_reviewed` images on, since few say little and waiting for
    # people to label would stall every rollout (the decision says when it was not judged).
    min_reviewed_accuracy: float = Field(default=0.8, ge=0.0, le=1.0)
    min_reviewed: int = Field(default=30, ge=1)
    # Share of the shadow requests (scored or failed) the challenger may fail: it would fail them serving.
    max_error_rate: float = Field(default=0.01, ge=0.0, le=1.0)
    # After a rollout's promotion, a prediction-drift alarm within this many seconds puts the
    # previous champion back (the drift-monitor flow).
    rollback_window_s: float = Field(default=86400.0, ge=0.0)


class PipelineConfig(_Strict):
    profile: str = "demo"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    train: TrainConfig = TrainConfig()
    gate: GateConfig = GateConfig()
    export: ExportConfig = ExportConfig()
    registry: RegistryConfig = RegistryConfig()
    rollout: RolloutConfig = RolloutConfig()

    @model_validator(mode="after")
    def _shadow_needs_a_package(self) -> PipelineConfig:
        if self.rollout.shadow_requests and not (self.export.enabled and self.export.package):
            raise ValueError(
                "rollout.shadow_requests > 0 needs export.enabled and export.package (the service shadows a Bento)"
            )
        return self


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def _set_dotted(tree: dict, key: str, value: object) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise ConfigError(f"bad override {text!r}: expected key=value, e.g. train.max_epochs=3")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"bad override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"bad override {text!r}: value is not valid YAML ({exc.problem})") from exc
    return key.strip(), value


def default_profile() -> str:
    """The `profile` setting (CLIP_HAR_PROFILE, else `demo`): what scheduled and event-triggered runs use."""
    # imported here: model/train/export code reads configs on GPU images without pydantic-settings
    from clip_har.settings import load_settings

    return load_settings().profile


def profile_path(profile: str) -> Path:
    """A built-in profile name, or the path of a YAML file in the same format (your own data)."""
    if profile.endswith((".yaml", ".yml")):
        path = Path(profile)
        if not path.is_file():
            raise ConfigError(f"profile file {profile} does not exist")
        return path
    path = PROFILE_DIR / f"{profile}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown profile {profile!r}; available: {', '.join(available_profiles())}")
    return path


def load_config(profile: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Profile (name or YAML path; default `default_profile()`) + `key=value` overrides →
    a validated config (ConfigError otherwise)."""
    profile = profile or default_profile()
    path = profile_path(profile)
    tree = yaml.safe_load(path.read_text()) or {}
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    tree["profile"] = profile
    try:
        return PipelineConfig.model_validate(tree)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        what = f"{where}: {first['msg']}" if where else first["msg"].removeprefix("Value error, ")  # a model-wide rule
        raise ConfigError(f"invalid config ({profile}): {what}") from exc


def phrases_for(cfg: PipelineConfig) -> list[str]:
    """The prompt phrase of each class, in class order."""
    return [cfg.model.phrases.get(c, phrase_for(c)) for c in cfg.data.classes]

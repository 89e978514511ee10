"""Inference over an exported model directory, behind one interface whatever runs it: ONNX
Runtime on the CPU (fp32, int8) or on CUDA (fp32, fp16), a TensorRT engine, or the stored
PyTorch model (bf16 on a CUDA GPU, fp32 on the CPU). `auto` picks the fastest of those that
passed their checks and can run on this machine.

Used by the HTTP service and batch inference. Preprocessing, labels and prompts come from the
exported metadata; nothing is re-declared here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clip_har.export.onnx_export import IMAGE_ONNX, TEXT_ONNX, OnnxMeta
from clip_har.export.tensorrt import ENGINE, EngineStamp, check_stamp
from clip_har.export.verify import CUDA_EP, FP16_ONNX, INT8_ONNX, RECORD, ExportRecord, cuda_refusal, ort_session
from clip_har.preprocess import MAX_ASPECT_RATIO, MAX_PIXELS, load_image, normalize, to_array, to_pixels

TORCH_DIR = "torch"  # the PyTorch model artifact, stored beside the ONNX graphs
# What each concrete backend runs; `auto` resolves to one of them.
ARTIFACTS = {
    "onnx": IMAGE_ONNX,
    "onnx-int8": INT8_ONNX,
    "onnx-cuda": IMAGE_ONNX,
    "onnx-cuda-fp16": FP16_ONNX,
    "tensorrt": ENGINE,
    "pytorch": TORCH_DIR,
}
BACKENDS = ("auto", *ARTIFACTS)
CUDA_BACKENDS = ("onnx-cuda", "onnx-cuda-fp16", "tensorrt")  # never run without a GPU
# `auto`'s preference among GPU backends: a fixed order, not a probe at load, because every
# process of the service resolves `auto` (the entry process never loads the graph, yet reports the
# backend) and they must agree, cheaply. Measured on an H100 (../shared/STACK.md): PyTorch bf16
# 20k img/s vs ORT CUDA fp32 4.7k at batch 256, so PyTorch bf16 ranks above the ORT fp16 graph
# (not measured yet; bench/gpu.py will say); TensorRT's engine is the fused form of the fp16 graph.
GPU_ORDER = ("tensorrt", "pytorch", "onnx-cuda-fp16", "onnx-cuda")
Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # float32 batch → (logits, embeddings)


@dataclass
class Prediction:
    label: str
    score: float
    top_k: list[tuple[str, float]]
    embedding: np.ndarray


@dataclass(frozen=True)
class Machine:
    """What decides which backends can run here (pure data, so `choose_backend` is testable)."""

    cuda: bool  # PyTorch sees a CUDA GPU
    providers: tuple[str, ...]  # ONNX Runtime's execution providers
    stamp: EngineStamp | None  # TensorRT + GPU identity, None without either


def this_machine(model_dir: Path | None = None) -> Machine:
    """The running machine; TensorRT is imported only where a GPU and an engine exist."""
    import onnxruntime as ort
    import torch

    cuda = torch.cuda.is_available()
    engine = model_dir is not None and (Path(model_dir) / ENGINE).is_file()
    if cuda and engine:
        from clip_har.export.tensorrt import current_stamp

        stamp = current_stamp()
    else:
        stamp = None
    return Machine(cuda, tuple(ort.get_available_providers()), stamp)


def _record(model_dir: Path) -> ExportRecord | None:
    path = Path(model_dir) / RECORD
    return ExportRecord.load(path) if path.is_file() else None


def gpu_refusal(backend: str, model_dir: Path, machine: Machine, record: ExportRecord | None) -> str | None:
    """Why `auto` must not pick the GPU backend `backend` here (None when it may)."""
    if not machine.cuda:
        return "no CUDA GPU"
    if not (Path(model_dir) / ARTIFACTS[backend]).exists():
        return f"no {ARTIFACTS[backend]} in the model"
    if backend in ("onnx-cuda", "onnx-cuda-fp16") and CUDA_EP not in machine.providers:
        return f"ONNX Runtime has no {CUDA_EP}"
    if backend == "onnx-cuda-fp16" and not (record and record.fp16.get("shipped")):
        return "fp16 did not pass its check"  # the graph ships only when it passed; a hand-copied one did not
    if backend == "tensorrt":
        if not (record and record.tensorrt.get("built")):
            return "the engine did not pass its check"  # an engine left behind unchecked is never served
        return check_stamp(model_dir, machine.stamp) if machine.stamp else "no TensorRT here"
    if backend == "pytorch" and record and record.bf16.get("measured") and not record.bf16.get("shipped"):
        return "bf16 failed its check"
    # an unmeasured bf16 (export on a CPU) is allowed: the model trains in bf16-mixed on GPUs
    return None


def choose_backend(model_dir: Path, machine: Machine) -> tuple[str, str]:
    """`auto` → (concrete backend, why, in one line). GPU backends first, in GPU_ORDER; without a
    usable one, the CPU backend the gate checked (the export record's `serve_backend`), so that a
    CPU machine serves exactly what it served before `auto` existed."""
    record = _record(model_dir)
    refusals = {b: gpu_refusal(b, model_dir, machine, record) for b in GPU_ORDER}
    usable = [b for b in GPU_ORDER if refusals[b] is None]
    if usable:
        return usable[0], f"auto: fastest usable GPU backend (order {' > '.join(GPU_ORDER)})"
    cpu = record.serve_backend if record else "onnx"
    if cpu not in ("onnx", "onnx-int8") or not (Path(model_dir) / ARTIFACTS[cpu]).is_file():
        cpu = "onnx"
    why = "no CUDA GPU here" if not machine.cuda else "no GPU backend usable here: " + _summary(refusals)
    return cpu, f"auto: {why}; {cpu} is the CPU backend the gate checked"


def _summary(refusals: dict[str, str | None]) -> str:
    return ", ".join(f"{b} ({r})" for b, r in refusals.items() if r)


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class Predictor:
    """One backend behind `run`/`predict`. `backend` is the concrete backend that runs (what
    `auto` resolved to), `requested` what was asked for, `why` how it was chosen."""

    def __init__(
        self, onnx_dir: Path, backend: str = "auto", threads: int = 0, max_pixels: int = MAX_PIXELS, spin: bool = True
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
        self.dir = Path(onnx_dir)
        self.meta = OnnxMeta.load(self.dir)
        self.requested = backend
        if backend == "auto":
            self.backend, self.why = choose_backend(self.dir, this_machine(self.dir))
        else:
            self.backend, self.why = backend, "configured"
        self.max_pixels = max_pixels
        self.preprocess = self.meta.model.preprocess_config()
        self.classes = list(self.meta.model.classes)
        self._text_path = self.dir / TEXT_ONNX
        self._text = None
        self._tokenizer = None
        # The image graph (or PyTorch model) loads on the first `run`: a process that only
        # decodes requests and scores text (the service's entry) never holds a copy of it.
        self._runner: Runner | None = None
        self._threads, self._spin = threads, spin
        self._image_path = self.dir / ARTIFACTS[self.backend]
        self._refuse_unrunnable()

    def _refuse_unrunnable(self) -> None:
        """At construction, with one line: a missing artifact, or a backend this machine cannot run."""
        path, backend = self._image_path, self.backend
        if backend == "pytorch" and not path.is_dir():
            raise FileNotFoundError(f"{path} is missing: this model was stored without PyTorch weights")
        if backend == "tensorrt" and not path.is_file():
            raise FileNotFoundError(f"{path} is missing: engines are built only where TensorRT and a GPU exist")
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing (int8 and fp16 ship only when they passed their checks)")
        if backend in ("onnx-cuda", "onnx-cuda-fp16"):
            refusal = cuda_refusal()
            if refusal:
                raise RuntimeError(f"backend {backend}: {refusal}")
        if backend == "tensorrt":
            refusal = check_stamp(self.dir)
            if refusal:
                raise RuntimeError(f"backend tensorrt: {refusal}")

    @property
    def on_gpu(self) -> bool:
        """Whether this predictor computes on a CUDA GPU (batch sizes follow it)."""
        if self.backend == "pytorch":
            import torch

            return torch.cuda.is_available()
        return self.backend in CUDA_BACKENDS

    def _load_runner(self) -> Runner:
        if self._runner is None:
            if self.backend == "pytorch":
                self._runner = _torch_runner(self._image_path)
            elif self.backend == "tensorrt":
                from clip_har.export.tensorrt import EngineRunner

                self._runner = EngineRunner(self._image_path)
            else:
                cuda = self.backend in CUDA_BACKENDS
                self._runner = _ort_runner(ort_session(self._image_path, self._threads, self._spin, cuda))
        return self._runner

    def decode(self, data: bytes) -> np.ndarray:
        """Bytes → preprocessed array; ValueError with a reason for anything unusable."""
        return to_array(load_image(data, self.max_pixels, MAX_ASPECT_RATIO), self.preprocess)

    def decode_pixels_with_stats(self, data: bytes) -> tuple[np.ndarray, dict[str, float]]:
        """Bytes → uint8 pixels [3,S,S] (normalised by `run`), plus the raw image's statistics
        for the prediction log; ValueError with a reason for anything unusable."""
        from clip_har.monitoring.predlog import image_stats

        im = load_image(data, self.max_pixels, MAX_ASPECT_RATIO)
        return to_pixels(im, self.preprocess), image_stats(im)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[N,3,S,S] normalised float32, or uint8 pixels → (probabilities [N,C], embeddings [N,D])."""
        if batch.dtype == np.uint8:
            batch = normalize(batch, self.preprocess)
        logits, emb = self._load_runner()(batch.astype(np.float32, copy=False))
        return softmax(logits), emb

    def predict(self, batch: np.ndarray, top_k: int = 5) -> list[Prediction]:
        probs, emb = self.run(batch)
        k = max(1, min(top_k, len(self.classes)))
        out = []
        for p, e in zip(probs, emb, strict=True):
            order = np.argsort(-p)[:k]
            top = [(self.classes[i], float(p[i])) for i in order]
            out.append(Prediction(top[0][0], top[0][1], top, e))
        return out

    def text_embeddings(self, labels: Sequence[str]) -> np.ndarray:
        """[L, D] normalised prompt-ensemble embeddings for free-text labels."""
        if self._text is None:
            import open_clip

            from clip_har.models.presets import open_clip_name

            self._text = ort_session(self._text_path)
            self._tokenizer = open_clip.get_tokenizer(open_clip_name(self.meta.model.preset))
        templates = self.meta.model.templates
        prompts = [t.format(label) for label in labels for t in templates]
        tokens = self._tokenizer(prompts).numpy()  # type: ignore[misc]
        emb = self._text.run(["text_embedding"], {"tokens": tokens})[0]
        emb = emb.reshape(len(labels), len(templates), -1).mean(axis=1)
        return emb / np.linalg.norm(emb, axis=-1, keepdims=True)

    def classify(self, batch: np.ndarray, labels: Sequence[str]) -> np.ndarray:
        """Zero-shot scores [N, L] over free-text labels."""
        return self.zero_shot(self.run(batch)[1], labels)

    def zero_shot(self, embeddings: np.ndarray, labels: Sequence[str]) -> np.ndarray:
        """Scores [N, L] of image embeddings against free-text labels (softmax over labels)."""
        if not labels:
            raise ValueError("at least one candidate label is required")
        return softmax(self.meta.logit_scale * embeddings @ self.text_embeddings(labels).T)


def _ort_runner(sess) -> Runner:  # an onnxruntime.InferenceSession
    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, emb = sess.run(["logits", "embedding"], {"pixel_values": batch})
        return logits, emb

    return run


def _torch_runner(model_dir: Path) -> Runner:
    """The stored PyTorch model: bf16 autocast on a CUDA GPU with native bf16 (the precision it
    trains in there; 4x fp32's throughput on an H100), fp32 elsewhere (emulated bf16, as on a V100
    or T4, is slower than fp32); float32 numpy out either way."""
    import torch

    from clip_har.models.artifact import load_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(model_dir)[0].eval().to(device)
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=bf16):
            emb = model.embed(torch.from_numpy(batch).to(device))
            logits = model.head(emb)
        return logits.float().cpu().numpy(), emb.float().cpu().numpy()

    return run

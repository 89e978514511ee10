"""Inference without PyTorch graphs: ONNX Runtime sessions over an exported model directory.

Used by the HTTP service and batch inference. Preprocessing, labels and prompts come from the
exported metadata; nothing is re-declared here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clip_har.export.onnx_export import IMAGE_ONNX, TEXT_ONNX, OnnxMeta
from clip_har.export.verify import INT8_ONNX, ort_session
from clip_har.preprocess import MAX_ASPECT_RATIO, MAX_PIXELS, load_image, normalize, to_array, to_pixels

BACKENDS = ("onnx", "onnx-int8", "pytorch")
TORCH_DIR = "torch"  # the PyTorch model artifact, stored beside the ONNX graphs


@dataclass
class Prediction:
    label: str
    score: float
    top_k: list[tuple[str, float]]
    embedding: np.ndarray


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class Predictor:
    """ONNX Runtime backends (fp32, int8); `pytorch` runs the stored PyTorch artifact instead,
    behind the same interface, for comparison and for models that do not export."""

    def __init__(
        self, onnx_dir: Path, backend: str = "onnx", threads: int = 0, max_pixels: int = MAX_PIXELS, spin: bool = True
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
        self.dir = Path(onnx_dir)
        self.meta = OnnxMeta.load(self.dir)
        self.backend = backend
        self.max_pixels = max_pixels
        self.preprocess = self.meta.model.preprocess_config()
        self.classes = list(self.meta.model.classes)
        self._text_path = self.dir / TEXT_ONNX
        self._text = None
        self._tokenizer = None
        # The image graph (or PyTorch model) loads on the first `run`: a process that only
        # decodes requests and scores text (the service's entry) never holds a copy of it.
        self._runner = None
        self._threads, self._spin = threads, spin
        if backend == "pytorch":
            self._image_path = self.dir / TORCH_DIR
            if not self._image_path.is_dir():
                raise FileNotFoundError(f"{self._image_path} is missing: this model was stored without PyTorch weights")
            return
        self._image_path = self.dir / (INT8_ONNX if backend == "onnx-int8" else IMAGE_ONNX)
        if not self._image_path.is_file():
            raise FileNotFoundError(f"{self._image_path} is missing (int8 ships only when it passed its checks)")

    def _load_runner(self):  # an ORT session or a CLIPClassifier
        if self._runner is None:
            if self.backend == "pytorch":
                from clip_har.models.artifact import load_model

                self._runner = load_model(self._image_path)[0].eval()
            else:
                self._runner = ort_session(self._image_path, self._threads, self._spin)
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
        runner = self._load_runner()
        if self.backend == "pytorch":
            import torch

            with torch.no_grad():
                emb_t = runner.embed(torch.from_numpy(batch.astype(np.float32)))
                return softmax(runner.head(emb_t).numpy()), emb_t.numpy()
        logits, emb = runner.run(["logits", "embedding"], {"pixel_values": batch.astype(np.float32)})
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

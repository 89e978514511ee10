"""The one image preprocessing: decode, EXIF-orient, RGB, centre square, resize, normalise.
Training, evaluation and every serving backend call this; its parameters travel in
the model metadata so nothing re-declares them.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Decompression-bomb guard: refuse images with more pixels than this before decoding them.
MAX_PIXELS = 50_000_000
# Longer side over shorter side beyond this is not a photo of an action (a 2×20000 strip): the
# service refuses it from the header, before decoding (training data is the data gate's business).
MAX_ASPECT_RATIO = 20.0


@dataclass(frozen=True)
class PreprocessConfig:
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> PreprocessConfig:
        return cls(
            image_size=int(d["image_size"]),  # type: ignore[arg-type]
            mean=tuple(d["mean"]),  # type: ignore[arg-type]
            std=tuple(d["std"]),  # type: ignore[arg-type]
            interpolation=str(d.get("interpolation", "bicubic")),
        )


def load_image(src: str | Path | bytes, max_pixels: int = MAX_PIXELS, max_aspect: float | None = None) -> Image.Image:
    """Decode to an upright RGB image; raises ValueError with a reason on anything unusable
    (more than `max_pixels`, or an aspect ratio beyond `max_aspect` when given)."""
    try:
        im = Image.open(io.BytesIO(src) if isinstance(src, bytes) else src)
        w, h = im.size
        if w * h > max_pixels:
            raise ValueError(f"image has {w * h} pixels, more than the limit {max_pixels}")
        if max_aspect is not None and max(w, h) > max_aspect * max(min(w, h), 1):
            raise ValueError(f"image is {w}×{h}: aspect ratio beyond {max_aspect:g}:1")
        im.load()
        im = ImageOps.exif_transpose(im)
    except ValueError:
        raise
    except UnidentifiedImageError as exc:
        raise ValueError("cannot decode image: not a recognised image format") from exc
    except Exception as exc:  # PIL raises many types for bad data (truncated, …)
        raise ValueError(f"cannot decode image: {exc}") from exc
    return im.convert("RGB")


_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def to_pixels(im: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """RGB image → uint8 [3, S, S]: the centre square, resized to S, not yet normalised. A quarter
    of the float32 bytes, which matters when batches cross a process boundary. The square is
    cropped before resizing (one `resize` with a source box): resizing the short side to S first
    would scale the long side too, costing memory and time in proportion to the aspect ratio."""
    s = cfg.image_size
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    im = im.resize((s, s), _RESAMPLE[cfg.interpolation], box=(left, top, left + side, top + side))
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))


def normalize(pixels: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """uint8 [..., 3, S, S] → float32, scaled to [0, 1] and normalised per channel."""
    shape = (3, 1, 1)
    mean = np.asarray(cfg.mean, dtype=np.float32).reshape(shape)
    std = np.asarray(cfg.std, dtype=np.float32).reshape(shape)
    return np.ascontiguousarray((pixels.astype(np.float32) / 255.0 - mean) / std)


def to_array(im: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """RGB image → float32 [3, S, S], normalised."""
    return normalize(to_pixels(im, cfg), cfg)


def pixels(src: str | Path | bytes, cfg: PreprocessConfig) -> np.ndarray:
    """Decode → uint8 [3, S, S]: `preprocess` without the normalisation, which training does on
    the device (`normalize` gives the same values on the host)."""
    return to_pixels(load_image(src), cfg)


def preprocess(src: str | Path | bytes, cfg: PreprocessConfig) -> np.ndarray:
    return to_array(load_image(src), cfg)

"""The one preprocessing: work is bounded by the model's input size, whatever the image's shape."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from clip_har.preprocess import MAX_ASPECT_RATIO, PreprocessConfig, load_image, to_pixels

CFG = PreprocessConfig(64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (120, 30, 200)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("size", [(2, 20_000), (40_000, 1)])
def test_absurd_aspect_ratios_are_refused_before_decoding(size: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="aspect ratio"):
        load_image(_png(*size), max_aspect=MAX_ASPECT_RATIO)  # ~200 bytes that cost hundreds of MB to resize


def test_resizing_never_makes_more_than_the_model_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    """An elongated image is cropped to its centre square before it is resized: the only resize
    produces the model's S×S, never an intermediate scaled to the long side."""
    sizes: list[tuple[int, int]] = []
    real = Image.Image.resize

    def spy(self: Image.Image, size: tuple[int, int], *args: object, **kwargs: object) -> Image.Image:
        sizes.append(tuple(size))
        return real(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    w, h = 50, 50 * int(MAX_ASPECT_RATIO)
    out = to_pixels(load_image(_png(w, h)), CFG)
    assert out.shape == (3, 64, 64) and sizes == [(64, 64)]


def test_centre_crop_keeps_the_centre() -> None:
    arr = np.zeros((100, 300, 3), np.uint8)
    arr[:, 100:200] = 255  # a white centre square between black side bands
    out = to_pixels(Image.fromarray(arr), CFG)
    assert out.min() > 240  # only the centre square survives

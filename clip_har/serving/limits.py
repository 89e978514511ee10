"""Request limits of the HTTP service, configurable by environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass

from clip_har.preprocess import MAX_PIXELS


def _env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not a number") from exc
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {raw}")
    return value


@dataclass(frozen=True)
class Limits:
    max_files: int = 16  # images per request
    max_file_mb: float = 10.0  # per uploaded image
    max_pixels: int = MAX_PIXELS  # decompression-bomb guard, checked before decoding
    max_labels: int = 64  # free-text labels for /classify
    max_label_chars: int = 200
    max_video_mb: float = 100.0
    max_frames: int = 300  # sampled frames per video

    @classmethod
    def from_env(cls) -> Limits:
        d = cls()
        return cls(
            max_files=int(_env("CLIP_HAR_MAX_FILES", d.max_files)),
            max_file_mb=_env("CLIP_HAR_MAX_FILE_MB", d.max_file_mb),
            max_pixels=int(_env("CLIP_HAR_MAX_PIXELS", d.max_pixels)),
            max_labels=int(_env("CLIP_HAR_MAX_LABELS", d.max_labels)),
            max_label_chars=int(_env("CLIP_HAR_MAX_LABEL_CHARS", d.max_label_chars)),
            max_video_mb=_env("CLIP_HAR_MAX_VIDEO_MB", d.max_video_mb),
            max_frames=int(_env("CLIP_HAR_MAX_FRAMES", d.max_frames)),
        )

"""Video: sample frames at a target rate and turn per-frame labels into smoothed segments."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from clip_har.preprocess import MAX_PIXELS

T = TypeVar("T")


@dataclass
class Segment:
    start_s: float
    end_s: float
    label: str
    score: float


def iter_frames(
    path: Path, fps: float, max_frames: int, transform: Callable[[Image.Image], T], max_pixels: int = MAX_PIXELS
) -> Iterator[tuple[float, T]]:
    """(timestamp, transform(RGB frame)) at about `fps` frames per second. Each frame is
    transformed as soon as it is decoded (e.g. to the model's pixels), so what is kept does not
    grow with the video's resolution; frames over `max_pixels` are refused from the stream's
    header. ValueError with a reason for anything undecodable."""
    import av

    if not 0 < fps <= 60:
        raise ValueError(f"fps must be in (0, 60], got {fps}")
    try:
        container = av.open(str(path))
    except Exception as exc:  # PyAV raises many FFmpeg error types
        raise ValueError(f"cannot open video: {exc}") from exc
    n, next_t = 0, 0.0
    try:
        if not container.streams.video:
            raise ValueError("the file has no video stream")
        stream = container.streams.video[0]
        w, h = stream.codec_context.width, stream.codec_context.height
        if w * h > max_pixels:
            raise ValueError(f"video frames are {w}×{h}, more than the limit of {max_pixels} pixels")
        for frame in container.decode(stream):
            t = float(frame.time) if frame.time is not None else next_t
            if t + 1e-6 < next_t:
                continue
            if frame.width * frame.height > max_pixels:  # a stream may change size after its header
                raise ValueError(f"a video frame is {frame.width}×{frame.height}, more than {max_pixels} pixels")
            yield round(t, 3), transform(frame.to_image().convert("RGB"))
            n, next_t = n + 1, t + 1.0 / fps
            if n >= max_frames:
                break
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"cannot decode video: {exc}") from exc
    finally:
        container.close()
    if n == 0:
        raise ValueError("no decodable frames in the video")


def sample_frames(
    path: Path, fps: float, max_frames: int, transform: Callable[[Image.Image], T], max_pixels: int = MAX_PIXELS
) -> list[tuple[float, T]]:
    """All of `iter_frames` at once (at most `max_frames`)."""
    return list(iter_frames(path, fps, max_frames, transform, max_pixels))


def smooth_segments(
    times: list[float], probs: np.ndarray, classes: list[str], fps: float, window: int = 3
) -> list[Segment]:
    """Majority vote of per-frame top labels over a sliding window, then merge runs of equal
    labels into segments scored by the mean probability of their label."""
    top = probs.argmax(axis=1)
    half = window // 2
    segments: list[Segment] = []
    step = 1.0 / fps
    run: list[float] = []
    for i, t in enumerate(times):
        votes = Counter(top[max(0, i - half) : i + half + 1].tolist())
        best = max(votes.values())
        # ties keep the frame's own label, so short videos are not relabelled
        k = int(top[i]) if votes[int(top[i])] == best else votes.most_common(1)[0][0]
        label, score = classes[k], float(probs[i, k])
        if segments and segments[-1].label == label:
            run.append(score)
            segments[-1].end_s = round(t + step, 3)
            segments[-1].score = float(np.mean(run))
        else:
            run = [score]
            segments.append(Segment(t, round(t + step, 3), label, score))
    return segments

"""Batch-inference input collection, video frame sampling (bounded by the model's size) and segment smoothing."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from clip_har.serving.batch import Row, collect, write_rows
from clip_har.serving.video import smooth_segments


def test_collect_folders_csvs_and_files(tmp_path: Path) -> None:
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    for name in ("a.jpg", "sub/b.png", "notes.txt", "sub/c.mp4"):
        (tmp_path / "imgs" / name).write_bytes(b"x")
    (tmp_path / "list.csv").write_text("path,label\nimgs/a.jpg,running\n/abs/x.jpg,\n")
    files = collect([tmp_path / "imgs", tmp_path / "list.csv", tmp_path / "one.jpg"])
    names = [f.name for f in files]
    assert names == ["a.jpg", "b.png", "c.mp4", "a.jpg", "x.jpg", "one.jpg"]
    assert files[3] == tmp_path / "imgs" / "a.jpg" and files[4] == Path("/abs/x.jpg")
    (tmp_path / "bad.csv").write_text("file\nx.jpg\n")
    with pytest.raises(ValueError, match="'path' column"):
        collect([tmp_path / "bad.csv"])


def test_write_rows_csv_and_json(tmp_path: Path) -> None:
    rows = [Row("a.jpg", None, "running", 0.9, "running:0.9"), Row("b.jpg", error="cannot decode image")]
    assert write_rows(rows, tmp_path / "p.csv").read_text().splitlines()[0] == "path,frame_s,label,score,top_k,error"
    assert '"error": "cannot decode image"' in write_rows(rows, tmp_path / "p.json").read_text()
    assert not list(tmp_path.glob("*.tmp"))


def test_segments_smooth_single_frame_flicker() -> None:
    classes = ["running", "sitting"]
    top = [0, 0, 1, 0, 0, 1, 1, 1]  # one flickering frame inside a run of "running"
    probs = np.array([[0.9, 0.1] if k == 0 else [0.2, 0.8] for k in top])
    segs = smooth_segments([i * 0.5 for i in range(8)], probs, classes, fps=2.0)
    assert [(s.label, s.start_s, s.end_s) for s in segs] == [("running", 0.0, 2.5), ("sitting", 2.5, 4.0)]
    assert segs[0].score < 0.9  # the flicker frame's lower "running" probability counts
    one = smooth_segments([0.0], np.array([[0.3, 0.7]]), classes, fps=1.0)
    assert [(s.label, s.end_s) for s in one] == [("sitting", 1.0)]


def _frames(n: int) -> list:
    from PIL import Image

    return [Image.new("RGB", (32, 32), (i * 20 % 255, 80, 160)) for i in range(n)]


def test_frames_are_kept_at_the_models_size(tmp_path: Path, write_video: Callable[..., Path]) -> None:
    from functools import partial

    from clip_har.preprocess import PreprocessConfig, to_pixels
    from clip_har.serving.video import sample_frames

    video = write_video(tmp_path / "v.mp4", _frames(6), fps=2, size=128)
    pixels = partial(to_pixels, cfg=PreprocessConfig(16, (0.5,) * 3, (0.5,) * 3))
    frames = sample_frames(video, fps=2, max_frames=10, transform=pixels)
    assert len(frames) >= 5 and {px.shape for _, px in frames} == {(3, 16, 16)}


def test_frames_over_the_pixel_limit_are_refused_before_decoding(
    tmp_path: Path, write_video: Callable[..., Path]
) -> None:
    from clip_har.serving.video import sample_frames

    video = write_video(tmp_path / "v.mp4", _frames(2), size=128)
    with pytest.raises(ValueError, match="video frames are 128×128"):
        sample_frames(video, fps=1, max_frames=10, transform=lambda im: im, max_pixels=128 * 128 - 1)

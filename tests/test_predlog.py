"""Prediction log: batched background writes, nothing lost on close, bad parts skipped."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clip_har.monitoring.predlog import PredictionLog, PredictionRecord, embeddings_matrix, image_stats, read_log


def _rec(i: int, ts: float) -> PredictionRecord:
    return PredictionRecord(f"r{i}", "clip-har:v1", "running", 0.9, [float(i), 1.0], 100.0, 20.0, 64, 64, ts=ts)


def test_everything_queued_is_written_on_close(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_rows=7, flush_seconds=60)
    for i in range(50):
        assert log.append(_rec(i, 1_700_000_000 + i))
    log.close()
    df, skipped = read_log(tmp_path)
    assert len(df) == 50 and skipped == [] and log.written == 50
    assert list(df["request_id"])[:3] == ["r0", "r1", "r2"]
    assert len(list(tmp_path.rglob("part-*.parquet"))) == 8  # 7 full batches + the rest at close
    assert embeddings_matrix(df).shape == (50, 2)
    window, _ = read_log(tmp_path, since=1_700_000_010, until=1_700_000_020)
    assert len(window) == 10


def test_bounded_queue_counts_drops_instead_of_growing(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, max_queue=1, flush_seconds=60)
    results = [log.append(_rec(i, 1.0)) for i in range(200)]
    log.close()
    assert log.dropped == results.count(False) and log.written == results.count(True)


def test_empty_and_corrupt_parts_are_skipped_and_reported(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.append(_rec(1, 1_700_000_000))
    log.close()
    part_dir = next(tmp_path.rglob("part-*.parquet")).parent
    (part_dir / "part-0-corrupt.parquet").write_bytes(b"PAR1 garbage")
    (part_dir / "part-0-empty.parquet").write_bytes(b"")
    df, skipped = read_log(tmp_path)
    assert len(df) == 1 and len(skipped) == 2 and all("unreadable" in s or "empty" in s for s in skipped)


def test_image_stats() -> None:
    dark, bright = Image.new("RGB", (10, 20), (10, 10, 10)), Image.new("RGB", (10, 20), (240, 240, 240))
    assert image_stats(dark)["brightness"] < 20 < 200 < image_stats(bright)["brightness"]
    assert image_stats(dark)["height"] == 20 and image_stats(dark)["contrast"] == 0.0
    assert np.isfinite(image_stats(bright)["contrast"])


def test_a_failed_write_neither_kills_the_writer_nor_loses_the_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, calls = PredictionLog._write, []

    def flaky(self: PredictionLog, rows: list) -> None:
        calls.append(len(rows))
        if len(calls) == 1:
            raise OSError("disk full")  # e.g. a full or read-only log folder, once
        real(self, rows)

    monkeypatch.setattr(PredictionLog, "_write", flaky)
    log = PredictionLog(tmp_path, flush_rows=5, flush_seconds=60)
    for i in range(12):
        assert log.append(_rec(i, 1_700_000_000 + i))
    log.close()
    df, _ = read_log(tmp_path)
    assert len(df) == 12 and log.written == 12 and log.write_errors == 1
    assert sorted(df["request_id"]) == sorted(f"r{i}" for i in range(12))


def test_close_returns_when_the_writer_is_stuck_and_the_queue_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    entered, release = threading.Event(), threading.Event()

    def stuck(self: PredictionLog, rows: list) -> None:
        entered.set()
        release.wait(60)

    monkeypatch.setattr(PredictionLog, "_write", stuck)
    log = PredictionLog(tmp_path, max_queue=2, flush_rows=1, flush_seconds=60)
    log.append(_rec(0, 1.0))
    assert entered.wait(30)  # the writer is inside a write that does not return
    while log.append(_rec(1, 1.0)):  # fill the queue (two records)
        pass
    closer = threading.Thread(target=log.close, kwargs={"timeout": 1.0})
    closer.start()
    closer.join(30)  # a generous bound: before the fix, close() never returned
    release.set()
    assert not closer.is_alive()


def test_rows_that_cannot_be_written_at_all_are_dropped_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bad_rows(self: PredictionLog, rows: list) -> None:
        raise TypeError("not serialisable")  # not the disk: a retry cannot help

    monkeypatch.setattr(PredictionLog, "_write", bad_rows)
    log = PredictionLog(tmp_path, flush_rows=5, flush_seconds=60)
    for i in range(5):
        log.append(_rec(i, 1.0))
    log.close()
    assert log.dropped == 5 and log.write_errors == 1 and log.written == 0

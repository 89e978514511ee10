"""The served-model slot: pixels prepared for another model's input are answered stale (never
run, never failing the batch), results are read with the model that computed them, and
switches happen one after the other, the last one asked for winning."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from clip_har.export.onnx_export import export_untrained
from clip_har.serving.hotswap import ModelSlot, generations, input_shape, read_rows, run_items
from clip_har.serving.predictor import Predictor


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two models whose inputs differ: 32 px (64-d embeddings) and 64 px (128-d)."""
    tmp = tmp_path_factory.mktemp("hotswap")
    return {
        "small:v1": export_untrained(tmp / "small", 0),
        "large:v1": export_untrained(tmp / "large", 1, overrides=("model.preset=demo",)),
    }


def _slot(models: dict[str, Path]) -> ModelSlot:
    return ModelSlot(lambda tag: (tag, models[tag]), Predictor, find=None)


def _pixels(shape: tuple[int, int, int], n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, shape, dtype=np.uint8) for _ in range(n)]


def test_pixels_for_another_model_are_answered_stale_and_prepared_again(models: dict[str, Path]) -> None:
    slot = _slot(models)
    small, _ = slot.switch("small:v1")
    large, _ = slot.switch("large:v1")  # the runner now serves the 64-px model
    mixed = _pixels(input_shape(small), 2) + _pixels(input_shape(large), 1)
    rows = run_items(slot.current, mixed)
    # the image shaped for the served model ran, as it would alone; the others name that model
    probs, emb = large.predictor.run(np.stack(mixed[2:]))
    c = len(large.classes)
    assert np.allclose(rows[2][:c], probs[0], atol=1e-5) and np.allclose(rows[2][c:-1], emb[0], atol=1e-5)
    assert [len(r) for r in rows[:2]] == [1, 1] and generations(rows) == {large.generation}
    assert read_rows(rows, slot) is None  # not one model's answer: prepare them again
    again = run_items(slot.current, _pixels(input_shape(large), 3))
    got_probs, got_emb, by = read_rows(again, slot)
    assert by is large and got_probs.shape == (3, c) and got_emb.shape == (3, 128)


def test_rows_of_two_models_in_one_request_are_not_read_as_one(models: dict[str, Path]) -> None:
    """A long request split into batches on both sides of a switch is prepared again."""
    slot = _slot(models)
    small, _ = slot.switch("small:v1")
    before = run_items(small, _pixels(input_shape(small), 2))
    large, _ = slot.switch("large:v1")
    after = run_items(large, _pixels(input_shape(large), 2))
    assert read_rows(before + after, slot) is None
    probs, _, by = read_rows(before, slot)  # a result finished after the switch: its own model
    assert by is small and probs.shape == (2, len(small.classes))


def test_switches_are_serialised_so_the_last_asked_wins(models: dict[str, Path]) -> None:
    """A switch is held between loading its model and serving it, and another is asked
    meanwhile: the second waits for the first, reports it as the model it replaced, and is the
    one served."""
    activating, release = threading.Event(), threading.Event()

    class Held(ModelSlot):
        def activate(self, loaded):  # the moment two unserialised switches could cross
            if loaded.tag == "large:v1":
                activating.set()
                assert release.wait(30)
            return super().activate(loaded)

    slot = Held(lambda tag: (tag, models[tag]), Predictor)
    slot.switch("small:v1")
    results: dict[str, tuple] = {}
    first = threading.Thread(target=lambda: results.update(large=slot.switch("large:v1")))
    first.start()
    assert activating.wait(30)
    second = threading.Thread(target=lambda: results.update(small=slot.switch("small:v1")))
    second.start()
    second.join(0.5)
    assert second.is_alive()  # waiting for the switch in progress
    release.set()
    first.join(30)
    second.join(30)
    assert results["large"][1].tag == "small:v1" and results["small"][1].tag == "large:v1"
    assert slot.current.tag == "small:v1"

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clip_har.classes import HAR_CLASSES
from clip_har.synth.generate import SynthSpec, class_counts, synthesize
from clip_har.synth.scene import Shift, render_scene


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = synthesize(tmp_path / "a", SynthSpec(n=30, seed=3, size=48))
    b = synthesize(tmp_path / "b", SynthSpec(n=30, seed=3, size=48))
    ma, mb = pd.read_csv(a / "manifest.csv"), pd.read_csv(b / "manifest.csv")
    pd.testing.assert_frame_equal(ma, mb)
    c = synthesize(tmp_path / "c", SynthSpec(n=30, seed=4, size=48))
    assert set(pd.read_csv(c / "manifest.csv")["sha256"]).isdisjoint(ma["sha256"])


def test_every_class_renders_with_a_caption_naming_the_action() -> None:
    for label in HAR_CLASSES:
        scene = render_scene(label, np.random.default_rng(0), 64)
        assert scene.image.size == (64, 64)
        assert label.split("_")[0] in scene.caption.replace("using a laptop", "using laptop")


def test_counts_are_stratified_and_follow_priors() -> None:
    uniform = class_counts(150, HAR_CLASSES, ())
    assert set(uniform.values()) == {10}
    skewed = class_counts(100, ("a", "b"), (3.0, 1.0))
    assert skewed == {"a": 75, "b": 25}
    with pytest.raises(ValueError):
        class_counts(10, ("a", "b"), (1.0,))


def test_night_shift_is_darker() -> None:
    day = [np.asarray(render_scene("running", np.random.default_rng(i), 48).image).mean() for i in range(8)]
    night = [
        np.asarray(render_scene("running", np.random.default_rng(i), 48, Shift(style="night")).image).mean()
        for i in range(8)
    ]
    assert np.mean(night) < 0.6 * np.mean(day)


def test_manifest_schema_and_splits(tiny_data_master: Path) -> None:
    df = pd.read_csv(tiny_data_master / "manifest.csv")
    assert list(df.columns) == ["path", "label", "split", "sha256", "width", "height", "caption", "source"]
    assert set(df["split"]) == {"train", "val", "test"}
    per_class = df.groupby("label")["split"].value_counts().unstack()
    assert (per_class["test"] >= 1).all() and (per_class["train"] >= 5).all()


def test_existing_matching_dataset_is_reused(tmp_path: Path) -> None:
    spec = SynthSpec(n=15, seed=1, size=32)
    root = synthesize(tmp_path / "d", spec)
    stamp = (root / "manifest.csv").stat().st_mtime_ns
    synthesize(root, spec)
    assert (root / "manifest.csv").stat().st_mtime_ns == stamp


def test_failed_rebuild_keeps_the_old_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed mid-way leaves no half-written dataset: the old one stays whole."""
    import clip_har.synth.generate as gen

    root = synthesize(tmp_path / "d", SynthSpec(n=15, seed=1, size=32))
    before = (root / "manifest.csv").read_bytes()
    calls = {"n": 0}
    real = gen.render_scene

    def dies_halfway(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(gen, "render_scene", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        synthesize(root, SynthSpec(n=15, seed=2, size=32))
    assert (root / "manifest.csv").read_bytes() == before
    assert len(list((root / "images").rglob("*.jpg"))) == 15
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no staging leftovers

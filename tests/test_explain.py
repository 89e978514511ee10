"""Explanations (clip_har.explain, `clip-har explain`): heat maps of the regions that drive a label.

Fast tests on untrained models of both tower families (the mechanics do not depend on the
weights), and a behavioural test on a demo-architecture model trained here on the synthetic
world: its map for a scene falls on the prop that carries the action (the phone, the cup, the
laptop…) more than on the background, where an untrained model's does not."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from clip_har.config import load_config
from clip_har.explain import Explainer, artifact_dir, centre_square, upsample
from clip_har.export.onnx_export import export_untrained
from clip_har.preprocess import normalize, to_pixels
from clip_har.synth import props, scene
from clip_har.synth.generate import SynthSpec, synthesize
from clip_har.train.trainer import train
from clip_har_cli.main import app

# classes whose action a drawn prop carries (props.py), and the scenes of each the test explains
PROP_CLASSES = ("calling", "texting", "drinking", "eating", "using_laptop", "cycling", "listening_to_music")
PROPS = ("bed", "bicycle", "chair", "cup", "headphones", "laptop", "music_notes", "phone", "plate_and_fork", "table")
SCENES_PER_CLASS = 6
SCENE_SEED = 4242  # disjoint from the training set's generator seed (0)


def _untrained(tmp: Path, *overrides: str) -> Path:
    onnx = export_untrained(tmp / "onnx", 0, overrides=overrides)
    return onnx.with_name(onnx.name + "-torch")  # the PyTorch artifact beside the export


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> Explainer:
    return Explainer.from_dir(_untrained(tmp_path_factory.mktemp("vit")))  # the tiny preset: a ViT


@pytest.fixture(scope="module")
def conv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _untrained(tmp_path_factory.mktemp("conv"), "model.preset=demo")  # timm ResNet at 64 px


@pytest.fixture(scope="module")
def conv(conv_dir: Path) -> Explainer:
    return Explainer.from_dir(conv_dir)


def _scene(label: str = "texting", seed: int = 1, size: int = 96) -> Image.Image:
    return scene.render_scene(label, np.random.default_rng(seed), size).image


def _png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "grid", "method"), [("vit", (4, 4), "gradient-rollout"), ("conv", (8, 8), "layer-cam:layer2")]
)
def test_grid_and_overlay(name: str, grid: tuple[int, int], method: str, request: pytest.FixtureRequest) -> None:
    """The map's own resolution (a ViT's patch grid; the demo ResNet's 8×8 stage), in [0, 1]
    with its maximum at 1, and an overlay PNG of the centre square the model sees."""
    explainer: Explainer = request.getfixturevalue(name)
    wide = Image.new("RGB", (160, 96), (20, 120, 60))
    wide.paste(_scene(size=96), (32, 0))
    found = explainer.explain_image(wide)
    assert found.method == method and found.grid.shape == grid and found.grid.dtype == np.float32
    assert np.isfinite(found.grid).all() and found.grid.min() >= 0 and found.grid.max() == pytest.approx(1)
    overlay = Image.open(io.BytesIO(found.overlay_png))
    assert overlay.format == "PNG" and overlay.size == (96, 96)  # the centre square, at its own size
    assert centre_square(wide).size == (96, 96)
    body = found.to_dict()
    assert set(body) == {"label", "score", "predicted", "method", "grid"} and json.dumps(body)
    assert len(body["grid"]) == grid[0] and all(len(row) == grid[1] for row in body["grid"])


def test_large_images_give_a_bounded_overlay(conv: Explainer) -> None:
    found = conv.explain_image(_scene(size=96).resize((900, 700)))
    assert Image.open(io.BytesIO(found.overlay_png)).size == (512, 512)


@pytest.mark.parametrize("name", ["vit", "conv"])
def test_label_choice(name: str, request: pytest.FixtureRequest) -> None:
    """Default: the predicted label; a class name: that one, with its own probability and its
    own map; an unknown label: a ValueError that lists the model's labels."""
    explainer: Explainer = request.getfixturevalue(name)
    im = _scene()
    predicted = explainer.explain_image(im)
    assert predicted.label == predicted.predicted
    pixels = to_pixels(im, explainer.preprocess)
    x = torch.from_numpy(normalize(pixels[None], explainer.preprocess))
    with torch.no_grad():
        probs = torch.softmax(explainer.model(x), -1)[0].numpy()
    assert predicted.label == explainer.classes[int(probs.argmax())]
    other = next(c for c in explainer.classes if c != predicted.label)
    chosen = explainer.explain_image(im, other)
    assert chosen.label == other and chosen.predicted == predicted.label
    assert chosen.score == pytest.approx(float(probs[explainer.classes.index(other)]), abs=1e-5)
    assert not np.allclose(chosen.grid, predicted.grid)  # a map per label, not one per image
    with pytest.raises(ValueError, match="unknown label 'nope'.*calling"):
        explainer.explain_image(im, "nope")


def test_bad_images_are_refused_with_the_reason(conv: Explainer) -> None:
    """The service's decode and limits: undecodable, over the pixel limit, beyond 20:1."""
    for data, needle in (
        (b"not an image", "decode"),
        (_png_bytes(Image.new("RGB", (300, 300))), "limit"),
        (_png_bytes(Image.new("RGB", (400, 10))), "aspect"),
    ):
        with pytest.raises(ValueError, match=needle):
            conv.explain_bytes(data, max_pixels=50_000)


def test_explaining_leaves_the_model_as_it_was(tmp_path: Path) -> None:
    """The hooks record only while explaining: outside, the model computes exactly what a copy
    without hooks computes."""
    from clip_har.models.artifact import load_model

    for model_dir in (_untrained(tmp_path / "vit"), _untrained(tmp_path / "conv", "model.preset=demo")):
        plain = load_model(model_dir)[0].eval()
        explainer = Explainer.from_dir(model_dir)
        explainer.explain_image(_scene())
        size = explainer.preprocess.image_size
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            assert torch.equal(explainer.model(x), plain(x))


def test_threads_explain_at_once(vit: Explainer, conv: Explainer) -> None:
    """Each thread's hooks record its own forward pass: concurrent maps equal sequential ones."""
    images = [_scene(label, seed) for label in ("texting", "drinking", "cycling") for seed in (1, 2)]
    for explainer in (vit, conv):
        alone = [explainer.explain_image(im).grid for im in images]
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(lambda im, e=explainer: e.explain_image(im).grid, images * 2))
        for a, b in zip(alone * 2, together, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)


def test_artifact_dir_and_models_without_pytorch_weights(conv_dir: Path, tmp_path: Path) -> None:
    assert artifact_dir(conv_dir) == conv_dir
    served = tmp_path / "served"  # a model-store entry: the ONNX export, its PyTorch artifact in torch/
    (served / "torch").mkdir(parents=True)
    for f in conv_dir.iterdir():
        (served / "torch" / f.name).write_bytes(f.read_bytes())
    assert artifact_dir(served) == served / "torch"
    with pytest.raises(FileNotFoundError, match="without PyTorch weights"):
        Explainer.from_dir(conv_dir.with_name("onnx"))  # the export alone


def test_cli_explain(conv_dir: Path, tmp_path: Path) -> None:
    image = tmp_path / "scene.jpg"
    _scene(size=128).save(image)
    out, grid = tmp_path / "o.png", tmp_path / "g.json"
    runner = CliRunner()
    args = [
        "explain",
        str(image),
        "--model",
        str(conv_dir),
        "--label",
        "texting",
        "--out",
        str(out),
        "--json",
        str(grid),
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert r.output.startswith("texting ") and "layer-cam:layer2" in r.output
    assert Image.open(out).size == (128, 128)
    body = json.loads(grid.read_text())
    assert body["label"] == "texting" and np.asarray(body["grid"]).shape == (8, 8)
    for bad, needle in (
        (["--label", "nope"], "unknown label"),
        (["--model", str(tmp_path / "none")], "no such model directory"),
        (["--model", str(conv_dir.with_name("onnx"))], "without PyTorch weights"),
        (["--out", str(tmp_path / "o.jpg")], "--out must end in .png"),
    ):
        r = runner.invoke(app, ["explain", str(image), "--model", str(conv_dir), *bad])
        assert r.exit_code == 2 and needle in r.output and r.output.count("error:") == 1, (bad, r.output)
    r = runner.invoke(app, ["explain", str(tmp_path / "missing.png"), "--model", str(conv_dir)])
    assert r.exit_code == 2 and "no such file" in r.output
    (tmp_path / "text.png").write_text("hello")
    r = runner.invoke(app, ["explain", str(tmp_path / "text.png"), "--model", str(conv_dir)])
    assert r.exit_code == 2 and "cannot decode image" in r.output


# --- behavioural: where a trained model looks ---------------------------------------------------


class _Ink:
    """Stands in for ImageDraw under a Painter: every shape in white on a mask."""

    def __init__(self, mask: Image.Image) -> None:
        self.draw = ImageDraw.Draw(mask)

    def line(self, points: list, fill: object = None, width: int = 1, joint: str | None = None) -> None:
        self.draw.line(points, fill=255, width=width, joint=joint)

    def ellipse(self, box: tuple, fill: object = None, outline: object = None, width: int = 1) -> None:
        self.draw.ellipse(
            box, fill=None if fill is None else 255, outline=None if outline is None else 255, width=width
        )

    def polygon(self, points: list, fill: object = None) -> None:
        self.draw.polygon(points, fill=255)


def _also_on(mask: Image.Image, draw: Callable) -> Callable:
    """`draw` as it is, then once more on `mask`. Arguments are copied first (music notes draw
    from the scene's generator): the scene's own random stream, and so its image, is untouched."""

    def both(painter: object, *args: object, **kwargs: object) -> None:
        copies = copy.deepcopy((args, kwargs))
        draw(painter, *args, **kwargs)
        draw(dataclasses.replace(painter, draw=_Ink(mask)), *copies[0], **copies[1])

    return both


def scene_with_masks(label: str, seed: list[int], size: int) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """A synthetic scene, exactly as the generator renders it, with where its props and its
    figures were drawn (boolean masks at the image's size), recorded from the drawing calls."""
    big = size * 2  # render_scene draws at 2× and downsamples
    prop_mask, figure_mask = Image.new("L", (big, big)), Image.new("L", (big, big))
    with pytest.MonkeyPatch.context() as mp:
        for name in PROPS:
            mp.setattr(props, name, _also_on(prop_mask, getattr(props, name)))
        mp.setattr(scene, "draw_figure", _also_on(figure_mask, scene.draw_figure))
        rendered = scene.render_scene(label, np.random.default_rng(seed), size)
    masks = [np.asarray(m.resize((size, size), Image.Resampling.BILINEAR)) >= 128 for m in (prop_mask, figure_mask)]
    return rendered.image, masks[0], masks[1]


def test_masks_leave_the_scene_unchanged() -> None:
    for label in ("listening_to_music", "texting"):
        im, prop, figure = scene_with_masks(label, [SCENE_SEED, 0], 128)
        plain = scene.render_scene(label, np.random.default_rng([SCENE_SEED, 0]), 128).image
        assert np.array_equal(np.asarray(im), np.asarray(plain))
        assert 0 < prop.mean() < 0.2 and 0 < figure.mean() < 0.3


def prop_vs_background(explainer: Explainer) -> dict[str, list[tuple[float, float]]]:
    """Per class: (mean heat on the prop, mean heat on the background) of each scene, for the
    scene's own label. Background: neither prop nor figure (the pose carries the action too)."""
    out: dict[str, list[tuple[float, float]]] = {}
    for label in PROP_CLASSES:
        for i in range(SCENES_PER_CLASS):
            im, prop, figure = scene_with_masks(label, [SCENE_SEED, i], 128)
            heat = upsample(explainer.explain_image(im, label).grid, 128)
            out.setdefault(label, []).append((float(heat[prop].mean()), float(heat[~(prop | figure)].mean())))
    return out


def _summary(pairs: dict[str, list[tuple[float, float]]]) -> tuple[float, float]:
    """(share of scenes with more heat on the prop than on the background, median ratio)."""
    flat = [p for ps in pairs.values() for p in ps]
    wins = sum(prop > bg for prop, bg in flat) / len(flat)
    return wins, float(np.median([prop / max(bg, 1e-6) for prop, bg in flat]))


@pytest.fixture(scope="module")
def trained_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo-architecture model (timm ResNet-10t, 64 px) trained from scratch on 1,050 synthetic
    scenes for 8 epochs: far weaker than the full demo model, which is enough to look at props."""
    tmp = tmp_path_factory.mktemp("demo-trained")
    data = synthesize(tmp / "data", SynthSpec(n=1050, seed=0, size=128))
    cfg = load_config("demo", ["train.max_epochs=8", "train.early_stopping_patience=100"])
    result = train(cfg, data, tmp / "run", tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    assert result is not None
    return Path(result.model_dir)


@pytest.mark.slow
def test_trained_model_looks_at_the_prop_that_carries_the_action(trained_demo: Path, conv: Explainer) -> None:
    """For most scenes of the prop classes (42: 7 classes × 6), the heat for the scene's label is
    higher on the prop than on the background, and by a clear ratio; the same architecture
    untrained spreads it about evenly, so the concentration is learnt, not the props' contrast."""
    trained = prop_vs_background(Explainer.from_dir(trained_demo))
    control = prop_vs_background(conv)
    (wins, ratio), (control_wins, control_ratio) = _summary(trained), _summary(control)
    per_class = {k: sum(p > b for p, b in v) for k, v in trained.items()}
    report = f"trained: {wins:.0%} of scenes, median prop/background {ratio:.2f}, per class {per_class}; "
    report += f"untrained: {control_wins:.0%}, {control_ratio:.2f}"
    print(report)
    assert wins >= 0.8 and ratio >= 1.3, report
    assert sum(n > SCENES_PER_CLASS / 2 for n in per_class.values()) >= len(PROP_CLASSES) - 1, report
    assert ratio >= control_ratio + 0.2, report

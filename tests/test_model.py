"""The classifier at step 0 is exactly CLIP zero-shot; freezing modes; artifact round trip."""

from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F

from clip_har.classes import DEFAULT_TEMPLATES, HAR_CLASSES, phrase_for
from clip_har.models.artifact import ModelMeta, load_model, save_model
from clip_har.models.classifier import build_classifier, set_trainable
from clip_har.models.presets import build_clip
from clip_har.preprocess import PreprocessConfig

PHRASES = [phrase_for(c) for c in HAR_CLASSES]


@pytest.fixture
def bundle():
    torch.manual_seed(0)
    return build_clip("tiny")


def test_head_init_equals_zero_shot_logits(bundle) -> None:
    clf = build_classifier(bundle, PHRASES, DEFAULT_TEMPLATES).eval()
    x = torch.randn(4, 3, bundle.image_size, bundle.image_size)
    with torch.no_grad():
        text = torch.stack(
            [
                F.normalize(
                    bundle.model.encode_text(bundle.tokenizer([t.format(p) for t in DEFAULT_TEMPLATES])), dim=-1
                ).mean(0)
                for p in PHRASES
            ]
        )
        text = F.normalize(text, dim=-1)
        image = F.normalize(bundle.model.encode_image(x), dim=-1)
        expected = bundle.model.logit_scale.exp() * image @ text.T
        got = clf(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    assert got.shape == (4, len(HAR_CLASSES))


def test_training_modes_freeze_what_they_say(bundle) -> None:
    clf = build_classifier(bundle, PHRASES, DEFAULT_TEMPLATES)
    head = sum(p.numel() for p in clf.head.parameters())
    assert set_trainable(clf, "linear_probe") == head
    partial = set_trainable(clf, "last_n", last_n=1)
    full = set_trainable(clf, "full")
    assert head < partial < full == sum(p.numel() for p in clf.parameters())
    with pytest.raises(ValueError, match="unknown training mode"):
        set_trainable(clf, "everything")


def test_artifact_round_trip(bundle, tmp_path: Path) -> None:
    clf = build_classifier(bundle, PHRASES, DEFAULT_TEMPLATES).eval()
    pre = PreprocessConfig(bundle.image_size, bundle.mean, bundle.std)
    meta = ModelMeta(
        "tiny", list(HAR_CLASSES), PHRASES, list(DEFAULT_TEMPLATES), pre.to_dict(), {"data_version": "x-v1"}
    )
    save_model(clf, bundle, meta, tmp_path / "model")
    loaded, _, meta2 = load_model(tmp_path / "model")
    x = torch.randn(2, 3, bundle.image_size, bundle.image_size)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), clf(x))
    assert meta2.classes == list(HAR_CLASSES) and meta2.preprocess_config() == pre
    (tmp_path / "model" / "head.pt").unlink()
    with pytest.raises(FileNotFoundError, match="head.pt"):
        load_model(tmp_path / "model")


def test_presets_and_weights_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown model preset"):
        build_clip("ViT-Z-99")
    with pytest.raises(FileNotFoundError):
        build_clip("tiny", str(tmp_path / "missing.pt"))
    # a real open_clip preset loads local weights through the same path users take
    b = build_clip("tiny")
    torch.save(b.model.state_dict(), tmp_path / "w.pt")
    b2 = build_clip("tiny", str(tmp_path / "w.pt"))
    assert all(
        torch.equal(p, q) for p, q in zip(b.model.state_dict().values(), b2.model.state_dict().values(), strict=True)
    )
    assert "ViT-B-32" in open_clip.list_models()

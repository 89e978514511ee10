"""Review queue: uncertain predictions are kept, labelled, exported; the CLI drives it."""

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clip_har.classes import HAR_CLASSES
from clip_har.monitoring.review import ReviewQueue, entropy
from clip_har_cli.main import app

CLASSES = list(HAR_CLASSES)


def _probs(top: float) -> np.ndarray:
    p = np.full(len(CLASSES), (1 - top) / (len(CLASSES) - 1))
    p[3] = top
    return p


def test_only_uncertain_predictions_are_kept(tmp_path: Path) -> None:
    q = ReviewQueue(tmp_path)
    assert entropy(np.full(4, 0.25)) == pytest.approx(1.0) and entropy(np.array([1.0, 0, 0])) < 0.01
    assert q.offer(b"img", _probs(0.98), CLASSES, "v1") is None
    item_id = q.offer(b"img", _probs(0.3), CLASSES, "v1")
    assert item_id and [i.id for i in q.items()] == [item_id] and q.items()[0].predicted == "dancing"


def test_label_and_export(tmp_path: Path) -> None:
    q = ReviewQueue(tmp_path / "q")
    a = q.offer(b"aaa", _probs(0.2), CLASSES, "v1")
    b = q.offer(b"bbb", _probs(0.2), CLASSES, "v1", suffix=".png")
    with pytest.raises(ValueError, match="unknown label"):
        q.label(a, "juggling", CLASSES)
    q.label(a, "running", CLASSES)
    with pytest.raises(KeyError):
        q.label(a, "running", CLASSES)  # no longer pending
    assert [i.id for i in q.items()] == [b] and q.items("labelled")[0].label == "running"
    assert q.export(tmp_path / "out") == 1
    assert (tmp_path / "out" / "running" / f"{a}.jpg").read_bytes() == b"aaa"
    assert q.export(tmp_path / "out2") == 0  # each labelled item goes out once (ingest refuses repeats)
    assert q.export(tmp_path / "out3", again=True) == 1


def test_novel_images_are_kept_even_when_confident(tmp_path: Path) -> None:
    """A night photo can get a confident wrong label: its statistics, far outside the reference
    window's, still send it to review."""
    import pandas as pd

    from clip_har.monitoring.novelty import Novelty

    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"brightness": rng.normal(140, 15, 500), "contrast": rng.normal(50, 5, 500)})
    novelty = Novelty.from_reference(reference)
    assert novelty.reason({"brightness": 140.0, "contrast": 50.0}) is None
    why = novelty.reason({"brightness": 30.0, "contrast": 50.0})
    assert why and why.startswith("novel: brightness 30.0")
    q = ReviewQueue(tmp_path)
    assert q.offer(b"img", _probs(0.98), CLASSES, "v1", novelty=None) is None
    assert q.offer(b"img", _probs(0.98), CLASSES, "v1", novelty=why)
    assert q.items()[0].reason == why


def test_bounded_queue(tmp_path: Path) -> None:
    q = ReviewQueue(tmp_path, max_pending=2)
    ids = [q.offer(b"x", _probs(0.1), CLASSES, "v1") for _ in range(4)]
    assert ids[2] is None and ids[3] is None and len(q.items()) == 2


def test_review_cli(tmp_path: Path, state_dir: Path) -> None:
    q = ReviewQueue(state_dir / "review")
    item = q.offer(b"x", _probs(0.2), CLASSES, "v1")
    runner = CliRunner()
    r = runner.invoke(app, ["review", "list"])
    assert r.exit_code == 0 and item in r.output and "1 item(s)" in r.output
    assert runner.invoke(app, ["review", "label", item, "nope"]).exit_code == 2
    assert runner.invoke(app, ["review", "label", "missing", "running"]).exit_code == 2
    assert runner.invoke(app, ["review", "label", item, "texting"]).exit_code == 0
    r = runner.invoke(app, ["review", "export", str(tmp_path / "out")])
    assert r.exit_code == 0 and (tmp_path / "out" / "texting" / f"{item}.jpg").is_file()


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "hint", "stored"), [(_png(), ".json", ".png"), (b"raw", ".json", ".jpg")], ids=["png", "not-an-image"]
)
def test_the_stored_suffix_never_comes_from_the_client_name(
    tmp_path: Path, data: bytes, hint: str, stored: str
) -> None:
    """An upload named x.json once overwrote its own metadata file."""
    q = ReviewQueue(tmp_path)
    item_id = q.offer(data, _probs(0.2), CLASSES, "v1", suffix=hint)
    (item,) = q.items()
    assert item.id == item_id and item.suffix == stored and q.image(item).read_bytes() == data


def test_a_broken_review_folder_costs_the_item_not_the_prediction(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    q = ReviewQueue(tmp_path / "a-file" / "review")  # every write fails (NotADirectoryError)
    assert q.offer(_png(), _probs(0.2), CLASSES, "v1") is None


def test_the_queue_has_a_byte_budget(tmp_path: Path) -> None:
    image = _png()
    q = ReviewQueue(tmp_path, max_pending_mb=1.5 * len(image) / 1e6)
    assert q.offer(image, _probs(0.2), CLASSES, "v1")
    assert q.offer(image, _probs(0.2), CLASSES, "v1") is None  # over the budget: not kept
    assert len(q.items()) == 1


def test_a_failed_metadata_write_leaves_no_orphan_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import clip_har.monitoring.review as review

    def full_disk(path: Path, data: dict) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(review, "_write_json", full_disk)
    q = ReviewQueue(tmp_path)
    assert q.offer(_png(), _probs(0.2), CLASSES, "v1") is None
    assert list((tmp_path / "pending").iterdir()) == []


def test_feedback_waits_with_its_label_until_a_reviewer_confirms(tmp_path: Path) -> None:
    """A user's correction waits in the queue with their label as a suggestion (anyone who can
    reach the service can send one): a reviewer confirms it, then it is exported like any
    labelled item; the queue's budgets bound it too."""
    q = ReviewQueue(tmp_path / "q", max_pending=2, recount_s=0)
    item = q.feedback(b"\x89PNG\r\n\x1a\n", _probs(0.99), CLASSES, "v1", ".png", "running")
    assert item.label == "running" and item.predicted == "dancing" and item.reason == "feedback"
    assert [i.id for i in q.items()] == [item.id] and q.items("labelled") == []
    assert q.export(tmp_path / "out") == 0  # not before a reviewer confirms
    with pytest.raises(ValueError, match="unknown label"):
        q.feedback(b"img", _probs(0.99), CLASSES, "v1", ".jpg", "juggling")
    q.feedback(b"img", _probs(0.99), CLASSES, "v1", ".jpg", "eating")
    with pytest.raises(OverflowError, match="full"):
        q.feedback(b"img", _probs(0.99), CLASSES, "v1", ".jpg", "eating")
    q.label(item.id, "running", CLASSES)
    assert q.export(tmp_path / "out") == 1 and (tmp_path / "out" / "running" / f"{item.id}.png").is_file()
    q.feedback(b"img", _probs(0.99), CLASSES, "v1", ".jpg", "eating")  # a confirmed item leaves the pending budget

"""Bad profiles and overrides: one readable line, non-zero exit."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from clip_har.config import ConfigError, load_config
from clip_har_cli.main import app


def test_profiles_load_and_overrides_apply() -> None:
    cfg = load_config("tiny", ["train.max_epochs=7", "gate.min_improvement=0.1", "data.synth.n=30"])
    assert cfg.train.max_epochs == 7 and cfg.gate.min_improvement == 0.1 and cfg.data.synth.n == 30
    assert load_config("demo").model.preset == "demo"
    assert load_config("har-vitb32").model.preset == "ViT-B-32"


@pytest.mark.parametrize(
    ("profile", "overrides", "needle"),
    [
        ("nope", [], "unknown profile"),
        ("tiny", ["train.max_epochs"], "expected key=value"),
        ("tiny", ["train.max_epochz=3"], "train.max_epochz"),
        ("tiny", ["train.max_epochs=many"], "train.max_epochs"),
        ("tiny", ["train.mode=everything"], "train.mode"),
    ],
)
def test_bad_config_is_a_config_error(profile: str, overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(profile, overrides)


def test_cli_bad_profile_exits_nonzero_with_one_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "clip_har_cli.main", "pipeline", "run", "--profile", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unknown profile"), out.stderr


def test_cli_bad_override_and_help() -> None:
    r = CliRunner().invoke(app, ["config", "--profile", "tiny", "--set", "train.lr=fast"])
    assert r.exit_code == 2 and "train.lr" in r.output
    for cmd in ([], ["data"], ["pipeline"], ["pipeline", "run"], ["status"], ["train"], ["data", "synth"]):
        assert CliRunner().invoke(app, [*cmd, "--help"]).exit_code == 0, cmd


def test_cli_data_synth_and_validate(tmp_path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["data", "synth", str(tmp_path / "d"), "--n", "45", "--size", "32"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app, ["data", "validate", str(tmp_path / "d"), "--profile", "tiny", "--set", "data.min_per_class=3"]
    )
    assert r.exit_code == 0 and "passed" in r.output
    r = runner.invoke(app, ["data", "validate", str(tmp_path / "missing"), "--profile", "tiny"])
    assert r.exit_code == 1 and "FAILED" in r.output


def test_cli_predict_bad_input_is_one_line(tmp_path) -> None:
    r = CliRunner().invoke(app, ["predict", str(tmp_path / "missing.jpg")])
    assert r.exit_code == 2 and "no such file" in r.output
    (tmp_path / "a.jpg").write_bytes(b"x")
    r = CliRunner().invoke(app, ["predict", str(tmp_path / "a.jpg"), "--out", str(tmp_path / "p.txt")])
    assert r.exit_code == 2 and ".csv or .json" in r.output

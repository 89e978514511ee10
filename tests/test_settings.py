"""One source of settings: every CLIP_HAR_* variable is a declared, documented setting; the
events and trigger reasons in prefect.yaml are the declared ones; derived paths follow them."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from clip_har.settings import (
    CHALLENGER_EVENT,
    DATA_EVENT,
    DATA_REASON,
    DATA_RESOURCE,
    DRIFT_EVENT,
    DRIFT_REASON,
    MODEL_RESOURCE,
    PROMOTED_EVENT,
    WORK_POOL,
    Settings,
    SettingsError,
    env_name,
    load_settings,
)

ROOT = Path(__file__).resolve().parents[1]
VAR = re.compile(r"\bCLIP_HAR_[A-Z0-9_]*[A-Z0-9]\b")
DECLARED = {env_name(f) for f in Settings.model_fields}


def _read_by_code() -> dict[str, set[str]]:
    """Each CLIP_HAR_* name in the code, its config and benchmarks → the files naming it."""
    found: dict[str, set[str]] = {}
    dirs = ("clip_har", "clip_har_cli", "tasks", "flows", "deployments", "bench")
    files = [p for d in dirs for p in (ROOT / d).rglob("*")]
    for path in [*files, ROOT / "prefect.yaml", ROOT / "Makefile"]:
        if path.suffix in (".py", ".yaml", ".yml", "") and path.is_file():
            for name in VAR.findall(path.read_text(errors="replace")):
                found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_variable_the_code_names_is_a_declared_setting() -> None:
    undeclared = {k: v for k, v in _read_by_code().items() if k not in DECLARED}
    assert not undeclared, f"read but not in clip_har.settings.Settings: {undeclared}"


def test_every_setting_is_in_the_readme_table_and_nothing_else_is() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `(CLIP_HAR_[A-Z0-9_]+)` \|", readme, flags=re.M))
    assert DECLARED - documented == set(), "settings missing from the README table"
    assert documented - DECLARED == set(), "README documents variables the code does not read"


def test_prefect_yaml_uses_the_declared_events_reasons_and_pool() -> None:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    resource_of = {
        DATA_EVENT: DATA_RESOURCE,
        DRIFT_EVENT: MODEL_RESOURCE,
        PROMOTED_EVENT: MODEL_RESOURCE,
        CHALLENGER_EVENT: MODEL_RESOURCE,
    }
    reason_of = {DATA_EVENT: DATA_REASON, DRIFT_EVENT: DRIFT_REASON}
    seen = set()
    for dep in spec["deployments"]:
        assert dep["work_pool"]["name"] == WORK_POOL
        for trigger in dep.get("triggers", []):
            (event,) = trigger["expect"]
            seen.add(event)
            assert event in resource_of, f"{dep['name']}: undeclared event {event}"
            assert trigger["match"]["prefect.resource.id"] == f"{resource_of[event]}.*"
            if dep["name"] == "training-pipeline":
                reason = trigger["parameters"]["reason"]
                assert reason.startswith(f"{reason_of[event]}: "), reason  # how runs know they were triggered
    assert seen == set(resource_of)


def test_paths_follow_the_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLIP_HAR_HOME", str(tmp_path / "home"))
    state = load_settings().state
    assert (state.predictions, state.review, state.reports) == (
        tmp_path / "home" / "predictions",
        tmp_path / "home" / "review",
        tmp_path / "home" / "reports",
    )
    monkeypatch.setenv("CLIP_HAR_PREDICTION_LOG", str(tmp_path / "log"))
    monkeypatch.setenv("CLIP_HAR_REVIEW_DIR", str(tmp_path / "queue"))
    monkeypatch.setenv("CLIP_HAR_REPORTS_DIR", str(tmp_path / "reports"))
    state = load_settings().state  # writer (service) and readers (CLI, drift task, loop) use these
    assert (state.predictions, state.review, state.reports) == (
        tmp_path / "log",
        tmp_path / "queue",
        tmp_path / "reports",
    )
    monkeypatch.setenv("CLIP_HAR_PREDICTION_LOG", "off")
    settings = load_settings()
    assert not settings.logs_predictions and settings.state.predictions == tmp_path / "home" / "predictions"


def test_derived_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIP_HAR_PORT", "3999")
    monkeypatch.setenv("CLIP_HAR_PREFECT_PORT", "4999")
    monkeypatch.setenv("CLIP_HAR_MODEL_NAME", "har")
    s = load_settings()
    assert s.service == "http://127.0.0.1:3999" and s.prefect_api == "http://127.0.0.1:4999/api"
    assert s.serving_model == "har:latest"
    monkeypatch.setenv("CLIP_HAR_SERVICE_URL", "http://10.0.0.2:80")
    assert load_settings().service == "http://10.0.0.2:80"


def test_stack_urls_follow_where_things_listen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients on this machine reach a wildcard bind on loopback, and one address by itself."""
    for bind, client in (("0.0.0.0", "127.0.0.1"), ("::", "[::1]"), ("10.1.2.3", "10.1.2.3"), ("fd00::5", "[fd00::5]")):
        monkeypatch.setenv("CLIP_HAR_STACK_HOST", bind)
        monkeypatch.setenv("CLIP_HAR_HOST", bind)
        s = load_settings()
        assert s.stack_exposed
        assert (s.prefect_api, s.mlflow_url, s.service) == (
            f"http://{client}:4200/api",
            f"http://{client}:5000",
            f"http://{client}:3000",
        )
    monkeypatch.setenv("CLIP_HAR_STACK_NAMES", " har.example.org ,10.0.0.9")
    assert load_settings().public_names == ["har.example.org", "10.0.0.9", "fd00::5"]
    monkeypatch.setenv("CLIP_HAR_STACK_HOST", "0.0.0.0")  # a wildcard names nothing
    assert load_settings().public_names == ["har.example.org", "10.0.0.9"]


@pytest.mark.parametrize("names", ["http://har.example.org", "har.example.org:8080", "har example"])
def test_stack_names_are_names_not_urls(monkeypatch: pytest.MonkeyPatch, names: str) -> None:
    monkeypatch.setenv("CLIP_HAR_STACK_NAMES", names)
    with pytest.raises(SettingsError, match="CLIP_HAR_STACK_NAMES=.*not a host name or address"):
        load_settings()


@pytest.mark.parametrize("value", ["hunter2", ":hunter2", "hunter2:"])
def test_a_malformed_prefect_auth_is_named_never_shown(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CLIP_HAR_PREFECT_AUTH", value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert message.startswith("CLIP_HAR_PREFECT_AUTH=<hidden>") and "user:password" in message, message
    assert "hunter2" not in message and "\n" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__  # nor in a chained error


def test_a_malformed_prefect_auth_behind_another_bad_setting_is_not_chained(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first error names another variable; the secret's, second, must not ride in the cause."""
    monkeypatch.setenv("CLIP_HAR_PORT", "many")  # declared before the secret: its error comes first
    monkeypatch.setenv("CLIP_HAR_PREFECT_AUTH", "hunter2")
    with pytest.raises(SettingsError, match="CLIP_HAR_PORT") as err:
        load_settings()
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_the_prefect_auth_string_never_shows_in_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIP_HAR_PREFECT_AUTH", "clip:s3cret-value")
    s = load_settings()
    assert "s3cret-value" not in repr(s) and "s3cret-value" not in str(s)
    assert s.prefect_auth.get_secret_value() == "clip:s3cret-value"


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("CLIP_HAR_MAX_FILES", "many", "CLIP_HAR_MAX_FILES='many'"),
        ("CLIP_HAR_MAX_FILE_MB", "-1", "greater than 0"),
        ("CLIP_HAR_BACKEND", "tpu", "CLIP_HAR_BACKEND='tpu'"),
        ("CLIP_HAR_RETRAIN_COOLDOWN_S", "-5", "CLIP_HAR_RETRAIN_COOLDOWN_S"),
    ],
)
def test_bad_values_are_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError, match=re.escape(needle)) as err:
        load_settings()
    assert "\n" not in str(err.value)


def test_cli_with_a_bad_setting_exits_2_with_one_line(monkeypatch: pytest.MonkeyPatch, state_dir: Path) -> None:
    from clip_har_cli.main import app

    monkeypatch.setenv("CLIP_HAR_PORT", "http")
    result = CliRunner().invoke(app, ["review", "list"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: CLIP_HAR_PORT")


def test_relative_paths_reach_children_resolved(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI, the worker and the service (which runs in deployments/) have different working
    directories: relative settings must not send the log writer and its readers apart."""
    import os

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLIP_HAR_HOME", "rel")
    monkeypatch.setenv("CLIP_HAR_PREDICTION_LOG", "logs")
    monkeypatch.setattr(os, "environ", dict(os.environ))  # apply_env writes here; undone after the test
    load_settings().state.apply_env()
    assert os.environ["CLIP_HAR_HOME"] == str(tmp_path / "rel")
    assert os.environ["CLIP_HAR_PREDICTION_LOG"] == str(tmp_path / "logs")
    (tmp_path / "deployments").mkdir()
    monkeypatch.chdir(tmp_path / "deployments")  # a child started elsewhere, with that environment
    state = load_settings().state
    assert (state.root, state.predictions) == (tmp_path / "rel", tmp_path / "logs")


@pytest.mark.parametrize(
    ("host", "token", "exit_code", "needle"),
    [
        ("0.0.0.0", "", 2, "refusing to listen on 0.0.0.0 without CLIP_HAR_ADMIN_TOKEN"),
        ("example.org", "", 2, "refusing to listen"),
        ("0.0.0.0", "s3cret", 1, "no champion yet"),  # allowed: it gets as far as the champion lookup
        ("127.0.0.1", "", 1, "no champion yet"),
        ("::1", "", 1, "no champion yet"),
    ],
)
def test_serving_beyond_loopback_needs_an_admin_token(
    monkeypatch: pytest.MonkeyPatch, state_dir: Path, host: str, token: str, exit_code: int, needle: str
) -> None:
    from clip_har_cli.main import app

    monkeypatch.setenv("CLIP_HAR_ADMIN_TOKEN", token)
    result = CliRunner().invoke(app, ["serve", "--host", host])
    assert result.exit_code == exit_code and needle in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_stack_refuses_to_start_beyond_loopback_without_a_token(
    monkeypatch: pytest.MonkeyPatch, state_dir: Path, free_port: Callable[[], int]
) -> None:
    from clip_har_cli import stack

    for var in ("CLIP_HAR_PREFECT_PORT", "CLIP_HAR_MLFLOW_PORT", "CLIP_HAR_PORT"):
        monkeypatch.setenv(var, str(free_port()))  # should a regression start it: never the defaults
    monkeypatch.setenv("CLIP_HAR_HOST", "0.0.0.0")
    try:
        with pytest.raises(RuntimeError, match="CLIP_HAR_ADMIN_TOKEN"):
            stack.up(print)
        assert not state_dir.exists()  # nothing started, nothing written
    finally:
        stack.down(print)  # should a regression start the stack, stop it

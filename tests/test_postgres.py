"""Beyond one machine: the Prefect server and MLflow on PostgreSQL, MLflow as a tracking server
with proxied artifacts, all chosen by settings. Unit tests for the URLs derived from the settings
and for secrets kept out of errors and command lines; one integration test on a real local
cluster (clip_har.postgres) with the servers `clip-har up` starts on it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clip_har import postgres
from clip_har.postgres import Server
from clip_har.settings import TELEMETRY_OFF, SettingsError, load_settings

SECRET = "hunter2-pw"


def test_database_urls_derive_from_the_server_url() -> None:
    server = Server(f"postgresql+psycopg2://har:{SECRET}@db.example.org:5433")
    assert server.prefect_url == f"postgresql+asyncpg://har:{SECRET}@db.example.org:5433/prefect"
    assert server.mlflow_url == f"postgresql+psycopg://har:{SECRET}@db.example.org:5433/mlflow"
    assert str(server) == repr(server) == "postgresql+psycopg2://har:***@db.example.org:5433"
    assert server.env == {}  # the password is in the URL; a local cluster's is in its passfile
    local = Server("postgresql://postgres@127.0.0.1:5999", Path("/s/postgres/pgpass"))
    assert local.env == {"PGPASSFILE": "/s/postgres/pgpass"} and str(local) == local.url


def test_settings_choose_sqlite_a_local_cluster_or_given_servers(state_dir: Path, monkeypatch) -> None:
    state = load_settings().state  # the default: SQLite and local files, as before
    assert load_settings().tracking_server is None and state.mlflow_uri == f"sqlite:///{state.mlflow_db}"
    assert not state.has_registry and state.dvc_remote == str(state_dir.resolve() / "dvc-remote")
    monkeypatch.setenv("CLIP_HAR_MLFLOW_PORT", "5123")
    monkeypatch.setenv("CLIP_HAR_DB", "postgres")  # a local cluster: clients use up's MLflow server
    s = load_settings()
    assert s.uses_postgres and s.tracking_server == "http://127.0.0.1:5123" == s.state.mlflow_uri
    assert s.state.has_registry and s.state.postgres == state_dir.resolve() / "postgres"
    monkeypatch.delenv("CLIP_HAR_DB")
    monkeypatch.setenv("CLIP_HAR_DB_URL", f"postgres://har:{SECRET}@db.example.org")  # a server: PostgreSQL too
    assert load_settings().uses_postgres and load_settings().state.mlflow_uri == "http://127.0.0.1:5123"
    monkeypatch.setenv("CLIP_HAR_MLFLOW_SERVER", "https://mlflow.example.org/tracking/")  # MLflow elsewhere
    assert load_settings().state.mlflow_uri == "https://mlflow.example.org/tracking"
    monkeypatch.setenv("CLIP_HAR_DVC_REMOTE", "s3://bucket/clip-har")
    assert load_settings().state.dvc_remote == "s3://bucket/clip-har"
    monkeypatch.setenv("CLIP_HAR_DVC_REMOTE", "shared/remote")  # a folder: resolved, children have other cwds
    state = load_settings().state
    assert state.dvc_remote == str(Path("shared/remote").resolve()) == state.env()["CLIP_HAR_DVC_REMOTE"]


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("DB_URL", f"mysql://har:{SECRET}@db", "must be postgresql://"),
        ("DB_URL", f"postgresql://har:{SECRET}@db:5432/clip", "not a database"),
        ("DB_URL", f"postgresql://har:{SECRET}@db:port", "not a URL"),
        ("DB_URL", f"postgresql://har:{SECRET}@db?sslmode=require", "PGSSLMODE"),
        ("MLFLOW_SERVER", f"http://har:{SECRET}@mlflow:5000", "MLFLOW_TRACKING_PASSWORD"),
        ("MLFLOW_SERVER", "ftp://mlflow:5000", "http(s)://host:port"),
        ("DVC_REMOTE", f"ssh://har:{SECRET}@store/dvc", "dvc remote modify --local"),
        ("DVC_REMOTE", "ftp://store/dvc", "no remote of type 'ftp'"),
    ],
)
def test_a_bad_url_setting_is_one_line_that_never_shows_a_password(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(f"CLIP_HAR_{var}", value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert message.startswith(f"CLIP_HAR_{var}=") and needle in message, message
    assert SECRET not in message and "\n" not in message
    if SECRET in value:
        assert err.value.__cause__ is None and err.value.__suppress_context__  # nor in a chained error


def test_the_servers_get_their_database_and_nobody_gets_the_server_url(state_dir: Path, monkeypatch) -> None:
    from clip_har_cli import stack

    monkeypatch.setenv("CLIP_HAR_DB_URL", f"postgresql://har:{SECRET}@db.example.org:5432")
    settings = load_settings()
    db = Server(settings.db_url.get_secret_value())
    _, env = stack.prefect_server(settings, db)
    assert env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] == db.prefect_url
    cmd, env = stack.mlflow_server(settings, settings.state, db)
    assert env["MLFLOW_BACKEND_STORE_URI"] == db.mlflow_url and SECRET not in " ".join(cmd)  # ps shows argv
    assert cmd[cmd.index("--artifacts-destination") + 1] == str(settings.state.mlflow_served_artifacts)
    assert "--serve-artifacts" in cmd and cmd[cmd.index("--host") + 1] == "127.0.0.1"
    monkeypatch.setenv("CLIP_HAR_DB_URL", settings.db_url.get_secret_value())
    assert "CLIP_HAR_DB_URL" not in stack._child_env({"X": "1"})  # worker, service, servers


def test_missing_postgres_programs_are_one_line_and_nothing_starts(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    from clip_har_cli import stack
    from clip_har_cli.main import app

    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("CLIP_HAR_DB", "postgres")
    monkeypatch.setenv("CLIP_HAR_PG_BIN", str(tmp_path / "empty"))
    for var in ("CLIP_HAR_PREFECT_PORT", "CLIP_HAR_MLFLOW_PORT", "CLIP_HAR_PORT"):
        monkeypatch.setenv(var, str(free_port()))  # never the defaults, should something start
    with pytest.raises(postgres.PostgresError, match=r"CLIP_HAR_PG_BIN=.*holds no initdb and pg_ctl"):
        postgres.ensure(load_settings())
    try:
        result = CliRunner().invoke(app, ["up"])
        assert result.exit_code == 1 and "holds no initdb and pg_ctl" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
        assert not state_dir.exists()  # found out before anything was written
    finally:
        assert stack.down(print) == []  # should a regression start something, stop it


def test_an_mlflow_server_that_does_not_answer_is_one_line_in_seconds(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, free_port: Callable[[], int]
) -> None:
    """MLflow's client would retry a refused connection for minutes before it says anything."""
    from clip_har.tracking import TrackingServerDown, client
    from clip_har_cli import stack
    from clip_har_cli.main import app

    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(TrackingServerDown, match=f"no MLflow server answers at {url}"):
        client(url)
    monkeypatch.setenv("CLIP_HAR_MLFLOW_SERVER", url)
    for var in ("CLIP_HAR_PREFECT_PORT", "CLIP_HAR_PORT"):
        monkeypatch.setenv(var, str(free_port()))
    try:
        result = CliRunner().invoke(app, ["up"])
        assert result.exit_code == 1 and "CLIP_HAR_MLFLOW_SERVER" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and not state_dir.exists()  # nothing started
    finally:
        assert stack.down(print) == []
    assert time.monotonic() - started < 15


def _programs_or_skip() -> Path:
    try:
        return postgres.find_programs()
    except postgres.PostgresError as exc:
        pytest.skip(f"PostgreSQL is not installed: {exc}")


FLOW = """
from prefect import flow, task

@task
def double(x: int) -> int:
    return 2 * x

@flow(name="pg-probe")
def probe() -> int:
    return sum(double(i) for i in range(3))

assert probe() == 6
"""


@pytest.mark.integration
def test_prefect_and_mlflow_on_a_local_cluster(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, free_port: Callable[[], int], tmp_path: Path, reachable: None
) -> None:
    """A cluster under the state dir (idempotent), the Prefect server on it through the cluster's
    passfile, the MLflow tracking server on it through a given server URL (the same cluster,
    password in the URL): a flow run lands in PostgreSQL; a run, a model version and the champion
    alias go through the server, and the champion comes back through it into a folder of its own."""
    from clip_har.gate import GateDecision
    from clip_har.registry import champion_bento, champion_onnx, champion_version, register
    from clip_har.tracking import client, ensure_experiment
    from clip_har_cli import stack

    _programs_or_skip()
    for var in ("CLIP_HAR_PREFECT_PORT", "CLIP_HAR_MLFLOW_PORT"):
        monkeypatch.setenv(var, str(free_port()))
    monkeypatch.setenv("CLIP_HAR_DB", "postgres")
    monkeypatch.setenv("PREFECT_HOME", str(state_dir / "prefect"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    settings = load_settings()
    state, cluster = settings.state, postgres.cluster(settings)
    started = time.monotonic()
    try:
        local = postgres.ensure(settings)
        pid = cluster.pid()
        assert pid and postgres.ensure(settings).url == local.url and cluster.pid() == pid  # twice: harmless
        password = cluster.passfile.read_text().strip().rsplit(":", 1)[1]
        monkeypatch.setenv("CLIP_HAR_DB_URL", local.url.replace("postgres@", f"postgres:{password}@"))
        given = postgres.ensure(load_settings())  # the databases exist: nothing to create
        env = stack._child_env(TELEMETRY_OFF)
        with ThreadPoolExecutor(2) as pool:  # ~20 s and ~15 s of migrations on 2 cores
            servers = [
                pool.submit(stack.start_prefect_server, settings, state, local),
                pool.submit(stack.start_mlflow_server, settings, state, given, env),
            ]
            [f.result() for f in servers]

        # a flow run, recorded in PostgreSQL
        flow_env = {**env, "PREFECT_API_URL": settings.prefect_api}
        out = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(FLOW)], env=flow_env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr[-2000:]
        import psycopg

        dsn = local.prefect_url.replace("+asyncpg", "")
        query = (
            "SELECT fr.state_type::text, (SELECT count(*) FROM task_run t WHERE t.flow_run_id = fr.id) "
            "FROM flow_run fr JOIN flow f ON f.id = fr.flow_id WHERE f.name = 'pg-probe'"
        )
        deadline, runs = time.monotonic() + 30, []
        while runs != [("COMPLETED", 3)] and time.monotonic() < deadline:  # task runs arrive as events
            with psycopg.connect(dsn, passfile=str(cluster.passfile), autocommit=True) as conn:
                runs = conn.execute(query).fetchall()
            time.sleep(0.5)
        assert runs == [("COMPLETED", 3)], runs

        # MLflow: everything through the server (the settings point every client at it)
        assert state.mlflow_uri == settings.mlflow_url
        c = client(state.mlflow_uri)
        experiment = ensure_experiment(c, "pg-test", state.mlflow_artifacts)
        assert c.get_experiment(experiment).artifact_location.startswith("mlflow-artifacts:")
        run = c.create_run(experiment).info.run_id
        c.log_metric(run, "test_macro_f1", 0.9)
        for artifact, marker in (("model", "meta.json"), ("onnx", "onnx_meta.json")):
            (tmp_path / "out" / artifact).mkdir(parents=True)
            (tmp_path / "out" / artifact / marker).write_text(f'{{"artifact": "{artifact}"}}')
            c.log_artifacts(run, str(tmp_path / "out" / artifact), artifact)
        decision = GateDecision(True, [], 0.9, None, 0.5)
        assert register(c, "clip-har", run, decision, {"data_version": "demo-v1"}).version == "1"
        assert champion_version(c, "clip-har") == "1"
        assert c.get_model_version("clip-har", "1").source.startswith("mlflow-artifacts:")  # no local path
        version, onnx = champion_onnx(c, "clip-har", tmp_path / "elsewhere")  # the registry cache
        assert version == "1" and onnx == tmp_path / "elsewhere" / "clip-har-v1" / "onnx"
        assert (onnx / "onnx_meta.json").read_text() == '{"artifact": "onnx"}'
        assert not state.mlflow_artifacts.exists()  # no client wrote a local artifact folder
        assert list(state.mlflow_served_artifacts.rglob("onnx_meta.json"))  # the server stored it
        with pytest.raises(LookupError, match="was not packaged"):  # up's lookup, through the server
            champion_bento(state, "clip-har")
        mlflow_log = stack.log_path(state, "mlflow").read_text(errors="replace")
        assert password not in mlflow_log and password not in stack.log_path(state, "prefect").read_text()
    finally:
        stopped = stack.down(print)  # by PID: the servers' process groups, then the cluster
    assert stopped == ["mlflow", "prefect", "postgres"]
    assert cluster.pid() is None
    print(f"cluster + servers + checks + stop: {time.monotonic() - started:.1f} s")

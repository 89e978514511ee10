"""Everything clip-har reads from the environment, in one typed object (where local state
lives: clip_har.state).

`load_settings()` reads the `CLIP_HAR_*` variables (README, "Settings") each time it is called,
so tests and child processes that change the environment see the change. Nothing here runs at
import time; callers call `apply_env()` explicitly before they import Prefect, BentoML or MLflow,
so those libraries write under the state dir. No other module reads `os.environ` for these.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, PositiveFloat, PositiveInt, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from clip_har.preprocess import MAX_PIXELS

# re-exported: callers import these from here, with the settings
from clip_har.state import ENV_PREFIX as ENV_PREFIX
from clip_har.state import TELEMETRY_OFF as TELEMETRY_OFF
from clip_har.state import StateDir as StateDir
from clip_har.state import env_name as env_name

# The events the flows emit and prefect.yaml's automations react to (a test keeps them in step).
DATA_EVENT = "clip-har.data.arrived"
DRIFT_EVENT = "clip-har.drift.detected"
PROMOTED_EVENT = "clip-har.model.promoted"
CHALLENGER_EVENT = "clip-har.model.challenger"  # a gated model is to shadow the champion (rollout-start)
DATA_RESOURCE = "clip-har.data"  # + ".<dataset name>"
MODEL_RESOURCE = "clip-har.model"  # + ".<registry version>"
# The `reason` an automation gives the training run it starts; how a run knows it was
# event-triggered (the retraining policy de-duplicates those).
DRIFT_REASON = "drift alert"
DATA_REASON = "new data"
TRIGGER_REASONS = (DRIFT_REASON, DATA_REASON)
WORK_POOL = "clip-har-process"  # the process work pool `clip-har up` serves prefect.yaml's deployments from

# the service's and batch inference's backend (clip_har.serving.predictor); `auto`: the fastest one
# that passed its export checks and runs on this machine (a GPU one where it has a GPU)
Backend = Literal["auto", "onnx", "onnx-int8", "onnx-cuda", "onnx-cuda-fp16", "tensorrt", "pytorch"]
# settings whose values no message, log or file may show
SECRETS = frozenset({"admin_token", "prefect_auth", "db_url"})
# DVC remotes by URL scheme; each but a folder needs its plugin (dvc-s3, dvc-ssh, ...)
DVC_SCHEMES = frozenset({"s3", "gs", "azure", "ssh", "hdfs", "webhdfs", "http", "https", "webdav", "webdavs", "oss"})


class SettingsError(ValueError):
    """A `CLIP_HAR_*` variable with a value that cannot be used; the message is one line."""


class Settings(BaseSettings):
    """One field per `CLIP_HAR_<FIELD>` variable; the README's settings table lists each."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True, env_ignore_empty=True)

    home: Path = Path(".clip-har")  # all local state (deleting it resets the install)
    profile: str = "demo"  # scheduled and event-triggered runs: a profile name or YAML file
    model_name: str = "clip-har"  # the registered model (MLflow registry and BentoML store)
    # where things listen (loopback unless configured otherwise)
    host: str = "127.0.0.1"  # the HTTP service
    port: PositiveInt = 3000
    # The Prefect server and MLflow UI of `clip-har up`: apart from `host`, because exposing the
    # service (the product) must not expose the orchestrator and the tracking server with it
    # (MLflow's UI has no login: its allow-list stops DNS rebinding, not network users).
    stack_host: str = "127.0.0.1"
    # names (DNS names or addresses, comma-separated) clients use to reach a stack bound beyond
    # loopback: MLflow's Host/CORS allow-list and where the Prefect UI calls its API
    stack_names: str = ""
    # `user:password`; when set, `up`'s Prefect server asks every request for it as basic auth
    # and the clients `up` starts send it. A secret: never printed, never written to a file.
    prefect_auth: SecretStr = SecretStr("")
    prefect_port: PositiveInt = 4200
    mlflow_port: PositiveInt = 5000
    service_url: str = ""  # what flows call for the service; default http://<host>:<port>
    # the service
    model: str = ""  # BentoML tag it starts on; default <model_name>:latest
    backend: Backend = "auto"
    admin_token: str = ""  # when set, POST /admin/reload needs `X-Admin-Token: <token>`
    http_workers: PositiveInt = 1
    # CPU inference of a batch takes tens of milliseconds to seconds; the deadline must cover a
    # full batch under load or callers get 503s (max_latency_ms is a hard deadline).
    max_latency_ms: PositiveInt = 10_000
    infer_timeout_s: PositiveFloat = 30.0
    # admission per HTTP worker: requests at work at once, and waiting behind them; the rest get
    # a 503 with Retry-After before their body is read (memory bounded whatever the load)
    max_inflight: PositiveInt = 16
    max_explain: PositiveInt = 2  # POST /explain at work at once per HTTP worker (PyTorch in that process)
    max_queue: int = Field(64, ge=0)
    retry_after_s: PositiveInt = 2  # what a 503 tells callers to wait
    max_files: PositiveInt = 16  # images per request
    max_file_mb: PositiveFloat = 10.0  # per uploaded image
    max_pixels: PositiveInt = MAX_PIXELS  # decompression-bomb guard, checked before decoding
    max_labels: PositiveInt = 64  # free-text labels for /classify
    max_label_chars: PositiveInt = 200
    max_video_mb: PositiveFloat = 100.0
    max_frames: PositiveInt = 300  # sampled frames per video
    # monitoring folders: default under the state dir; "off" switches the writer off (the log's
    # "off" exists to measure its cost: bench/serving.py --log-overhead)
    prediction_log: str = ""
    review_dir: str = ""
    reports_dir: str = ""
    # an event-triggered training run stands down if another one started this recently
    retrain_cooldown_s: float = Field(1800.0, ge=0)
    # Beyond one machine (README, "Running beyond one machine"). The Prefect server's and MLflow's
    # databases: SQLite files under the state dir (embedded, the default), or PostgreSQL: `postgres`
    # is a local cluster under <state>/postgres that `up` starts; `db_url` names a server instead
    # (whatever `db` says). Either way the databases are `prefect` and `mlflow`, created if missing.
    db: Literal["sqlite", "postgres"] = "sqlite"
    # postgresql://user:password@host:5432: no database, no options (TLS: PGSSLMODE & co). A secret.
    db_url: SecretStr = SecretStr("")
    pg_bin: str = ""  # the local cluster's PostgreSQL programs (initdb, pg_ctl); default: found
    pg_port: int = Field(0, ge=0, le=65535)  # the local cluster's loopback port; 0: a free one, chosen once
    # An MLflow tracking server elsewhere (http://host:5000): everything logs to it and fetches
    # models through it over HTTP (proxied artifacts, no shared disk) and `up` starts no MLflow.
    # With PostgreSQL and no such server, clients use the one `up` starts.
    mlflow_server: str = ""
    # the data registry's DVC remote: a folder (default <state>/dvc-remote) or a URL such as
    # s3://bucket/path (plugin dvc-s3) or ssh://host/path (dvc-ssh); credentials stay in DVC's config
    dvc_remote: str = ""
    # A Dask scheduler (tcp://host:8786) whose workers share batch inference out; empty: one process
    dask_address: str = ""

    @field_validator("prefect_auth")
    @classmethod
    def _user_colon_password(cls, value: SecretStr) -> SecretStr:
        user, colon, password = value.get_secret_value().partition(":")
        if value.get_secret_value() and not (user and colon and password):
            raise ValueError("must be user:password")  # never the value: it is a secret
        return value

    @field_validator("db_url")
    @classmethod
    def _postgres_server_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            return value
        # every message names the rule, never the value: it holds a password
        try:
            url = urlsplit(value.get_secret_value())
            url.port  # noqa: B018 (a malformed port raises here)
        except ValueError:
            raise ValueError("not a URL: postgresql://user:password@host:5432") from None
        if url.scheme.split("+")[0] not in ("postgresql", "postgres") or not url.hostname:
            raise ValueError("must be postgresql://user:password@host:5432")
        if url.path.strip("/") or url.fragment:
            raise ValueError("must name a server, not a database (clip-har uses the databases prefect and mlflow)")
        if url.query:
            # the two drivers disagree on URL options (psycopg: sslmode=, asyncpg: ssl=)
            raise ValueError("no options in the URL: set PGSSLMODE, PGSSLROOTCERT, ... (both drivers read them)")
        return value

    @field_validator("mlflow_server")
    @classmethod
    def _http_server(cls, value: str) -> str:
        if not value:
            return value
        url = urlsplit(value)
        if url.scheme not in ("http", "https") or not url.hostname or url.query or url.fragment:
            raise ValueError("must be an MLflow tracking server's address, http(s)://host:port")
        if url.username or url.password:
            # an address ends up in logs and run metadata; MLflow reads credentials from its own variables
            raise ValueError("no credentials in the address: use MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD")
        return value.rstrip("/")

    @field_validator("dask_address")
    @classmethod
    def _dask_scheduler(cls, value: str) -> str:
        if value and (urlsplit(value).scheme not in ("tcp", "tls") or not urlsplit(value).hostname):
            raise ValueError("must be a Dask scheduler's address, tcp://host:8786 (or tls://)")
        return value

    @field_validator("dvc_remote")
    @classmethod
    def _dvc_remote(cls, value: str) -> str:
        if "://" not in value:
            return value  # a folder (a shared mount, say)
        url = urlsplit(value)
        if url.scheme not in DVC_SCHEMES:
            raise ValueError(
                f"DVC has no remote of type {url.scheme!r}: a folder or one of {', '.join(sorted(DVC_SCHEMES))}"
            )
        if url.password:
            raise ValueError(
                "no password in the URL: set it with `dvc remote modify --local` or the plugin's own credentials"
            )
        return value

    @field_validator("stack_names")
    @classmethod
    def _names_not_urls(cls, value: str) -> str:
        for name in filter(None, (n.strip() for n in value.split(","))):
            # each becomes `name:<port>` in the allow-lists and `http://name:<port>` in URLs: a scheme, a port or
            # brackets would make entries that match nothing
            ipv6 = ":" in name and _is_ip(name)
            if "/" in name or any(c.isspace() for c in name) or (":" in name and not ipv6):
                raise ValueError(f"{name!r} is not a host name or address (no scheme, port or path)")
        return value

    @property
    def state(self) -> StateDir:
        def folder(value: str) -> Path | None:
            return Path(value).resolve() if value and value != "off" else None

        remote = self.dvc_remote if "://" in self.dvc_remote else folder(self.dvc_remote)
        return StateDir(
            self.home.resolve(),
            folder(self.prediction_log),
            folder(self.review_dir),
            folder(self.reports_dir),
            self.tracking_server,
            str(remote) if remote else None,
        )

    def check_exposure(self, host: str | None = None) -> None:
        """Listening beyond loopback without an admin token would open POST /admin/reload to
        the network: SettingsError says so (`host` default: the `host` setting)."""
        host = host or self.host
        if not self.admin_token and not is_loopback(host):
            raise SettingsError(
                f"refusing to listen on {host} without {env_name('admin_token')}: "
                "POST /admin/reload would be open to the network"
            )

    @property
    def stack_exposed(self) -> bool:
        return not is_loopback(self.stack_host)

    @property
    def public_names(self) -> list[str]:
        """The names clients use to reach an exposed stack: CLIP_HAR_STACK_NAMES, then the stack
        host itself when it is one address (a wildcard bind such as 0.0.0.0 names nothing)."""
        names = [n.strip() for n in self.stack_names.split(",") if n.strip()]
        if not _is_wildcard(self.stack_host) and self.stack_host not in names:
            names.append(self.stack_host)
        return names

    def check_stack_exposure(self) -> None:
        """Binding the Prefect server and MLflow beyond loopback needs the Prefect server's basic
        auth and at least one name for MLflow's allow-list: SettingsError says which is missing."""
        if not self.stack_exposed:
            return
        host = self.stack_host
        if not self.prefect_auth.get_secret_value():
            raise SettingsError(
                f"refusing to bind the stack on {host} without {env_name('prefect_auth')} (user:password): "
                "the Prefect API would be open to the network"
            )
        if not self.public_names:
            raise SettingsError(
                f"binding the stack on {host} needs {env_name('stack_names')}: the names or addresses "
                "clients use to reach it (MLflow refuses any other Host header)"
            )

    @property
    def logs_predictions(self) -> bool:
        return self.prediction_log != "off"

    @property
    def keeps_review_queue(self) -> bool:
        return self.review_dir != "off"

    @property
    def serving_model(self) -> str:
        return self.model or f"{self.model_name}:latest"

    @property
    def service(self) -> str:
        return self.service_url or f"http://{client_host(self.host)}:{self.port}"

    @property
    def prefect_url(self) -> str:
        """Where processes on this machine reach `up`'s Prefect server."""
        return f"http://{client_host(self.stack_host)}:{self.prefect_port}"

    @property
    def prefect_api(self) -> str:
        return f"{self.prefect_url}/api"

    @property
    def mlflow_url(self) -> str:
        """Where processes on this machine reach `up`'s MLflow."""
        return f"http://{client_host(self.stack_host)}:{self.mlflow_port}"

    @property
    def uses_postgres(self) -> bool:
        return self.db == "postgres" or bool(self.db_url.get_secret_value())

    @property
    def tracking_server(self) -> str | None:
        """The MLflow server every client logs to and fetches models through over HTTP: the
        given one, else `up`'s when it runs on PostgreSQL (clients never open that database
        themselves: artifacts would then be paths on whichever disk wrote them); None: the
        SQLite file and artifact folders of the state dir (the default)."""
        if self.mlflow_server:
            return self.mlflow_server
        return self.mlflow_url if self.uses_postgres else None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def url_host(host: str) -> str:
    """`host` as it appears in a URL or a Host header (IPv6 addresses in brackets)."""
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def client_host(bind: str) -> str:
    """Where a client on this machine reaches a server bound to `bind` (a wildcard bind listens
    on loopback too), in URL form."""
    if _is_wildcard(bind):
        return url_host("::1" if ":" in bind else "127.0.0.1")
    return url_host(bind)


def load_settings() -> Settings:
    """The settings from the environment now; SettingsError names the bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "*"
        value = "<hidden>" if field in SECRETS else repr(redact_url(first.get("input")))
        # a secret's input (in any of the errors), or a password in a URL, would show in the
        # chained error's text
        secret = any(
            (e["loc"] and str(e["loc"][0]) in SECRETS) or redact_url(e.get("input")) != e.get("input")
            for e in exc.errors()
        )
        raise SettingsError(f"{env_name(field)}={value}: {first['msg']}") from (None if secret else exc)


def redact_url(value: object) -> object:
    """`value` with the password of a URL in it masked; anything else as it is."""
    if not isinstance(value, str) or "://" not in value:
        return value
    try:
        url = urlsplit(value)
        password = url.password
    except ValueError:
        return value
    if not password:
        return value
    user = url.username or ""
    return url._replace(netloc=url.netloc.replace(f"{user}:{password}@", f"{user}:***@", 1)).geturl()


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus `extra`: what a child process (server, rank) starts with."""
    return {**os.environ, **(extra or {})}

"""PostgreSQL for the Prefect server and MLflow (CLIP_HAR_DB=postgres, or CLIP_HAR_DB_URL): the
database URLs derived from a server's, and a local cluster under <state>/postgres that
`clip-har up` starts and `clip-har down` stops.

PostgreSQL refuses to run as root, so when this process is root the cluster runs as the
`postgres` system user (runuser) and its folder belongs to that user. The local superuser's
password is generated at initdb and kept in a passfile (0600) that clients find through
PGPASSFILE: no URL, command line or log carries it. The schemas are Prefect's and MLflow's own
migrations; this module only creates the two (empty) databases.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from clip_har.settings import Settings, env_name, redact_url

PREFECT_DB = "prefect"
MLFLOW_DB = "mlflow"
# SQLAlchemy drivers: Prefect's server is async (asyncpg), MLflow's store is sync (psycopg 3)
PREFECT_DRIVER = "asyncpg"
MLFLOW_DRIVER = "psycopg"
OS_USER = "postgres"  # whom the cluster runs as when we are root
SUPERUSER = "postgres"  # the cluster's database role
PROGRAMS = ("initdb", "pg_ctl")
SOCKET_PATH_MAX = 107  # bytes of a unix socket path (sun_path); a longer one stops the postmaster


class PostgresError(RuntimeError):
    """PostgreSQL cannot be used as configured; the message is one line."""


def database_url(server_url: str, database: str, driver: str) -> str:
    """One database of `server_url` (postgresql://user:password@host:port) for a SQLAlchemy driver."""
    return urlunsplit((f"postgresql+{driver}", urlsplit(server_url).netloc, f"/{database}", "", ""))


@dataclass(frozen=True, repr=False)
class Server:
    """A PostgreSQL server holding the `prefect` and `mlflow` databases."""

    url: str  # postgresql://user[:password]@host:port, no database; may hold a password
    passfile: Path | None = None  # the local cluster's password, for libpq and asyncpg

    @property
    def prefect_url(self) -> str:
        """PREFECT_SERVER_DATABASE_CONNECTION_URL"""
        return database_url(self.url, PREFECT_DB, PREFECT_DRIVER)

    @property
    def mlflow_url(self) -> str:
        """MLflow's backend (and registry) store URI"""
        return database_url(self.url, MLFLOW_DB, MLFLOW_DRIVER)

    @property
    def env(self) -> dict[str, str]:
        """What a client process needs besides a URL."""
        return {"PGPASSFILE": str(self.passfile)} if self.passfile else {}

    def __str__(self) -> str:
        return str(redact_url(self.url))

    __repr__ = __str__  # a traceback or log line shows the server, never its password

    def ensure_databases(self, timeout: float = 10.0) -> list[str]:
        """Create the databases that are missing (running it twice is harmless); the created."""
        try:
            import psycopg  # the `scale` extra
            from psycopg import errors, sql
        except ImportError:
            raise PostgresError("PostgreSQL needs psycopg: pip install -e '.[scale]'") from None
        netloc = urlsplit(self.url).netloc
        extra = {"passfile": str(self.passfile)} if self.passfile else {}
        created = []
        try:
            conninfo = urlunsplit(("postgresql", netloc, "/postgres", "", ""))  # the maintenance database
            with psycopg.connect(conninfo, autocommit=True, connect_timeout=max(1, int(timeout)), **extra) as conn:
                names = [PREFECT_DB, MLFLOW_DB]
                have = {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", [names])}
                for name in (n for n in names if n not in have):
                    try:
                        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                        created.append(name)
                    except errors.DuplicateDatabase:
                        pass  # another `up` created it in between
        except psycopg.Error as exc:
            # libpq's messages name host, port and user, never the password
            raise PostgresError(f"PostgreSQL at {self}: {_first_line(str(exc))}") from None
        return created


@dataclass(frozen=True)
class Cluster:
    """A local PostgreSQL cluster under `root` (<state>/postgres), listening on loopback only."""

    root: Path
    bin_dir: str = ""  # CLIP_HAR_PG_BIN; empty: found (find_programs)
    port: int = 0  # CLIP_HAR_PG_PORT; 0: a free one, chosen when the cluster is created

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def sockets(self) -> Path:
        return self.root / "run"  # not /var/run: nothing outside the state dir

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    @property
    def passfile(self) -> Path:
        return self.root / "pgpass"

    @property
    def port_file(self) -> Path:
        return self.root / "port"

    def pid(self) -> int | None:
        """The postmaster's PID while the cluster runs."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        # a postmaster.pid left by a crash or reboot may name a PID reused by anything since
        return pid if process_alive(pid) and _is_postgres(pid) else None

    def server(self) -> Server:
        port = self.port_file.read_text().strip() if self.port_file.is_file() else self.port
        return Server(f"postgresql://{SUPERUSER}@127.0.0.1:{port}", self.passfile)

    def ensure(self) -> Server:
        """Create (initdb) and start the cluster and its databases where needed; its server.
        Running it twice is harmless: same cluster, same port."""
        programs = find_programs(self.bin_dir)  # before anything is written
        self._prepare()
        if not (self.data / "PG_VERSION").is_file():
            self._init(programs)
        if self.pid() is None:
            self._start(programs)
        server = self.server()
        server.ensure_databases()
        return server

    def stop(self, timeout: float = 60.0) -> int | None:
        """Stop the cluster (fast: open sessions end, nothing is lost); its PID, None if none ran."""
        pid = self.pid()
        if pid is None:
            return None
        try:
            pg_ctl = find_programs(self.bin_dir) / "pg_ctl"
            _run([str(pg_ctl), "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", str(int(timeout)), "-s"], "stop")
        except PostgresError:
            os.kill(pid, signal.SIGINT)  # what pg_ctl's fast mode sends
            deadline = time.monotonic() + timeout
            while process_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if process_alive(pid):
                os.kill(pid, signal.SIGQUIT)  # immediate shutdown: crash recovery at the next start
        return pid

    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        if os.geteuid() != 0:
            self.root.chmod(0o700)
            return
        owner = _os_user()
        for path in (self.root, self.sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)
            path.chmod(0o700)
        if subprocess.run(_as_owner(["test", "-w", str(self.root)]), capture_output=True).returncode != 0:
            raise PostgresError(
                f"user {OS_USER} (PostgreSQL refuses to run as root) cannot reach {self.root}: "
                f"make its parent folders searchable (chmod o+x) or move {env_name('home')}"
            )

    def _init(self, programs: Path) -> None:
        password = secrets.token_urlsafe(24)
        # the passfile first: a cluster whose password got lost could not be used again
        _write_private(self.passfile, f"127.0.0.1:*:*:{SUPERUSER}:{password}\n")
        pwfile = self.root / "initdb.pw"
        _write_private(pwfile, f"{password}\n", owner=_os_user() if os.geteuid() == 0 else None)
        try:
            # scram on every connection; locale C: sorting that does not depend on the host's locales
            cmd = [str(programs / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "-A", "scram-sha-256"]
            _run([*cmd, f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C"], "initdb")
        finally:
            pwfile.unlink(missing_ok=True)

    def _start(self, programs: Path) -> None:
        recorded = int(self.port_file.read_text()) if self.port_file.is_file() else 0
        port = self.port or recorded or _free_port()
        self.port_file.write_text(f"{port}\n")
        sockets = str(self.sockets)
        if len(f"{sockets}/.s.PGSQL.{port}".encode()) > SOCKET_PATH_MAX:
            sockets = ""  # TCP only: a deep state dir would not fit a socket path
        opts = ["-c", "listen_addresses=127.0.0.1", "-p", str(port), "-c", f"unix_socket_directories={sockets}"]
        cmd = [str(programs / "pg_ctl"), "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-s"]
        try:
            _run([*cmd, "-o", shlex.join(opts)], "start")  # pg_ctl hands -o to a shell
        except PostgresError:
            raise PostgresError(
                f"PostgreSQL did not start on port {port}: {self._last_log_line()} ({self.log})"
            ) from None

    def _last_log_line(self) -> str:
        try:
            lines = [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return "no log"
        return lines[-1] if lines else "empty log"


def cluster(settings: Settings) -> Cluster:
    return Cluster(settings.state.postgres, settings.pg_bin, settings.pg_port)


def ensure(settings: Settings) -> Server | None:
    """The PostgreSQL server of the Prefect and MLflow databases, ready: the given one, or the
    local cluster (started); its databases created. None: SQLite (the default)."""
    if url := settings.db_url.get_secret_value():
        server = Server(url)
        server.ensure_databases()
        return server
    if settings.db == "postgres":
        return cluster(settings).ensure()
    return None


def find_programs(given: str = "") -> Path:
    """PostgreSQL's bin folder: `given` (CLIP_HAR_PG_BIN), else pg_config's, the one on PATH, or
    the newest of Debian's /usr/lib/postgresql/<version>/bin."""
    if given:
        if _has_programs(Path(given)):
            return Path(given)
        raise PostgresError(
            f"{env_name('pg_bin')}={given} holds no {' and '.join(PROGRAMS)}: "
            "point it at PostgreSQL's bin folder (`pg_config --bindir`)"
        )
    for folder in _candidates():
        if _has_programs(folder):
            return folder
    raise PostgresError(
        f"PostgreSQL's server programs ({', '.join(PROGRAMS)}) were not found: install PostgreSQL "
        f"(e.g. apt-get install postgresql) or set {env_name('pg_bin')} to their folder"
    )


def _candidates() -> Iterator[Path]:
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            yield Path(out.stdout.strip())
    if initdb := shutil.which("initdb"):
        yield Path(initdb).resolve().parent

    def version(folder: Path) -> float:
        try:
            return float(folder.parent.name)
        except ValueError:
            return 0.0

    yield from sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)


def _has_programs(folder: Path) -> bool:
    return all(os.access(folder / name, os.X_OK) and (folder / name).is_file() for name in PROGRAMS)


def _os_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(OS_USER)
    except KeyError:
        raise PostgresError(
            f"PostgreSQL refuses to run as root and there is no {OS_USER!r} user to run it as: "
            f"create one, or run clip-har as another user"
        ) from None


def _as_owner(cmd: list[str]) -> list[str]:
    """`cmd` as the cluster's owner: as is, or as the postgres user when we are root."""
    if os.geteuid() != 0:
        return cmd
    _os_user()
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PostgresError(f"running as root, clip-har needs runuser (util-linux) to run PostgreSQL as {OS_USER}")
    return [runuser, "-u", OS_USER, "--", *cmd]


def _run(cmd: list[str], what: str) -> None:
    # a session of its own: a Ctrl-C meant for `clip-har up` must not reach the postmaster
    try:
        out = subprocess.run(_as_owner(cmd), capture_output=True, text=True, timeout=180, start_new_session=True)
    except subprocess.TimeoutExpired:
        raise PostgresError(f"pg {what} did not finish in 180 s") from None
    if out.returncode != 0:
        raise PostgresError(f"pg {what} failed: {_first_line(out.stderr or out.stdout)}")


def _write_private(path: Path, text: str, owner: pwd.struct_passwd | None = None) -> None:
    """A file only its owner may read (libpq ignores a passfile others can read)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)


def _is_postgres(pid: int) -> bool:
    """Whether `pid` runs a PostgreSQL server program (where /proc tells; elsewhere assumed)."""
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return True
    return name in ("postgres", "postmaster")


def process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, exited and not reaped yet, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:  # a zombie (exited, not reaped yet) answers kill(0) too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "no output"

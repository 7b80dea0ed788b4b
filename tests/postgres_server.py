"""A real, throwaway PostgreSQL server for tests.

``throwaway_postgres()`` starts a private cluster in a temporary directory (``initdb`` + ``pg_ctl
-w start``), listening on 127.0.0.1 on a free port with trust authentication for loopback only and
durability switched off (``fsync``, ``full_page_writes``, ``synchronous_commit``), creates a
database ``voxgate`` and yields its SQLAlchemy URL
(``postgresql+asyncpg://postgres@127.0.0.1:<port>/voxgate``). Leaving the block stops the server
(``pg_ctl stop -m immediate``) and removes the directory.

``initdb`` refuses to run as root: as root, the cluster belongs to the ``postgres`` user and the
server's programs run through ``runuser -u postgres --``; as any other user they run directly.
The binaries are Debian's (``/usr/lib/postgresql/<version>/bin``, highest version), else
``pg_config --bindir`` (or ``$VOXGATE_PG_BINDIR`` when set). Anything missing or failing raises :class:`PostgresServerError` saying which
step, with the server log's tail.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

DEBIAN_ROOT = Path("/usr/lib/postgresql")
BINDIR_ENV = "VOXGATE_PG_BINDIR"
REQUIRED_PROGRAMS = ("initdb", "pg_ctl", "postgres", "psql")
SUPERUSER = "postgres"
DATABASE = "voxgate"
START_TIMEOUT_S = 30
LOG_TAIL_LINES = 25


class PostgresServerError(RuntimeError):
    """PostgreSQL cannot be found, set up or started here (the message says which step)."""


def _version_key(path: Path) -> tuple[int, ...]:
    parts = re.findall(r"\d+", path.parent.name)
    return tuple(int(p) for p in parts) if parts else (-1,)


def find_bindir() -> Path:
    """The directory holding the server's programs: Debian's highest version, else ``pg_config``.

    A ``pg_ctl`` on PATH is deliberately not used: it may not be Debian's, nor match ``initdb``.
    ``VOXGATE_PG_BINDIR``, when set, is used instead (and only it)."""
    override = os.environ.get(BINDIR_ENV)
    if override:
        bindir = Path(override)
        missing = [n for n in REQUIRED_PROGRAMS if not os.access(bindir / n, os.X_OK)]
        if missing:
            raise PostgresServerError(
                f"{BINDIR_ENV}={override} lacks the PostgreSQL programs {', '.join(missing)}"
            )
        return bindir
    candidates = sorted(
        (p for p in DEBIAN_ROOT.glob("*/bin") if (p / "initdb").is_file()),
        key=_version_key,
        reverse=True,
    )
    for bindir in candidates:
        if all(os.access(bindir / name, os.X_OK) for name in REQUIRED_PROGRAMS):
            return bindir
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False, timeout=10
        )
        bindir = Path(result.stdout.strip())
        if result.returncode == 0 and all(
            os.access(bindir / name, os.X_OK) for name in REQUIRED_PROGRAMS
        ):
            return bindir
    looked = ", ".join(str(p) for p in candidates) or f"no {DEBIAN_ROOT}/*/bin with initdb"
    raise PostgresServerError(
        f"PostgreSQL server programs ({', '.join(REQUIRED_PROGRAMS)}) not found: looked in "
        f"{looked}; pg_config {'gave no usable --bindir' if pg_config else 'is not on PATH'}. "
        "Install Debian's `postgresql` package (`make setup`)."
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no server log: {exc})"
    tail = text.strip().splitlines()[-lines:]
    return "\n".join(tail) if tail else "(server log is empty)"


@dataclass
class PostgresServer:
    """One throwaway cluster. ``start()`` / ``stop()`` (idempotent), or use it as a context
    manager."""

    bindir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 0
    root: Path | None = field(default=None, init=False)
    _prefix: list[str] = field(default_factory=list, init=False)
    _running: bool = field(default=False, init=False)

    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "server not started"
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        assert self.root is not None, "server not started"
        return self.root / "server.log"

    def url(self, database: str = DATABASE) -> str:
        """SQLAlchemy URL (asyncpg driver) of ``database`` on this server."""
        return f"postgresql+asyncpg://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def dsn(self, database: str = DATABASE) -> str:
        """libpq / asyncpg DSN of ``database`` on this server."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    # --- running the programs -------------------------------------------------------------------

    def _run(self, step: str, program: str, *args: str, timeout: float = 60) -> None:
        assert self.bindir is not None and self.root is not None
        command = [*self._prefix, str(self.bindir / program), *args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        try:
            result = subprocess.run(
                command,
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=False,
                timeout=timeout,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PostgresServerError(
                f"PostgreSQL {step} failed: `{' '.join(command)}`: {exc}\n"
                f"--- server log tail ---\n{_tail(self.log_file)}"
            ) from exc
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            raise PostgresServerError(
                f"PostgreSQL {step} failed (exit {result.returncode}): `{' '.join(command)}`\n"
                f"{output}\n--- server log tail ---\n{_tail(self.log_file)}"
            )

    def _user_prefix(self) -> tuple[list[str], int | None, int | None]:
        """How to run the programs as a non-root user: (command prefix, uid, gid) to own the
        directory, or no prefix when not root."""
        if os.geteuid() != 0:
            return [], None, None
        import pwd

        try:
            entry = pwd.getpwnam(SUPERUSER)
        except KeyError:
            raise PostgresServerError(
                f"running as root, and initdb refuses root, but there is no `{SUPERUSER}` user "
                "to run it as (Debian's postgresql package creates it)"
            ) from None
        runuser = shutil.which("runuser")
        if runuser is None:
            raise PostgresServerError(
                f"running as root, and initdb refuses root, but `runuser` (util-linux) is not on "
                f"PATH to run it as `{SUPERUSER}`"
            )
        return [runuser, "-u", SUPERUSER, "--"], entry.pw_uid, entry.pw_gid

    # --- life cycle -----------------------------------------------------------------------------

    def start(self) -> PostgresServer:
        if self._running:
            return self
        if self.bindir is None:
            self.bindir = find_bindir()
        self._prefix, uid, gid = self._user_prefix()
        self.root = Path(tempfile.mkdtemp(prefix="voxgate-pg-"))
        try:
            if uid is not None and gid is not None:
                os.chown(self.root, uid, gid)
            self._initdb()
            self._start_server()
            self._run(
                "creating database",
                "psql",
                *("-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.host, "-p", str(self.port)),
                *("-U", SUPERUSER, "-d", "postgres", "-c", f"CREATE DATABASE {DATABASE}"),
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _initdb(self) -> None:
        self._run(
            "initdb",
            "initdb",
            *("-D", str(self.data_dir), "-U", SUPERUSER, "-E", "UTF8", "--locale=C"),
            *("--auth=trust", "--no-sync", "--no-instructions"),
        )
        # Trust, but only over the private socket and loopback.
        (self.data_dir / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n"
        )
        # The socket lives beside the data; a path too long for a Unix socket means TCP only.
        socket_dir = str(self.root) if len(f"{self.root}/.s.PGSQL.65535") < 104 else ""
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# voxgate test server\n"
                f"listen_addresses = '{self.host}'\n"
                f"unix_socket_directories = '{socket_dir}'\n"
                "fsync = off\n"
                "full_page_writes = off\n"
                "synchronous_commit = off\n"
                "logging_collector = off\n"
            )

    def _start_server(self, attempts: int = 3) -> None:
        """``pg_ctl -w start`` on a free port; another port if that one was taken meanwhile."""
        conf = self.data_dir / "postgresql.conf"
        base = conf.read_text()
        for attempt in range(1, attempts + 1):
            self.port = free_port()
            conf.write_text(base + f"port = {self.port}\n")
            try:
                self._run(
                    "server start (pg_ctl -w start)",
                    "pg_ctl",
                    *("-D", str(self.data_dir), "-l", str(self.log_file)),
                    *("-w", "-t", str(START_TIMEOUT_S), "start"),
                    timeout=START_TIMEOUT_S + 10,
                )
            except PostgresServerError as exc:
                if attempt < attempts and "already in use" in str(exc):
                    continue
                raise
            self._running = True
            return

    def stop(self) -> None:
        """Stop at once (``-m immediate``) and remove the directory. Safe to call again, or on a
        server that already died."""
        root, self.root = self.root, None
        if root is None:
            return
        self._running = False
        data_dir = root / "data"
        pid = self._postmaster_pid(data_dir)
        # (A killed postmaster may linger as a zombie, which pg_ctl would wait on.)
        if pid is not None and _alive(pid) and self.bindir is not None:
            env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(
                    [
                        *self._prefix,
                        str(self.bindir / "pg_ctl"),
                        *("-D", str(data_dir), "-m", "immediate", "-w", "-t", "10", "stop"),
                    ],
                    cwd=root,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    check=False,
                    timeout=20,
                )
            self._kill_leftover(data_dir)
        shutil.rmtree(root, ignore_errors=True)

    def pause(self) -> None:
        """Stop the server but keep its data and port, as a database restart would."""
        assert self.root is not None, "server not started"
        self._run(
            "server stop (pg_ctl -m fast stop)",
            "pg_ctl",
            *("-D", str(self.data_dir), "-m", "fast", "-w", "-t", "10", "stop"),
            timeout=20,
        )
        self._running = False

    def resume(self) -> None:
        """Start a paused server again, on the same port."""
        assert self.root is not None, "server not started"
        self._run(
            "server start (pg_ctl -w start)",
            "pg_ctl",
            *("-D", str(self.data_dir), "-l", str(self.log_file)),
            *("-w", "-t", str(START_TIMEOUT_S), "start"),
            timeout=START_TIMEOUT_S + 10,
        )
        self._running = True

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would (the directory stays until ``stop()``)."""
        assert self.root is not None, "server not started"
        pid = self._postmaster_pid(self.data_dir)
        if pid is None:
            raise PostgresServerError("no postmaster.pid: the server is not running")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.01)

    @staticmethod
    def _postmaster_pid(data_dir: Path) -> int | None:
        try:
            first = (data_dir / "postmaster.pid").read_text().splitlines()[0]
            return int(first.strip())
        except (OSError, IndexError, ValueError):
            return None

    def _kill_leftover(self, data_dir: Path) -> None:
        pid = self._postmaster_pid(data_dir)
        if pid is not None and _alive(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped) still answers signal 0.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Start a throwaway server; yields the SQLAlchemy URL of its ``voxgate`` database."""
    with PostgresServer() as server:
        yield server.url()


@contextlib.asynccontextmanager
async def fresh_database(server: PostgresServer) -> AsyncIterator[str]:
    """A new, empty database ``test_<random>`` on ``server``; yields its SQLAlchemy URL and drops it
    afterwards (``WITH (FORCE)``: connections left open do not keep it alive)."""
    import asyncpg

    name = f"test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(server.dsn("postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield server.url(name)
    finally:
        admin = await asyncpg.connect(server.dsn("postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

"""Several ``voxgate serve`` replicas on one machine behind HAProxy, with a throwaway Redis: the
cluster test (tests/cluster/) and its benchmark (bench/cluster.py) run on this. PostgreSQL is
the caller's (a URL).

The replicas start together (so an empty database is migrated by all of them at once), each with
its own data directory and port, the same secrets, ``[redis] url`` and database; HAProxy
(``leastconn``, health checks on ``/healthz`` every 500 ms, a connection that fails is tried on
another replica) listens in front. ``kill(name)`` is a ``kill -9``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.harness import free_port

HAPROXY_CONFIG = """\
global
  maxconn 4096
defaults
  mode http
  option redispatch
  retries 3
  timeout connect 1s
  timeout client 120s
  timeout server 120s
  timeout tunnel 1h
frontend voxgate
  bind 127.0.0.1:{port}
  default_backend replicas
backend replicas
  balance leastconn
  option httpchk GET /healthz
{servers}
"""
SERVER_LINE = "  server {name} {address} check inter 500ms fall 2 rise 2"


class ClusterError(RuntimeError):
    """A part of the cluster cannot start here (the message says which)."""


# -- Redis ------------------------------------------------------------------------------------


@contextlib.contextmanager
def throwaway_redis(start_timeout_s: float = 10.0) -> Iterator[str]:
    """Debian's ``redis-server``: no persistence, loopback, a free port. Yields its URL."""
    program = shutil.which("redis-server")
    if program is None:
        raise ClusterError("redis-server is not installed (Debian: apt-get install redis-server)")
    root = Path(tempfile.mkdtemp(prefix="voxgate-redis-"))
    port = free_port()
    command = [
        program,
        *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(root)),
        *("--save", "", "--appendonly", "no", "--daemonize", "no"),
    ]
    with (root / "redis.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + start_timeout_s
        while not _redis_answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise ClusterError(
                    f"redis-server did not start: {(root / 'redis.log').read_text()[-2000:]}"
                )
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(process)
        shutil.rmtree(root, ignore_errors=True)


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the replicas and the balancer -------------------------------------------------------------


@dataclass
class Replica:
    name: str
    port: int
    data_dir: Path
    process: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.data_dir / "serve.log"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None


@dataclass
class Cluster:
    root: Path
    replicas: list[Replica]
    balancer_port: int
    admin_token: str
    haproxy: subprocess.Popen[bytes] | None = None
    killed_at: dict[str, float] = field(default_factory=dict)

    @property
    def balancer(self) -> str:
        return f"127.0.0.1:{self.balancer_port}"

    def replica(self, name: str) -> Replica:
        return next(replica for replica in self.replicas if replica.name == name)

    def kill(self, name: str) -> float:
        """``kill -9`` the replica; returns the instant (``time.monotonic()``)."""
        replica = self.replica(name)
        assert replica.process is not None
        os.kill(replica.process.pid, signal.SIGKILL)
        self.killed_at[name] = time.monotonic()
        return self.killed_at[name]

    def logs(self) -> dict[str, str]:
        return {
            replica.name: replica.log.read_text(errors="replace") if replica.log.exists() else ""
            for replica in self.replicas
        }


def replica_env(
    *,
    name: str,
    data_dir: Path,
    database_url: str,
    redis_url: str,
    admin_token: str,
    jwt_secret: str,
    extra: Mapping[str, str],
) -> dict[str, str]:
    env = {
        **os.environ,
        "VOXGATE_DATA_DIR": str(data_dir),
        "VOXGATE_DATABASE_URL": database_url,
        "VOXGATE_REDIS__URL": redis_url,
        "VOXGATE_SERVER__REPLICA_ID": name,
        "VOXGATE_SERVER__ADMIN_TOKEN": admin_token,
        "VOXGATE_SERVER__JWT_SECRET": jwt_secret,
        **extra,
    }
    env.pop("VOXGATE_CONFIG", None)
    return env


@contextlib.asynccontextmanager
async def cluster(
    database_url: str,
    redis_url: str,
    env: Mapping[str, str],
    *,
    replicas: int = 3,
    models_dir: Path | None = None,
    ready_timeout_s: float = 120.0,
) -> AsyncIterator[Cluster]:
    """``replicas`` replicas started at once, then HAProxy in front once they answer."""
    if shutil.which("haproxy") is None:
        raise ClusterError("haproxy is not installed (Debian: apt-get install haproxy)")
    root = Path(tempfile.mkdtemp(prefix="voxgate-cluster-"))
    admin_token = f"admin-{os.urandom(12).hex()}"
    jwt_secret = os.urandom(32).hex()
    names = "abcdefghij"[:replicas]
    made = Cluster(
        root,
        [Replica(name, free_port(), root / name) for name in names],
        free_port(),
        admin_token,
    )
    try:
        for replica in made.replicas:
            replica.data_dir.mkdir()
            if models_dir is not None:  # the prepared models, shared rather than copied
                (replica.data_dir / "models").symlink_to(models_dir, target_is_directory=True)
            with replica.log.open("wb") as log:
                replica.process = await asyncio.create_subprocess_exec(
                    *(sys.executable, "-m", "voxgate", "serve", "--port", str(replica.port)),
                    *("--log-level", "info"),
                    env=replica_env(
                        name=replica.name,
                        data_dir=replica.data_dir,
                        database_url=database_url,
                        redis_url=redis_url,
                        admin_token=admin_token,
                        jwt_secret=jwt_secret,
                        extra=env,
                    ),
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                )
        await asyncio.gather(*(_ready(r, ready_timeout_s) for r in made.replicas))
        made.haproxy = _start_haproxy(made)
        await _balancer_ready(made)
        yield made
    finally:
        for replica in made.replicas:
            if replica.alive:
                assert replica.process is not None
                replica.process.terminate()
        for replica in made.replicas:
            if replica.process is not None:
                try:
                    await asyncio.wait_for(replica.process.wait(), 20)
                except TimeoutError:
                    replica.process.kill()
                    await replica.process.wait()
        if made.haproxy is not None:
            _stop(made.haproxy)
        shutil.rmtree(root, ignore_errors=True)


async def _ready(replica: Replica, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(trust_env=False) as client:
        while time.monotonic() < deadline:
            assert replica.process is not None
            if replica.process.returncode is not None:
                raise ClusterError(
                    f"replica {replica.name} exited:\n{replica.log.read_text()[-3000:]}"
                )
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"http://{replica.address}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise ClusterError(f"replica {replica.name} did not answer /healthz in {timeout_s:.0f} s")


def _start_haproxy(made: Cluster) -> subprocess.Popen[bytes]:
    servers = "\n".join(
        SERVER_LINE.format(name=replica.name, address=replica.address) for replica in made.replicas
    )
    config = made.root / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(port=made.balancer_port, servers=servers))
    with (made.root / "haproxy.log").open("wb") as log:
        return subprocess.Popen(
            ["haproxy", "-f", str(config), "-db"], stdout=log, stderr=subprocess.STDOUT
        )


async def _balancer_ready(made: Cluster, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(trust_env=False) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"http://{made.balancer}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    log = (made.root / "haproxy.log").read_text(errors="replace")
    raise ClusterError(f"HAProxy did not answer in {timeout_s:.0f} s:\n{log[-2000:]}")

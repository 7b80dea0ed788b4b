"""Issue 13 items 7, 9, 10, 11, 12 over real sockets: slow and silent connections are closed and
their number capped, no token reaches a log line, the database file and the error texts stay
private, the pages carry their security headers, and a systemd unit restarts the server."""

from __future__ import annotations

import asyncio
import configparser
import io
import logging
import shutil
import socket
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
import websockets

from tests.fakes import Fakes
from tests.server_harness import open_store, running_server, server_settings
from voxgate.core.config import Settings
from voxgate.server import log_redaction
from voxgate.server.app import create_app
from voxgate.server.serve import announcement, uvicorn_config
from voxgate.store import Store
from voxgate.store.writer import ErrorRecord

ADMIN = "admin-token-for-tests"
REPO = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def voxgate_server(settings: Settings, store: Store) -> AsyncIterator[int]:
    """The app under the same uvicorn configuration ``voxgate serve`` uses; yields the port."""
    engines = Fakes().engines()
    settings = settings.model_copy(
        update={"server": settings.server.model_copy(update={"port": 0})}
    )
    server = uvicorn.Server(
        uvicorn_config(settings, create_app(settings, engines=engines, store=store))
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 (uvicorn has no started event)
                await asyncio.sleep(0.01)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)
        engines.close()


async def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True if the server closed ``sock`` (EOF or reset) within ``seconds``."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    try:
        async with asyncio.timeout(seconds):
            while True:
                try:
                    data = await loop.sock_recv(sock, 1024)
                except ConnectionError:
                    return True
                if not data:
                    return True
    except TimeoutError:
        return False


# -- item 7: slowloris, silent sockets, a connection cap ---------------------------------------


async def test_silent_and_slow_connections_are_closed_and_their_number_capped(
    tmp_path: Path,
) -> None:
    settings = server_settings(tmp_path, header_timeout_s=1.0, max_connections=6)
    store = await open_store(tmp_path)
    loop = asyncio.get_running_loop()
    opened: list[socket.socket] = []

    def connect(port: int) -> socket.socket:
        opened.append(socket.create_connection(("127.0.0.1", port)))
        return opened[-1]

    async with voxgate_server(settings, store) as port:
        silent = connect(port)
        slow = connect(port)
        slow.setblocking(False)
        started = time.monotonic()
        await loop.sock_sendall(slow, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        drip_closed = False
        for byte in b"X-Slow: " + b"a" * 30:  # one header byte every 0.1 s: never finishes
            try:
                await loop.sock_sendall(slow, bytes([byte]))
            except ConnectionError:
                drip_closed = True
                break
            await asyncio.sleep(0.1)
        assert drip_closed or await _closed_within(slow, 1.0), "a slowloris request was held"
        assert time.monotonic() - started < 2.5
        assert await _closed_within(silent, 0.5), "a silent connection was held"

        # The cap: six connections held open, the seventh is closed at once.
        held = [connect(port) for _ in range(6)]
        await asyncio.sleep(0.1)
        extra = connect(port)
        assert await _closed_within(extra, 0.5), "a connection over max_connections was kept"
        for sock in held:
            sock.close()
        await asyncio.sleep(0.2)
        async with httpx.AsyncClient() as http:
            health = await http.get(f"http://127.0.0.1:{port}/healthz")
        assert health.status_code == 200  # serving again once under the cap
    for sock in opened:
        sock.close()
    await store.close()


# -- item 9: no token in any log line ------------------------------------------------------------


async def test_query_tokens_never_reach_the_access_log(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    settings = server_settings(tmp_path, admin_token=ADMIN)
    captured = io.StringIO()
    async with voxgate_server(settings, store) as port:
        for name in ("uvicorn.access", "uvicorn.error"):
            for handler in logging.getLogger(name).handlers:
                assert isinstance(handler, logging.StreamHandler)
                handler.setStream(captured)
        async with httpx.AsyncClient() as http:
            await http.get(f"http://127.0.0.1:{port}/healthz?token=SECRET-ONE&x=1")
        with pytest.raises(websockets.exceptions.WebSocketException):
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws?token=SECRET-TWO") as ws:
                await ws.recv()
        await asyncio.sleep(0.2)
    await store.close()
    log = captured.getvalue()
    assert "/healthz?token=[redacted]&x=1" in log, log
    assert "SECRET" not in log, log


def test_every_record_is_redacted_whatever_its_shape() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("voxgate.test_redaction")
    logger.addHandler(handler)
    logger.propagate = False
    logging.getLogger("voxgate").addHandler(handler)
    try:
        log_redaction.install(("voxgate.test_redaction",))
        logger.warning("GET %s", "/v1/relay?token=abc123")
        logger.warning("links: http://h/#token=s3cret and http://h/admin#token=s3cret")
        logger.warning("header Authorization: Bearer eyJhbGciOi.x.y")
        logger.warning("%(path)s", {"path": "/ws?TOKEN=abc&jwt=def"})
        # xiaozhi boards may send the header as a query parameter (the reference server's way).
        logger.warning("GET %s", "/xiaozhi/v1/?authorization=Bearer%20xz9tok&device-id=x")
        logger.warning("GET %s", "/xiaozhi/v1/?authorization=Bearer+xz8tok")
    finally:
        logger.removeHandler(handler)
        logging.getLogger("voxgate").removeHandler(handler)
    text = stream.getvalue()
    for secret in ("abc123", "s3cret", "eyJhbGciOi", "abc", "def", "xz9tok", "xz8tok"):
        assert secret not in text, text
    assert text.count("[redacted]") == 8


def test_the_admin_link_is_printed_only_when_asked_or_new(tmp_path: Path) -> None:
    settings = server_settings(tmp_path, admin_token=ADMIN)
    quiet = "\n".join(announcement(settings, with_token=False))
    assert ADMIN not in quiet and "voxgate admin-link" in quiet and "/admin" in quiet
    loud = "\n".join(announcement(settings, with_token=True))
    assert f"/admin#token={ADMIN}" in loud


# -- item 11: /metrics and /healthz details, the database file ---------------------------------


async def test_metrics_token_and_private_health_details(tmp_path: Path) -> None:
    settings = server_settings(tmp_path, admin_token=ADMIN, metrics_token="metrics-secret")
    store = await open_store(tmp_path)
    fakes = Fakes()
    engines = fakes.engines()
    async with (
        running_server(settings, engines, store) as address,
        httpx.AsyncClient(base_url=f"http://{address}") as http,
    ):
        refused = await http.get("/metrics")
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
        allowed = await http.get("/metrics", headers={"Authorization": "Bearer metrics-secret"})
        as_admin = await http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
        # Another process holds the write lock: the writer's error names the database.
        holder = sqlite3.connect(tmp_path / "voxgate.db", timeout=1)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            store.writer.submit(ErrorRecord(None, None, "internal", "x"))
            for _ in range(150):
                public = (await http.get("/healthz")).json()
                if public["status"] == "degraded":
                    break
                await asyncio.sleep(0.1)
            private = (
                await http.get("/healthz", headers={"Authorization": "Bearer metrics-secret"})
            ).json()
        finally:
            holder.rollback()
            holder.close()
    engines.close()
    await store.close()
    assert refused.status_code == 401 and wrong.status_code == 401
    assert allowed.status_code == 200 and "voxgate_sessions_open" in allowed.text
    assert as_admin.status_code == 200
    assert public["status"] == "degraded" and public["degraded"] == ["database"]
    assert private["degraded"][0].startswith("database: ") and "locked" in private["degraded"][0]


async def test_the_database_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await store.users.add("ann")
    files = [tmp_path / name for name in ("voxgate.db", "voxgate.db-wal", "voxgate.db-shm")]
    modes = {f.name: oct(f.stat().st_mode & 0o777) for f in files if f.exists()}
    await store.close()
    assert "voxgate.db" in modes
    assert set(modes.values()) == {"0o600"}, modes


async def test_an_existing_world_readable_database_is_made_private(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await store.close()
    (tmp_path / "voxgate.db").chmod(0o644)
    store = await open_store(tmp_path)
    await store.close()
    assert (tmp_path / "voxgate.db").stat().st_mode & 0o777 == 0o600


# -- item 12: the pages' security headers ---------------------------------------------------------


async def test_pages_forbid_framing_foreign_scripts_and_referrers(tmp_path: Path) -> None:
    settings = server_settings(tmp_path, admin_token=ADMIN)
    store = await open_store(tmp_path)
    engines = Fakes().engines()
    async with (
        running_server(settings, engines, store) as address,
        httpx.AsyncClient(base_url=f"http://{address}") as http,
    ):
        responses = [await http.get(path) for path in ("/", "/admin", "/static/admin.js")]
        responses.append(
            await http.get("/api/admin/devices", headers={"Authorization": f"Bearer {ADMIN}"})
        )
    engines.close()
    await store.close()
    for response in responses:
        assert response.status_code == 200, response.url
        csp = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert "object-src 'none'" in csp and "'unsafe-eval'" not in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["x-content-type-options"] == "nosniff"


# -- item 10: supervised ---------------------------------------------------------------------------


def test_the_systemd_unit_restarts_the_server_and_verifies(tmp_path: Path) -> None:
    unit_path = REPO / "deploy" / "voxgate.service"
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(unit_path)
    service = unit["Service"]
    assert service["Restart"] == "always"
    assert service["ExecStart"].endswith("/voxgate serve")
    assert int(service["LimitNOFILE"]) >= 1000 + 128  # server.max_connections + reserved
    assert service["UMask"] == "0077"
    assert unit["Unit"]["StartLimitIntervalSec"] == "0"
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # Verify it as written, with ExecStart pointing at something that exists here.
    text = unit_path.read_text().replace("/opt/voxgate/.venv/bin/voxgate serve", "/bin/true")
    (tmp_path / "voxgate.service").write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "voxgate.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [line for line in result.stderr.splitlines() if "voxgate.service" in line]
    assert result.returncode == 0 and not problems, result.stderr

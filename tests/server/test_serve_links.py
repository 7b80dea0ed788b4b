"""``voxgate serve`` (a real subprocess, stand-in engines) prints each link on its label's line,
however narrow the terminal, and listens at once: the links answer while it loads."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.server_harness import free_port, standin_env


def test_serve_prints_every_link_on_the_line_of_its_label(tmp_path: Path) -> None:
    port = free_port()
    env = standin_env(tmp_path, COLUMNS="60")
    process = subprocess.Popen(
        [sys.executable, "-m", "voxgate", "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        while not any(line.lstrip().startswith("metrics") for line in lines):
            line = process.stdout.readline()
            assert line, f"serve exited early: {lines}"
            lines.append(line.rstrip("\n"))
        deadline = time.monotonic() + 30
        health = None
        while health is None and time.monotonic() < deadline:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            except httpx.TransportError:
                time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(20)
        if process.stdout is not None:
            process.stdout.close()
    links = [line for line in lines[1:] if line.strip()]
    labels = [line.split("  ")[1].strip() if line.startswith("  ") else line for line in links]
    assert len(links) >= 8, lines
    # Label and URL on one line: nothing wrapped onto a line of its own.
    assert all("://" in line and not line.lstrip().startswith(("http", "ws")) for line in links), (
        lines
    )
    assert "admin page" in labels and "health" in labels
    assert any(f"127.0.0.1:{port}/admin#token=" in line for line in links)
    assert health is not None and health.status_code in (200, 503), health

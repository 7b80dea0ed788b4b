"""The short version of ``bench/fuzz.py`` (the full one sends 100,000 frames per protocol):
generated frames for every protocol against a real ``voxgate serve`` with stand-in engines, and
not one crash, unhandled exception, 1011 or 500."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_short_fuzz_of_every_protocol_finds_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.fuzz",
            "--frames",
            "1000",
            "--seed",
            "7",
            "--log",
            str(tmp_path / "server.log"),
            "--json",
            str(tmp_path / "fuzz.json"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (
        result.stdout + result.stderr + (tmp_path / "server.log").read_text()
    )
    figures = json.loads((tmp_path / "fuzz.json").read_text())
    for protocol in ("relay", "elato", "proxy_ws", "xiaozhi", "proxy_http"):
        assert figures[protocol]["frames"] >= 1000 and figures[protocol]["healthz_ok"]
        assert figures[protocol]["internal_errors"] == 0
        assert figures[protocol]["dropped_without_close_frame"] == 0
    assert figures["unhandled_exceptions"] == 0 and figures["crashes"] == 0
    # Each WebSocket protocol had sessions the fuzzed frames reached (not only refusals).
    for protocol in ("relay", "elato", "proxy_ws", "xiaozhi"):
        assert figures[protocol]["connections"] >= 4

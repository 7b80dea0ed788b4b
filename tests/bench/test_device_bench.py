"""One quick run of the device benchmark: a real ``voxgate serve`` on the stand-in engines, every
protocol's client, two turns each. Checks the bench's bookkeeping, not its figures."""

from __future__ import annotations

import json
from pathlib import Path

from bench import device


def test_device_bench_runs_every_protocol_and_matches_the_servers_turns(tmp_path: Path) -> None:
    output = tmp_path / "device.json"
    argv = ["--engines", "standin", "--conversations", "1", "--turns", "2", "--json", str(output)]
    results = device.main(argv)

    assert json.loads(output.read_text()) == json.loads(json.dumps(results))
    assert results["command"].startswith("python -m bench.device --engines standin")
    conversations = results["conversations"]
    assert [c["protocol"] for c in conversations] == ["relay", "elato", "proxy_ws", "xiaozhi"]
    for conversation in conversations:
        # One stored answered turn per question: the greeting (ElatoAI) is not counted.
        assert conversation["server_turns"] == 2, conversation
        turns = conversation["turns"]
        assert [t["turn"] for t in turns] == [1, 2]
        for turn in turns:
            assert turn["errors"] == [], turn
            assert turn["first_audio_ms"] is not None and turn["first_audio_ms"] > 0, turn
            # The server's end-of-turn signal comes before the reply's audio.
            assert turn["turn_end_signal_ms"] is not None
            assert turn["turn_end_signal_ms"] <= turn["first_audio_ms"], turn
            assert turn["reply_audio_s"] > 0
            assert turn["server_timings"]["stt_ms"] is not None
            # As stored by the server: the stand-in STT's and LLM's fixed texts.
            assert (turn["heard"], turn["reply_text"]) == ("hello there", "Hello to you too.")
            assert turn["interrupted"] is False
    summary = results["summary"]
    assert summary["all"]["turns"] == 8 and summary["all"]["unanswered_turns"] == 0
    assert set(summary["elato"]["first_audio_ms_by_turn"]) == {1, 2}
    assert set(summary["xiaozhi"]["first_audio_ms_by_turn"]) == {1, 2}
    assert summary["relay"]["server_stages_ms"]["end_of_turn_wait_ms"]["n"] == 2

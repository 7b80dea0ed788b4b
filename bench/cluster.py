"""Benchmark: three ``voxgate serve`` replicas behind HAProxy, one PostgreSQL, one Redis, all on
this machine (bench/cluster_harness.py; stand-in engines), and sixty devices of every protocol
(relay, ElatoAI, proxy ``/ws``, chunked ``POST /v1/audio``) talking through the balancer for two
minutes while one replica is killed (``kill -9``) a third of the way in.

Printed: devices held, turns completed and failed, how long the killed replica's devices took
to be talking again through the balancer (p50/p95/max), turns lost (a turn the device saw
complete but the database does not have), conversations per device (1: each went on after its
reconnect); then the single checks: migrations at start, one device's connection limit and
session cap across replicas, a revoke on one replica ending a session on another, chunked
sessions spread over the replicas.

    python -m bench.cluster                       # 60 devices, 120 s
    python -m bench.cluster --devices 20 --seconds 40
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import cluster_devices as devices
from bench import cluster_scenarios as scenarios
from bench.cluster_harness import cluster, throwaway_redis
from bench.harness import STANDIN_ENGINES

# The bench needs a PostgreSQL of its own, as the tests do (Debian's, in a temporary directory).
from tests.postgres_server import throwaway_postgres


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"command": args.command_line}
    with throwaway_postgres() as database_url, throwaway_redis() as redis_url:
        started = time.monotonic()
        async with cluster(
            database_url, redis_url, {**STANDIN_ENGINES, **scenarios.LIMITS}
        ) as made:
            results["start_s"] = round(time.monotonic() - started, 1)
            print(f"3 replicas and HAProxy ready in {results['start_s']} s", flush=True)
            results["migrations"] = scenarios.migrations(made)
            print(f"migrated by: {results['migrations']['migrated_by']}", flush=True)
            limit = await scenarios.connection_limit_across_replicas(made, 3)
            results["connection_limit"] = {
                "limit_per_minute": 5,
                "live_replicas": limit["replicas"],
                "admitted": limit["admitted"],
                "attempts": len(limit["outcomes"]),
            }
            results["session_cap"] = await scenarios.session_cap_across_replicas(made)
            results["revoke"] = await scenarios.revoke_across_replicas(made, "b", "c")
            results["chunks"] = await scenarios.chunks_spread_over_replicas(made)
            load = await devices.devices_through_a_dying_replica(
                made, args.devices, args.seconds, kill="a", kill_after_s=args.seconds / 3
            )
            results["load"] = devices.summary(load)
            results["runs"] = [asdict(run) for run in load["runs"]]
            results["load"]["killed_at_s"] = round(load["killed_at_s"], 1)
            print(json.dumps(results["load"], indent=2), flush=True)
            results["drain"] = await scenarios.drain(made, "b")
            logs = "\n".join(made.logs().values())
            results["log_counts"] = {
                what: logs.count(what)
                for what in ("without its history", "deadlock detected", "cannot write")
            }
    return results


def render(results: dict[str, Any]) -> str:
    load = results["load"]
    lines = [
        f"$ {results['command']}   (figures from this machine as it was)",
        f"replicas ready (3 at once, empty PostgreSQL): {results['start_s']} s; "
        f"migrated by {results['migrations']['migrated_by']}",
        f"devices: {load['devices']}, held to the end: {load['devices_held']}, "
        f"cut off by the kill (at {load['killed_at_s']} s): {load['devices_cut_off']}",
        f"turns completed {load['turns_completed']}, failed {load['turns_failed']}, "
        f"lost {load['turns_lost']}; conversations per device at most "
        f"{load['conversations_per_device_max']}",
        f"devices with more than one conversation: {load['devices_with_new_conversation']}; "
        f"replica logs: {results['log_counts']}",
        f"reconnect after the kill: p50 {load['reconnect_s_p50']} s, p95 "
        f"{load['reconnect_s_p95']} s, max {load['reconnect_s_max']} s",
        f"one device's connection limit (5/min) over {results['connection_limit']['live_replicas']}"
        f" replicas: {results['connection_limit']['admitted']} of "
        f"{results['connection_limit']['attempts']} admitted",
        f"session cap (2) across replicas: {results['session_cap']['held']} held; every "
        f"replica's overview (devices online, sessions, the device's replicas): {results['session_cap']['overviews']}",
        f"revoke on c, session on b closed after {results['revoke']['closed_after_s']} s "
        f"(code {results['revoke']['code']})",
        f"drain of b: /healthz {results['drain']['health']}, its session closed "
        f"{results['drain']['session_closed']}, the balancer then answered from "
        f"{results['drain']['balancer_answered_by']}",
        "chunked sessions spread over replicas: "
        + ", ".join(
            f"{s['status']} ({s['reply_bytes']} bytes)" for s in results["chunks"]["sessions"]
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    parser.add_argument("--devices", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["python", "-m", "bench.cluster", *argv])
    results = asyncio.run(run(args))
    print(render(results))
    path = args.json or Path("bench/results") / f"cluster-{time.strftime('%Y-%m-%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    print(f"written to {path}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])

"""Three ``voxgate serve`` replicas behind HAProxy on one PostgreSQL and one Redis, all real
processes on this machine (bench/cluster_harness.py), on the stand-in engines; the scenarios
are bench/cluster_scenarios.py's (``python -m bench.cluster`` runs them longer, with sixty
devices). ``make test-cluster``; VOXGATE_CLUSTER_DEVICES / VOXGATE_CLUSTER_SECONDS make the
device run bigger or longer."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from bench import cluster_devices as devices
from bench import cluster_scenarios as scenarios
from bench.cluster_harness import Cluster, ClusterError, cluster
from bench.harness import STANDIN_ENGINES
from tests.postgres_server import PostgresServer, fresh_database

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
async def replicas(postgres_server: PostgresServer, redis_url: str) -> AsyncIterator[Cluster]:
    async with fresh_database(postgres_server) as database_url:
        try:
            async with cluster(
                database_url, redis_url, {**STANDIN_ENGINES, **scenarios.LIMITS}
            ) as made:
                yield made
        except ClusterError as exc:
            if os.environ.get("VOXGATE_REQUIRE_REDIS") == "1":
                pytest.fail(str(exc))
            pytest.skip(str(exc))


async def test_three_replicas_starting_on_an_empty_database_migrated_it_once(
    replicas: Cluster,
) -> None:
    assert len(scenarios.migrations(replicas)["migrated_by"]) == 1, replicas.logs()


async def test_a_device_s_connection_limit_holds_across_replicas(replicas: Cluster) -> None:
    result = await scenarios.connection_limit_across_replicas(replicas, attempts_per_replica=3)
    assert result["admitted"] == 5, result  # 5 a minute in all, not 5 on each of 3
    refused = [code for _, ready, code in result["outcomes"] if not ready]
    assert refused and set(refused) == {4429}, result


async def test_a_device_s_session_cap_holds_across_replicas(replicas: Cluster) -> None:
    result = await scenarios.session_cap_across_replicas(replicas)
    assert result["held"] == 2, result
    # Every replica's /api/admin sees the device online with its two sessions, on two replicas.
    (seen,) = set(result["overviews"].values())
    assert seen[:2] == (1, 2) and len(seen[2]) == 2, result


async def test_a_revoke_on_one_replica_ends_the_session_on_another(replicas: Cluster) -> None:
    result = await scenarios.revoke_across_replicas(replicas, on="b", revoke_via="c")
    print(f"revoked on c, closed on b after {result['closed_after_s']} s")
    assert result["code"] == 4401, result


async def test_chunked_sessions_spread_over_the_replicas_complete(replicas: Cluster) -> None:
    result = await scenarios.chunks_spread_over_replicas(replicas)
    for session in result["sessions"]:
        assert session["status"] == 200 and session["reply_bytes"] > 0, result


async def test_devices_of_a_killed_replica_reconnect_and_go_on(replicas: Cluster) -> None:
    count = int(os.environ.get("VOXGATE_CLUSTER_DEVICES", "16"))
    seconds = float(os.environ.get("VOXGATE_CLUSTER_SECONDS", "45"))
    result = await devices.devices_through_a_dying_replica(
        replicas, count, seconds, kill="a", kill_after_s=seconds / 3
    )
    print(devices.summary(result))
    runs: list[devices.DeviceRun] = result["runs"]
    cut_off = [run for run in runs if run.disconnects]
    assert cut_off, "no device was on the killed replica"
    for run in cut_off:
        # Back through the balancer, and talking again.
        assert run.reconnect_s and run.lost_at is None, (run.name, run.errors)
    for run in runs:
        if not run.disconnects:  # the other replicas' devices did not notice
            assert run.failed == 0, (run.name, run.errors)
        assert run.completed >= 2, (run.name, run.errors)
        # One conversation, continued after the reconnect (its history came along).
        assert run.stored_conversations == 1, (run.name, run.stored_conversations)
        if run.protocol in devices.STRICT:  # no turn the device saw complete is lost
            assert run.stored_turns >= run.completed, (run.name, run.stored_turns, run.completed)


async def test_a_drained_replica_ends_its_sessions_and_the_balancer_moves_away(
    replicas: Cluster,
) -> None:
    result = await scenarios.drain(replicas, "b")
    assert result["health"] == (503, "draining"), result
    assert result["session_closed"] == 1001, result
    assert "b" not in result["balancer_answered_by"] and result["balancer_answered_by"], result

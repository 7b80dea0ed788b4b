"""A real, throwaway Redis server for tests (bench/cluster_harness.py starts it)."""

from __future__ import annotations

from bench.cluster_harness import ClusterError as RedisServerError
from bench.cluster_harness import throwaway_redis

__all__ = ["RedisServerError", "throwaway_redis"]

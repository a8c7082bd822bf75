"""The Python tests' fixtures, built on the one server harness (harness.py, which the
benchmarks in bench/ use too): a real redis-server (or JWKS_SERVER_BIN) with the built module
on a free loopback port, checked to be the process we spawned, stopped at the end."""

from __future__ import annotations

import sys
import time

import pytest

from harness import (ROOT, Cluster, HarnessError, RedisServer, free_port,  # noqa: F401
                     module_path, server_bin, target_dir)

sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT / "python" / "examples"))


@pytest.fixture
def server(tmp_path):
    s = RedisServer(tmp_path)
    yield s
    s.stop()


@pytest.fixture
def bare_server(tmp_path):
    """A server without the module."""
    d = tmp_path / "bare"
    d.mkdir()
    s = RedisServer(d, module=False)
    yield s
    s.stop()


@pytest.fixture
def server_aof(tmp_path):
    s = RedisServer(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    yield s
    s.stop()


@pytest.fixture
def replica(server, tmp_path):
    """A replica of `server`, link up."""
    server.client().config_set("repl-diskless-sync-delay", 0)
    d = tmp_path / "replica"
    d.mkdir()
    r = RedisServer(d, "--replicaof", "127.0.0.1", str(server.port))
    try:
        deadline = time.time() + 20
        while r.client().info("replication").get("master_link_status") != "up":
            assert time.time() < deadline, "replica link not up"
            time.sleep(0.02)
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="module")
def cluster_with_replicas(tmp_path_factory):
    """3 primaries with a replica each, one cluster per test module."""
    c = Cluster(tmp_path_factory.mktemp("cluster-replicas"), replicas=1)
    # Each replica's link is up before a test fails one over.
    deadline = time.time() + 30
    for n in c.nodes:
        while n.client().info("replication").get("role") == "slave" and \
                n.client().info("replication").get("master_link_status") != "up":
            assert time.time() < deadline, "replica link not up"
            time.sleep(0.05)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One cluster per test module (building one takes seconds)."""
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.stop()


def command_calls(client, name: str) -> int:
    """How often the server ran `name` (INFO commandstats)."""
    stats = client.info("commandstats")
    return int(stats.get(f"cmdstat_{name.lower()}", {}).get("calls", 0))


def wait_until(predicate, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)

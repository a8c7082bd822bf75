"""One harness for the Python tests: a real redis-server (or JWKS_SERVER_BIN) with the
built module on a free loopback port, stopped at the end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT / "python" / "examples"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def target_dir() -> Path:
    """Where cargo builds: CARGO_TARGET_DIR (relative to the repository), else target/."""
    return ROOT / (os.environ.get("CARGO_TARGET_DIR") or "target")


def module_path() -> str:
    path = os.environ.get("JWKS_MODULE") or str(target_dir() / "debug" / "libredis_jwks.so")
    assert os.path.exists(path), f"build the module first (cargo build): {path}"
    return path


class RedisServer:
    def __init__(self, tmp: Path, *extra: str, module: bool = True):
        self.dir = tmp
        self.port = free_port()
        load = ["--loadmodule", module_path()] if module else []
        self.args = [os.environ.get("JWKS_SERVER_BIN", "redis-server"), "--port", str(self.port),
                     "--bind", "127.0.0.1", "--dir", str(tmp), "--logfile", "server.log",
                     "--save", "", *load, *extra]
        self.proc = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while True:
            try:
                if self.client().ping():
                    return
            except redis.ConnectionError:
                pass
            assert self.proc.poll() is None, (self.dir / "server.log").read_text()
            assert time.time() < deadline, "redis-server did not start"
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: Redis's clean shutdown
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def pause(self) -> None:
        """SIGSTOP: the server hangs (connections stay open, nothing answers)."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=5)


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


class Cluster:
    """A Redis Cluster on loopback: `primaries` nodes, each loading the module, slots
    assigned by `redis-cli --cluster create` (as tests/cluster.rs builds it)."""

    def __init__(self, tmp: Path, primaries: int = 3, replicas: int = 0):
        self.nodes = []
        for i in range(primaries * (1 + replicas)):
            d = tmp / f"node{i}"
            d.mkdir()
            self.nodes.append(RedisServer(
                d, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "2000", "--cluster-port", str(free_port())))
        try:
            out = subprocess.run(
                ["redis-cli", "--cluster", "create",
                 *[f"127.0.0.1:{n.port}" for n in self.nodes],
                 "--cluster-replicas", str(replicas), "--cluster-yes"],
                capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stdout + out.stderr
            deadline = time.time() + 30
            for n in self.nodes:
                while b"cluster_state:ok" not in n.client().execute_command("CLUSTER", "INFO"):
                    assert time.time() < deadline, "cluster not ok"
                    time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def client(self):
        from redis.cluster import ClusterNode, RedisCluster
        return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in self.nodes],
                            socket_timeout=5)

    def owner(self, key: str) -> "RedisServer":
        slot = self.nodes[0].client().execute_command("CLUSTER", "KEYSLOT", key)
        for lo, hi, primary, *_ in self.nodes[0].client().execute_command("CLUSTER", "SLOTS"):
            if lo <= slot <= hi:
                port = int(primary[1])
                return next(n for n in self.nodes if n.port == port)
        raise AssertionError(f"slot {slot} unassigned")

    def replica_of(self, primary: "RedisServer") -> "RedisServer":
        """A replica of `primary` (the cluster must have been built with replicas)."""
        pid = primary.client().execute_command("CLUSTER", "MYID")
        for n in self.nodes:
            if n is not primary:
                info = n.client().info("replication")
                if info.get("role") == "slave" and int(info.get("master_port", 0)) == primary.port:
                    return n
        raise AssertionError(f"no replica of {primary.port} ({pid})")

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


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

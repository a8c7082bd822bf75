"""One harness for the Python tests: a real redis-server (or JWKS_SERVER_BIN) with the
built module on a free loopback port, stopped at the end."""

from __future__ import annotations

import os
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


def module_path() -> str:
    path = os.environ.get("JWKS_MODULE") or str(ROOT / "target" / "debug" / "libredis_jwks.so")
    assert os.path.exists(path), f"build the module first (cargo build): {path}"
    return path


class RedisServer:
    def __init__(self, tmp: Path, *extra: str):
        self.dir = tmp
        self.port = free_port()
        self.args = [os.environ.get("JWKS_SERVER_BIN", "redis-server"), "--port", str(self.port),
                     "--bind", "127.0.0.1", "--dir", str(tmp), "--logfile", "server.log",
                     "--save", "", "--loadmodule", module_path(), *extra]
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
def server_aof(tmp_path):
    s = RedisServer(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    yield s
    s.stop()

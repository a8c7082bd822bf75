"""The one Python server harness, shared by the Python tests (python/tests/conftest.py builds
its fixtures on it) and the benchmarks (bench/*.py put this directory on sys.path): a real
redis-server (or JWKS_SERVER_BIN) with the built module on a free loopback port.

What it guarantees, as tests/common/mod.rs does for the Rust tests: once started, the server
answering on the port is the process this harness spawned (INFO server `process_id` is its
pid, or a descendant's when a wrapper forks). Otherwise another process took the port
between free_port() and the bind, and the test or benchmark would talk to a stranger: a
first start then tries another port (a few times), a restart on the same port fails loudly.

Needs only the standard library (the readiness and own-process checks speak RESP on a raw
socket); client() and Cluster use redis-py, imported when called.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE_FILE = "libredis_jwks.so"


class HarnessError(AssertionError):
    """The server did not start, or the server on its port is not ours. An AssertionError,
    so pytest reports it as a failed check with its message."""


# --------------------------------------------------------------------------- where things are

_given_ports: set = set()
_ports_lock = threading.Lock()


def free_port() -> int:
    """A loopback port free now and not handed out before by this process (two servers told
    the same port would make one test talk to the other's server)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with _ports_lock:
            if port not in _given_ports:
                _given_ports.add(port)
                return port


def target_dir() -> Path:
    """Where cargo builds: CARGO_TARGET_DIR (relative to the repository), else target/."""
    return ROOT / (os.environ.get("CARGO_TARGET_DIR") or "target")


def module_path(*profiles: str, required: bool = True) -> str:
    """The module under test: JWKS_MODULE, else the first of target/<profile>/ (profiles in
    order; default debug, as `cargo build` leaves it) that exists. With required=False the
    first candidate is returned even if it does not exist yet (the caller checks later)."""
    env = os.environ.get("JWKS_MODULE")
    if env:
        if required and not os.path.exists(env):
            raise HarnessError(f"JWKS_MODULE={env} does not exist")
        return env
    candidates = [target_dir() / p / MODULE_FILE for p in (profiles or ("debug",))]
    for path in candidates:
        if path.exists():
            return str(path)
    if required:
        build = "cargo build" + (" --release" if candidates[0].parent.name == "release" else "")
        raise HarnessError(f"build the module first ({build}): "
                           + " or ".join(str(p) for p in candidates))
    return str(candidates[0])


def server_bin() -> str:
    """The server binary: JWKS_SERVER_BIN, else redis-server on PATH."""
    return os.environ.get("JWKS_SERVER_BIN", "redis-server")


# --------------------------------------------------------------------------- raw RESP


def _read_reply(f):
    line = f.readline()
    if not line:
        raise ConnectionError("connection closed")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        return _Error(rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind in (b"$", b"="):
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2]
    raise ConnectionError(f"unexpected reply {line!r}")


class _Error(str):
    pass


def _call(port: int, *args: str, timeout: float = 5.0):
    """One command on a fresh connection; the reply (an _Error for an error reply)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
        s.sendall(b"".join(parts))
        with s.makefile("rb") as f:
            return _read_reply(f)


def _info_field(port: int, section: str, field: str):
    reply = _call(port, "INFO", section)
    if isinstance(reply, _Error) or reply is None:
        raise HarnessError(f"INFO {section} on port {port}: {reply}")
    for line in reply.decode(errors="replace").splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    return None


def _is_descendant(pid: int, ancestor: int) -> bool:
    """pid is ancestor or one of its descendants (Linux /proc; a wrapper may fork)."""
    seen = 0
    while pid > 1 and seen < 64:
        if pid == ancestor:
            return True
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # field 4: ppid
        seen += 1
    return pid == ancestor


# --------------------------------------------------------------------------- a server


class RedisServer:
    """A server process on a free loopback port with the module loaded.

    dir           where the server runs (--dir; server.log is there); None: a new temp dir,
                  removed by close()
    *extra        more server arguments, e.g. "--appendonly", "yes"
    module        True: module_path() (JWKS_MODULE, else the debug build); a path; False: none
    binary        the server binary (default JWKS_SERVER_BIN, else redis-server)
    wrapper       a command to run the server under, e.g. ["valgrind", "--tool=callgrind"]
    config        a config file, given first (as `redis-server redis.conf --port ...`)
    start_timeout seconds to wait for the server to answer
    start         False: build the command line only; call start()
    """

    def __init__(self, dir=None, *extra: str, module=True, binary: str | None = None,
                 wrapper=(), config=None, start_timeout: float = 20, start: bool = True,
                 dir_prefix: str = "jwks-server-"):
        self._owns_dir = dir is None
        self.dir = Path(tempfile.mkdtemp(prefix=dir_prefix)) if dir is None else Path(dir)
        self.binary = binary or server_bin()
        self.wrapper = list(wrapper)
        self.start_timeout = start_timeout
        self.module = (module_path() if module is True else str(module)) if module else None
        self.config = str(config) if config else None
        self.extra = [str(a) for a in extra]
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.run_id: str | None = None
        if start:
            self._first_start()

    @property
    def args(self) -> list:
        """The command line (without the wrapper)."""
        load = ["--loadmodule", self.module] if self.module else []
        conf = [self.config] if self.config else []
        return [self.binary, *conf, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.dir), "--logfile", "server.log", "--save", "", *load,
                *self.extra]

    @property
    def log_path(self) -> Path:
        return self.dir / "server.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _log_bytes(self) -> bytes:
        try:
            return self.log_path.read_bytes()
        except OSError:
            return b""

    def _log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:]) or "(empty)"

    def _first_start(self, tries: int = 5) -> None:
        """Another process may take the port between free_port() and the bind: then pick
        another port, as the Rust harness does."""
        for attempt in range(tries):
            try:
                self.start()
                return
            except _PortTaken as e:
                self.kill()
                if attempt == tries - 1:
                    raise HarnessError(f"{e}; gave up after {tries} ports") from None
                print(f"harness: {e}; trying another port", file=sys.stderr)
                self.port = free_port()

    def start(self) -> None:
        """Spawns the server (on the same port and dir after kill()/stop()) and waits until
        it answers; raises HarnessError if it exits or the server answering is not ours."""
        if self.proc is not None and self.proc.poll() is None:
            raise HarnessError(f"server on port {self.port} is already running")
        try:
            log_from = self.log_path.stat().st_size  # a restart appends to the same log
        except OSError:
            log_from = 0
        self.run_id = None
        self.proc = subprocess.Popen([*self.wrapper, *self.args], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        try:
            self._wait_ready(log_from)
        except BaseException:
            self.kill()  # never leave a process behind that we gave up on
            raise

    def _wait_ready(self, log_from: int) -> None:
        deadline = time.time() + self.start_timeout
        while True:
            if self._answers():
                self._check_own()
                return
            code = self.proc.poll()
            if code is not None:
                if b"Address already in use" in self._log_bytes()[log_from:]:
                    raise _PortTaken(f"port {self.port} is taken by another process")
                raise HarnessError(f"{self.binary} exited ({code}) on port {self.port}; "
                                   f"{self.log_path}:\n{self._log_tail()}")
            if time.time() > deadline:
                raise HarnessError(f"{self.binary} did not answer on port {self.port} within "
                                   f"{self.start_timeout}s; {self.log_path}:\n{self._log_tail()}")
            time.sleep(0.02)

    def _answers(self) -> bool:
        try:
            reply = _call(self.port, "PING", timeout=2)
        except OSError:
            return False
        # -LOADING (an AOF or RDB being read): not ready yet.
        return not (isinstance(reply, _Error) and reply.startswith("LOADING"))

    def _check_own(self) -> None:
        """The server answering on our port must be the process we spawned."""
        pid = _info_field(self.port, "server", "process_id")
        if pid is not None and pid.isdigit() and _is_descendant(int(pid), self.proc.pid):
            self.run_id = _info_field(self.port, "server", "run_id")
            return
        ours = self.proc.poll()
        raise _PortTaken(
            f"the server answering on port {self.port} is not ours: its process_id is {pid}, "
            f"we spawned pid {self.proc.pid} "
            f"({'still running' if ours is None else f'exited {ours}'})")

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no save on exit, as a crash would."""
        if self.is_running():
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM (Redis's clean shutdown), SIGKILL if it has not exited within timeout."""
        if self.is_running():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def close(self, timeout: float = 10) -> None:
        """stop(), and remove the dir if the harness made it."""
        self.stop(timeout)
        self.remove_dir()

    def remove_dir(self) -> None:
        """Removes the dir if the harness made it (the server stopped)."""
        if self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def pause(self) -> None:
        """SIGSTOP: the server hangs (connections stay open, nothing answers)."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0):
        import redis
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _PortTaken(HarnessError):
    pass


# --------------------------------------------------------------------------- a cluster


class Cluster:
    """A Redis Cluster on loopback: `primaries` nodes, each loading the module, slots
    assigned by `redis-cli --cluster create` (as tests/cluster.rs builds it)."""

    def __init__(self, tmp: Path, primaries: int = 3, replicas: int = 0):
        self.nodes = []
        try:
            for i in range(primaries * (1 + replicas)):
                d = Path(tmp) / f"node{i}"
                d.mkdir()
                self.nodes.append(RedisServer(
                    d, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", "2000", "--cluster-port", str(free_port())))
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

    def owner(self, key: str) -> RedisServer:
        slot = self.nodes[0].client().execute_command("CLUSTER", "KEYSLOT", key)
        for lo, hi, primary, *_ in self.nodes[0].client().execute_command("CLUSTER", "SLOTS"):
            if lo <= slot <= hi:
                port = int(primary[1])
                return next(n for n in self.nodes if n.port == port)
        raise AssertionError(f"slot {slot} unassigned")

    def replica_of(self, primary: RedisServer) -> RedisServer:
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

#!/usr/bin/env python3
"""redis-jwks benchmarks: the module against plain Redis and the Lua a user would write.

Starts its own redis-server with the release module on a free loopback port, runs every
case side by side (alternating order, several rounds), and reports medians and the ratios
we track. Absolute numbers on small machines are noisy; ratios are the point.

Single-command cases use redis-benchmark (Debian's redis-tools). What redis-benchmark cannot
send (a MULTI/EXEC transaction, an invalidate+get pair that forces a cache miss) goes
through a small pipelined raw-socket driver, and every variant it compares uses that same
driver. Asserts no timings: it prints a table and writes JSON.
"""

import argparse
import base64
import csv
import hashlib
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

import hiredis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The server harness the Python tests use too (free port, module path, own-process check).
sys.path.insert(0, os.path.join(ROOT, "python", "tests"))
import harness  # noqa: E402

# The module under test (JWKS_MODULE), else the release build in CARGO_TARGET_DIR or target/.
MODULE = harness.module_path("release", required=False)
LUA_DIR = os.path.join(ROOT, "bench", "lua")
TIMESTAMP = "2026-11-29T00:00:00Z"


# ---------------------------------------------------------------- fixtures

def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def rsa_jwk(kid, seed, bits=2048):
    """A public RSA JWK with a pseudo-random odd modulus (the module checks size and
    parity, not primality, so this exercises the same code as a real key)."""
    n = b"".join(hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(bits // 256 + 1))
    n = bytearray(n[: bits // 8])
    n[0] |= 0x80
    n[-1] |= 1
    return {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64(bytes(n)), "e": "AQAB"}


# P-256 public points (k*G for small k), precomputed so the bench needs no EC library.
EC_POINTS = [
    ("PtETt4g7TFkGODedsMIc2hZ0LtAlUEi_QzOR03S8IdE", "kJkgmszEyKIkyEOvpPTGigkNBNpemIna4vju_OgqN0A"),
    ("dB3VvagX2V5GJlNzIOXVUXmYMCiy-CyZ1QDF7oYk48Q", "B3C0apw4X9xWc4NVSIexVI7rkSw1ulynGZX_Is1EgdM"),
]


def ec_jwk(kid, i=0):
    x, y = EC_POINTS[i % len(EC_POINTS)]
    return {"kty": "EC", "kid": kid, "crv": "P-256", "use": "sig", "alg": "ES256", "x": x, "y": y}


def realistic_set():
    """3 RSA-2048 keys and 1 EC key, as the issue's realistic document."""
    return [rsa_jwk(f"rsa-{i}", i) for i in range(3)] + [ec_jwk("ec-0")]


def set_of(n):
    return [rsa_jwk(f"k{i}", 1000 + i) for i in range(n)]


def dumps(o):
    return json.dumps(o, separators=(",", ":"))


# ---------------------------------------------------------------- server

free_port = harness.free_port


class Server(harness.RedisServer):
    """redis-server with the release module (MODULE, read at start) on a free loopback port,
    in a temp dir removed by stop(), optionally run under a wrapper command
    (bench/instructions.py runs it under callgrind); the harness checks that the server
    answering is the one it spawned. `conn` is a RESP connection to it."""

    def __init__(self, server_bin, wrapper=(), start_timeout=20, module=True):
        super().__init__(None, "--appendonly", "no", module=MODULE if module else False,
                         binary=server_bin, wrapper=wrapper, start_timeout=start_timeout,
                         dir_prefix="jwks-bench-")
        self.conn = Conn(self.port)

    def stop(self, timeout=60):
        super().stop(timeout)
        self.remove_dir()


class Conn:
    """A minimal RESP client (hiredis parses) for setup and the pipelined driver."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = hiredis.Reader()

    @staticmethod
    def encode(*args):
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(parts)

    def read(self, n):
        replies = []
        while len(replies) < n:
            r = self.reader.gets()
            if r is False:
                data = self.sock.recv(1 << 20)
                if not data:
                    raise OSError("connection closed")
                self.reader.feed(data)
                continue
            replies.append(r)
        return replies

    def call(self, *args):
        self.sock.sendall(self.encode(*args))
        r = self.read(1)[0]
        if isinstance(r, hiredis.ReplyError):
            raise RuntimeError(f"{args[0]}: {r}")
        return r


# ---------------------------------------------------------------- measuring

def scaled(requests, pipeline):
    """Pipelined runs go several times faster, so they send more requests: a run of a
    fraction of a second on 2 shared cores is mostly noise."""
    return requests * (5 if pipeline > 1 else 1)


def redis_benchmark(port, args, requests, clients, pipeline):
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-n", str(requests),
           "-c", str(clients), "-P", str(pipeline), "--csv"] + [str(a) for a in args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    # The test name column echoes the command unescaped (JSON quotes break CSV), so read
    # the seven numeric columns from the right.
    fields = [f.strip('"') for f in out.strip().splitlines()[-1].rsplit(",", 7)[1:]]
    rps, _avg, _min, p50, _p95, p99, _max = (float(f) for f in fields)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99}


def pipelined(port, unit, units, batch=100):
    """Sends `unit` (a list of commands) `units` times, `batch` units per round trip, on one
    connection. Returns units/s and p50/p99 of the per-unit latency within batches."""
    conn = Conn(port)
    blob = b"".join(Conn.encode(*c) for c in unit) * batch
    per_batch = len(unit) * batch
    lat = []
    start = time.perf_counter()
    for _ in range(max(1, units // batch)):
        t = time.perf_counter()
        conn.sock.sendall(blob)
        for r in conn.read(per_batch):
            if isinstance(r, hiredis.ReplyError):
                raise RuntimeError(str(r))
        lat.append((time.perf_counter() - t) / batch * 1000)
    elapsed = time.perf_counter() - start
    lat.sort()
    return {"rps": (max(1, units // batch) * batch) / elapsed,
            "p50_ms": lat[len(lat) // 2], "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))]}


def side_by_side(rounds, variants):
    """Runs each variant once per round, alternating the order every round, and returns
    the median of each metric per variant."""
    results = {name: [] for name, _ in variants}
    for r in range(rounds):
        order = variants if r % 2 == 0 else list(reversed(variants))
        for name, fn in order:
            results[name].append(fn())
    return {name: {k: statistics.median(x[k] for x in runs) for k in runs[0]}
            for name, runs in results.items()}


# ---------------------------------------------------------------- cases

def load_set(conn, key, jwks):
    conn.call("DEL", key)
    args = ["JWKS.ROTATE", key]
    for j in jwks:
        args += ["ADD", dumps(j)]
    args += ["PROMOTE", jwks[0]["kid"]]
    conn.call(*args)


def derived(key):
    return f"{{{key}}}:cache", f"{{{key}}}:audit", f"{{{key}}}:metrics"


def case_read_hit(srv, a):
    conn = srv.conn
    load_set(conn, "hit", realistic_set())
    doc = conn.call("JWKS.GET", "hit")
    conn.call("SET", "plain-doc", doc)
    out = {"document_bytes": len(doc)}
    for p in (1, 16):
        out[f"P{p}"] = side_by_side(a.rounds, [
            ("JWKS.GET", lambda: redis_benchmark(srv.port, ["JWKS.GET", "hit"], scaled(a.reads, p), a.clients, p)),
            ("GET", lambda: redis_benchmark(srv.port, ["GET", "plain-doc"], scaled(a.reads, p), a.clients, p)),
        ])
        out[f"P{p}"]["ratio"] = out[f"P{p}"]["JWKS.GET"]["rps"] / out[f"P{p}"]["GET"]["rps"]
    return out


def case_read_miss(srv, a):
    out = {}
    for n in (1, 5, 20):
        key = f"miss{n}"
        load_set(srv.conn, key, set_of(n))
        cache = derived(key)[0]
        out[f"{n}_keys"] = side_by_side(a.rounds, [
            ("INVALIDATE+JWKS.GET", lambda: pipelined(srv.port, [["JWKS.INVALIDATE", key], ["JWKS.GET", key]], a.pairs)),
            ("INVALIDATE+GET", lambda: pipelined(srv.port, [["JWKS.INVALIDATE", key], ["GET", cache]], a.pairs)),
        ])
    base = out["1_keys"]["INVALIDATE+JWKS.GET"]["rps"]
    for n in (1, 5, 20):
        out[f"{n}_keys"]["ratio_vs_1_key"] = out[f"{n}_keys"]["INVALIDATE+JWKS.GET"]["rps"] / base
    return out


def script_sha(conn, name):
    with open(os.path.join(LUA_DIR, name)) as f:
        return conn.call("SCRIPT", "LOAD", f.read()).decode()


def quiet(conn, fn):
    """Runs `fn` with loglevel warning: what the module's own work costs, without the
    notice line the spec asks for on every invalidation (Redis's logger opens, writes and
    closes its file per line, on a core the benchmark client also needs)."""
    def run():
        conn.call("CONFIG", "SET", "loglevel", "warning")
        try:
            return fn()
        finally:
            conn.call("CONFIG", "SET", "loglevel", "notice")
    return run


def case_invalidate(srv, a):
    conn = srv.conn
    load_set(conn, "inv", realistic_set())
    sha = script_sha(conn, "invalidate.lua")
    cache, audit, metrics = derived("inv")
    lua = ["EVALSHA", sha, "3", cache, audit, metrics, "10000", TIMESTAMP, "manual", "1", "default"]
    multi = [["MULTI"], ["DEL", cache],
             ["XADD", audit, "MAXLEN", "~", "10000", "*", "timestamp", TIMESTAMP, "action",
              "JWKS_CACHE_INVALIDATED", "reason", "manual", "generation", "1", "user", "default",
              "kids", "", "deleted", "0"],
             ["HINCRBY", metrics, "jwt_jwks_cache_invalidations_total", "1"], ["EXEC"]]
    out = {}
    for p in (1, 16):
        module = lambda: redis_benchmark(srv.port, ["JWKS.INVALIDATE", "inv"], scaled(a.writes, p), a.clients, p)
        out[f"P{p}"] = side_by_side(a.rounds, [
            ("JWKS.INVALIDATE", module),
            ("EVALSHA", lambda: redis_benchmark(srv.port, lua, scaled(a.writes, p), a.clients, p)),
            ("JWKS.INVALIDATE(warning)", quiet(conn, module)),
            ("GET(ceiling)", lambda: redis_benchmark(srv.port, ["GET", cache], scaled(a.writes, p), a.clients, p)),
        ])
        r = out[f"P{p}"]
        r["ratio_vs_lua"] = r["JWKS.INVALIDATE"]["rps"] / r["EVALSHA"]["rps"]
        r["ratio_vs_lua_warning"] = r["JWKS.INVALIDATE(warning)"]["rps"] / r["EVALSHA"]["rps"]
        r["ceiling_vs_lua"] = r["GET(ceiling)"]["rps"] / r["EVALSHA"]["rps"]
    # MULTI/EXEC needs five commands per unit: measured with the pipelined driver, and the
    # module and Lua are measured with that same driver for a fair ratio.
    out["transaction"] = side_by_side(a.rounds, [
        ("JWKS.INVALIDATE", lambda: pipelined(srv.port, [["JWKS.INVALIDATE", "inv"]], a.pairs)),
        ("EVALSHA", lambda: pipelined(srv.port, [lua], a.pairs)),
        ("MULTI/EXEC", lambda: pipelined(srv.port, multi, a.pairs)),
    ])
    t = out["transaction"]
    t["ratio_vs_multi"] = t["JWKS.INVALIDATE"]["rps"] / t["MULTI/EXEC"]["rps"]
    t["ratio_vs_lua"] = t["JWKS.INVALIDATE"]["rps"] / t["EVALSHA"]["rps"]
    return out


def case_rotate(srv, a):
    conn = srv.conn
    jwks = realistic_set()
    load_set(conn, "rot", jwks)
    conn.call("JWKS.ROTATE", "rot", "PROMOTE", "rsa-1")  # rsa-0 previous, rsa-1 current
    sha = script_sha(conn, "rotate.lua")
    _, audit, metrics = derived("rot")
    lua_cache, lua_set = "{lrot}:cache", "lrot"
    conn.call("DEL", lua_set)
    conn.call("EVALSHA", sha, "4", lua_set, lua_cache, "{lrot}:audit", "{lrot}:metrics", "10000",
              TIMESTAMP, "bench", *sum((["ADD", dumps(j)] for j in jwks), []), "PROMOTE", "rsa-0")
    conn.call("EVALSHA", sha, "4", lua_set, lua_cache, "{lrot}:audit", "{lrot}:metrics", "10000",
              TIMESTAMP, "bench", "PROMOTE", "rsa-1")
    extra = dumps(ec_jwk("extra", 1))
    # Each command succeeds every time: two promotes swap and swap back; add + retire keeps
    # the set at four keys.
    ops = {"promote": ["PROMOTE", "rsa-0", "PROMOTE", "rsa-1"],
           "add+retire": ["ADD", extra, "RETIRE", "extra"]}
    lua_keys = ["4", lua_set, lua_cache, "{lrot}:audit", "{lrot}:metrics", "10000", TIMESTAMP, "bench"]
    out = {}
    for name, op in ops.items():
        for p in (1, 16):
            module = lambda: redis_benchmark(srv.port, ["JWKS.ROTATE", "rot", "REASON", "bench"] + op, scaled(a.rotations, p), a.clients, p)
            out[f"{name}/P{p}"] = r = side_by_side(a.rounds, [
                ("JWKS.ROTATE", module),
                ("EVALSHA", lambda: redis_benchmark(srv.port, ["EVALSHA", sha] + lua_keys + op, scaled(a.rotations, p), a.clients, p)),
                ("JWKS.ROTATE(warning)", quiet(conn, module)),
                ("GET(ceiling)", lambda: redis_benchmark(srv.port, ["GET", lua_cache], scaled(a.rotations, p), a.clients, p)),
            ])
            r["ratio_vs_lua"] = r["JWKS.ROTATE"]["rps"] / r["EVALSHA"]["rps"]
            r["ratio_vs_lua_warning"] = r["JWKS.ROTATE(warning)"]["rps"] / r["EVALSHA"]["rps"]
            r["ceiling_vs_lua"] = r["GET(ceiling)"]["rps"] / r["EVALSHA"]["rps"]
    return out


def case_reads_under_rotation(srv, a):
    conn = srv.conn
    load_set(conn, "live", realistic_set())
    conn.call("JWKS.ROTATE", "live", "PROMOTE", "rsa-1")
    stop = threading.Event()
    done = {"rotations": 0}

    def rotator():
        c = Conn(srv.port)
        interval = 1.0 / a.rotation_rate
        next_at = time.perf_counter()
        while not stop.is_set():
            c.call("JWKS.ROTATE", "live", "REASON", "bench", "PROMOTE", "rsa-0", "PROMOTE", "rsa-1")
            done["rotations"] += 1
            next_at += interval
            time.sleep(max(0.0, next_at - time.perf_counter()))

    def with_rotations():
        stop.clear()
        t = threading.Thread(target=rotator)
        started = done["rotations"]
        t0 = time.perf_counter()
        t.start()
        r = redis_benchmark(srv.port, ["JWKS.GET", "live"], a.reads, 50, 1)
        stop.set()
        t.join()
        r["rotations_per_s"] = (done["rotations"] - started) / (time.perf_counter() - t0)
        return r

    out = side_by_side(a.rounds, [
        ("with_rotations", with_rotations),
        ("no_rotations", lambda: redis_benchmark(srv.port, ["JWKS.GET", "live"], a.reads, 50, 1)),
    ])
    out["p99_ratio"] = out["with_rotations"]["p99_ms"] / out["no_rotations"]["p99_ms"]
    return out


def case_memory(srv, a):
    conn = srv.conn
    out = {}
    for n in (1, 5, 20):
        load_set(conn, f"mem{n}", set_of(n))
        out[f"{n}_keys_bytes"] = conn.call("MEMORY", "USAGE", f"mem{n}")
    load_set(conn, "aud", realistic_set())
    redis_benchmark(srv.port, ["JWKS.INVALIDATE", "aud"], a.audit_invalidations, a.clients, 16)
    _, audit, metrics = derived("aud")
    out["invalidations"] = int(conn.call("HGET", metrics, "jwt_jwks_cache_invalidations_total"))
    out["audit_xlen"] = conn.call("XLEN", audit)
    out["audit_bytes"] = conn.call("MEMORY", "USAGE", audit)
    out["audit_maxlen"] = int(conn.call("CONFIG", "GET", "jwks.audit-maxlen")[1])
    return out


def many_sets(srv, n, prefix, policy_ms=0, next_key=False, batch=500):
    """`n` key sets of one EC key each (and a next key, and a policy, when asked),
    created in pipelined batches."""
    conn = Conn(srv.port)
    for start in range(0, n, batch):
        cmds = []
        for i in range(start, min(n, start + batch)):
            key = f"{prefix}{{{i}}}"
            cmds.append(Conn.encode("JWKS.ROTATE", key, "ADD", dumps(ec_jwk("a", 0)), "PROMOTE", "a"))
            if policy_ms:
                cmds.append(Conn.encode("JWKS.POLICY", key, "PROMOTE-AFTER", policy_ms))
            if next_key:
                cmds.append(Conn.encode("JWKS.ROTATE", key, "ADD", dumps(ec_jwk("b", 1))))
        conn.sock.sendall(b"".join(cmds))
        for r in conn.read(len(cmds)):
            if isinstance(r, hiredis.ReplyError):
                raise RuntimeError(str(r))


def timed(conn, *args, runs=20):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        conn.call(*args)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {"median_ms": statistics.median(times), "max_ms": times[-1]}


def case_stats(srv, a):
    """JWKS.STATS and the exporter's script with many key sets, half of them with a policy
    (those add lifecycle series). Target: JWKS.STATS under 10 ms with 10,000 key sets."""
    half = a.key_sets // 2
    many_sets(srv, half, "stats:plain:")
    many_sets(srv, a.key_sets - half, "stats:policy:", policy_ms=3_600_000, next_key=True)
    conn = srv.conn
    script = open(os.path.join(ROOT, "monitoring", "jwks_exporter.lua")).read()
    series = len(conn.call("JWKS.STATS")) // 2
    return {"key_sets": a.key_sets, "series": series,
            "JWKS.STATS": timed(conn, "JWKS.STATS"),
            "INFO jwks": timed(conn, "INFO", "jwks"),
            "EVAL exporter script": timed(conn, "EVAL", script, 0)}


def case_schedule(srv, a):
    """How late scheduled promotions are applied while clients read at full speed: each of
    `--scheduled` key sets gets a next key that falls due within ~2 s; lateness is the
    audit entry's stream ID time minus the due time. Target: p99 within 100 ms."""
    conn = srv.conn
    load_set(conn, "sched:reads", realistic_set())
    n = a.scheduled
    many_sets(srv, n, "sched:", policy_ms=0)
    for i in range(n):
        conn.call("JWKS.POLICY", f"sched:{{{i}}}", "PROMOTE-AFTER", 1000 + (i * 1000) // n)
    for i in range(n):
        conn.call("JWKS.ROTATE", f"sched:{{{i}}}", "ADD", dumps(ec_jwk("b", 1)))
    load = threading.Thread(target=lambda: redis_benchmark(
        srv.port, ["JWKS.GET", "sched:reads"], a.reads * 2, 50, 1))
    load.start()
    lateness = []
    deadline = time.time() + 30
    pending = set(range(n))
    while pending and time.time() < deadline:
        time.sleep(0.2)
        for i in sorted(pending):
            key = f"sched:{{{i}}}"
            entries = conn.call("XRANGE", f"{key}:audit", "-", "+")
            for entry_id, fields in entries:
                f = dict(zip(fields[::2], fields[1::2]))
                if f.get(b"action") == b"JWKS_KEY_PROMOTED" and f.get(b"reason") == b"policy":
                    info = dict(zip(*[iter(conn.call("JWKS.INFO", key))] * 2))
                    b = next(k for k in info[b"keys"] if dict(zip(*[iter(k)] * 2))[b"kid"] == b"b")
                    b = dict(zip(*[iter(b)] * 2))
                    due = b[b"added_ms"] + 1000 + (i * 1000) // n
                    lateness.append(int(entry_id.split(b"-")[0]) - due)
                    pending.discard(i)
    load.join()
    lateness.sort()
    pct = lambda q: lateness[min(len(lateness) - 1, int(len(lateness) * q))] if lateness else None
    return {"changes": len(lateness), "missing": len(pending), "p50_ms": pct(0.5),
            "p99_ms": pct(0.99), "max_ms": lateness[-1] if lateness else None}


def case_policies_get(srv, a):
    """JWKS.GET p99 on a server holding 10,000 key sets with a policy (each with a next key
    due in an hour) beside a second server holding the same key sets without one, read in
    alternation; and each server's CPU while idle: no per-key-set polling."""
    other = Server(a.server)
    try:
        many_sets(srv, a.key_sets, "pol:", policy_ms=3_600_000, next_key=True)
        many_sets(other, a.key_sets, "pol:", next_key=True)
        for s in (srv, other):
            load_set(s.conn, "pol:reads", realistic_set())
            s.conn.call("JWKS.GET", "pol:reads")
        time.sleep(1)

        def idle_cpu(s):
            def cpu():
                info = s.conn.call("INFO", "cpu").decode()
                v = dict(l.split(":", 1) for l in info.splitlines() if ":" in l)
                return float(v["used_cpu_sys"]) + float(v["used_cpu_user"])
            before = cpu()
            time.sleep(2)
            return (cpu() - before) / 2 * 100

        out = side_by_side(a.rounds, [
            ("with_policies", lambda: redis_benchmark(srv.port, ["JWKS.GET", "pol:reads"], a.reads, 50, 1)),
            ("without", lambda: redis_benchmark(other.port, ["JWKS.GET", "pol:reads"], a.reads, 50, 1)),
        ])
        out["p99_ratio"] = out["with_policies"]["p99_ms"] / out["without"]["p99_ms"]
        out["idle_cpu_percent_with_policies"] = idle_cpu(srv)
        out["idle_cpu_percent_without"] = idle_cpu(other)
        return out
    finally:
        other.stop()


def case_keyspace_events(srv, a):
    """What the module's keyspace-event hook costs writes to unrelated keys: SET and
    SET ... EX throughput with the module loaded beside a server without it."""
    plain = Server(a.server, module=False)
    try:
        out = {}
        for name, args in (("SET", ["SET", "k:__rand_int__", "v"]),
                           ("SET EX", ["SET", "k:__rand_int__", "v", "EX", "100"])):
            r = side_by_side(a.rounds, [
                ("module", lambda: redis_benchmark(srv.port, ["-r", "100000"] + args, scaled(a.writes, 16), a.clients, 16)),
                ("plain", lambda: redis_benchmark(plain.port, ["-r", "100000"] + args, scaled(a.writes, 16), a.clients, 16)),
            ])
            r["ratio"] = r["module"]["rps"] / r["plain"]["rps"]
            out[name] = r
        return out
    finally:
        plain.stop()


CASES = {
    "read_hit": case_read_hit,
    "read_miss": case_read_miss,
    "invalidate": case_invalidate,
    "rotate": case_rotate,
    "reads_under_rotation": case_reads_under_rotation,
    "memory": case_memory,
    "stats": case_stats,
    "schedule": case_schedule,
    "policies_get": case_policies_get,
    "keyspace_events": case_keyspace_events,
}


# ---------------------------------------------------------------- report

def table(results):
    lines = []

    def row(case, variant, r):
        lines.append(f"{case:<28} {variant:<22} {r['rps']:>12,.0f} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f}")

    lines.append(f"{'case':<28} {'variant':<22} {'req/s':>12} {'p50 ms':>8} {'p99 ms':>8}")
    for case, res in results.items():
        if case in ("memory", "stats", "schedule"):
            continue
        for group, variants in res.items():
            if not isinstance(variants, dict):
                continue
            if "rps" in variants:
                row(case, group, variants)
                continue
            for variant, r in variants.items():
                if isinstance(r, dict):
                    row(f"{case}/{group}", variant, r)
    lines.append("")
    lines.append("ratios (targets):")
    if "read_hit" in results:
        for p in ("P1", "P16"):
            lines.append(f"  read hit {p}: JWKS.GET / GET = {results['read_hit'][p]['ratio']:.3f} (>= 0.95)")
    if "read_miss" in results:
        for n in (1, 5, 20):
            lines.append(f"  read miss {n} keys: rps vs 1 key = {results['read_miss'][f'{n}_keys']['ratio_vs_1_key']:.3f}")
    if "invalidate" in results:
        inv = results["invalidate"]
        for p in ("P1", "P16"):
            lines.append(f"  invalidate {p}: module / Lua = {inv[p]['ratio_vs_lua']:.2f} (>= 2); "
                         f"with loglevel warning {inv[p]['ratio_vs_lua_warning']:.2f}; "
                         f"a plain GET / Lua = {inv[p]['ceiling_vs_lua']:.2f} (the ceiling)")
        lines.append(f"  invalidate pipelined: module / Lua = {inv['transaction']['ratio_vs_lua']:.2f}, "
                     f"module / MULTI-EXEC = {inv['transaction']['ratio_vs_multi']:.2f}")
    if "rotate" in results:
        for name in results["rotate"]:
            r = results["rotate"][name]
            lines.append(f"  rotate {name}: module / Lua = {r['ratio_vs_lua']:.2f} (>= 3); "
                         f"with loglevel warning {r['ratio_vs_lua_warning']:.2f}; "
                         f"a plain GET / Lua = {r['ceiling_vs_lua']:.2f} (the ceiling)")
    if "reads_under_rotation" in results:
        r = results["reads_under_rotation"]
        lines.append(f"  JWKS.GET p99 with {r['with_rotations']['rotations_per_s']:.0f} rotations/s / without = "
                     f"{r['p99_ratio']:.3f} (<= 1.10)")
    if "stats" in results:
        r = results["stats"]
        lines.append(f"  JWKS.STATS with {r['key_sets']:,} key sets ({r['series']:,} series): "
                     f"median {r['JWKS.STATS']['median_ms']:.2f} ms, max {r['JWKS.STATS']['max_ms']:.2f} ms (< 10 ms); "
                     f"INFO jwks {r['INFO jwks']['median_ms']:.2f} ms; exporter script {r['EVAL exporter script']['median_ms']:.2f} ms")
    if "schedule" in results:
        r = results["schedule"]
        lines.append(f"  scheduled promotions under read load: {r['changes']} applied ({r['missing']} missing), "
                     f"lateness p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms (p99 <= 100)")
    if "policies_get" in results:
        r = results["policies_get"]
        lines.append(f"  JWKS.GET p99 with policies / without = {r['p99_ratio']:.3f} (<= 1.10); idle CPU "
                     f"{r['idle_cpu_percent_with_policies']:.2f} % with, {r['idle_cpu_percent_without']:.2f} % without")
    if "keyspace_events" in results:
        for name, r in results["keyspace_events"].items():
            lines.append(f"  {name} on unrelated keys, module loaded / not: {r['ratio']:.3f}")
    if "memory" in results:
        m = results["memory"]
        lines.append(f"  MEMORY USAGE key set: 1 key {m['1_keys_bytes']} B, 5 keys {m['5_keys_bytes']} B, "
                     f"20 keys {m['20_keys_bytes']} B")
        lines.append(f"  audit after {m['invalidations']} invalidations: XLEN {m['audit_xlen']} "
                     f"(maxlen ~{m['audit_maxlen']}), {m['audit_bytes']} B")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reads", type=int, default=200_000, help="requests per read run (x5 pipelined)")
    p.add_argument("--writes", type=int, default=100_000, help="requests per invalidate run (x5 pipelined)")
    p.add_argument("--rotations", type=int, default=20_000, help="requests per rotate run (x5 pipelined)")
    p.add_argument("--pairs", type=int, default=50_000, help="units per pipelined-driver run")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--rotation-rate", type=float, default=100.0)
    p.add_argument("--audit-invalidations", type=int, default=100_000)
    p.add_argument("--key-sets", type=int, default=10_000, help="key sets for the stats and policies cases")
    p.add_argument("--scheduled", type=int, default=200, help="key sets with a change due, schedule case")
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated subset")
    p.add_argument("--json", default=os.path.join(ROOT, "bench", "out", "results.json"))
    p.add_argument("--server", default=os.environ.get("JWKS_SERVER_BIN", "redis-server"))
    a = p.parse_args()

    srv = Server(a.server)
    try:
        version = srv.conn.call("INFO", "server").decode()
        meta = {
            "server": a.server,
            "server_version": next(l.split(":", 1)[1] for l in version.splitlines() if l.startswith("redis_version:")),
            "cpus": os.cpu_count(),
            "args": vars(a),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        results = {}
        for name in a.cases.split(","):
            print(f"running {name} ...", file=sys.stderr, flush=True)
            results[name] = CASES[name](srv, a)
    finally:
        srv.stop()
    print(table(results))
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=2, default=str)
    print(f"\nwrote {a.json}")


if __name__ == "__main__":
    main()

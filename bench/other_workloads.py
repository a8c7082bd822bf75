#!/usr/bin/env python3
"""What the module costs other workloads: writes to unrelated keys on a server with the
module loaded (and 1,000 key sets) beside a server without it.

Two servers run side by side on free loopback ports: one loads the module (JWKS_MODULE,
default target/release/libredis_jwks.so) and holds --key-sets key sets, the other has no
module. For each command (SET, SET ... EX, INCR, HSET, DEL, EXPIRE, each on its own keys,
none of them the module's) a pre-encoded stream of --requests commands is pipelined on one
connection (a sender thread writes it all while the reader counts replies, so the server
never waits for the client), on the two servers in alternating order, --rounds times. DEL
and EXPIRE hit existing keys only (filled with MSET before each run, not timed): a miss fires
no keyspace event and would hide the cost. Each round gives a ratio, module / without;
printed are the median rates and the median ratio with its spread over the rounds. Each
timed run also reads the server's own CPU time (INFO cpu, user + system, all threads)
before and after: CPU microseconds per command, and the ratio without / module, which is
what the rate ratio would be on a CPU-bound server and moves much less with other load.

Then the same streams are counted under callgrind (valgrind --tool=callgrind, one server of
each kind, counters zeroed before and dumped after --callgrind-n commands): instructions per
command, which do not move with the load on a shared machine the way throughput does; also
net of what each server runs with no client (timers, cron, the module's threads) over the
same window, measured idle first. Kernel time is not counted (bench/instructions.py says
more). --no-callgrind and --no-throughput run one half.

    python3 bench/other_workloads.py                # full run, writes bench/out/other_workloads.json
    python3 bench/other_workloads.py --smoke        # tiny counts, for CI: checks it runs
    JWKS_SERVER_BIN=$(scripts/valkey-bin.sh) python3 bench/other_workloads.py

Asserts no timings.
"""

import argparse
import glob
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (Server, Conn, many_sets, fixtures)


def encode(*args):
    return bench.Conn.encode(*args)


# Each command: (name, key prefix, per-key command, keys that must exist before a run).
COMMANDS = [
    ("SET", "s", lambda k: encode("SET", k, "v"), False),
    ("SET EX", "x", lambda k: encode("SET", k, "v", "EX", "1000"), False),
    ("INCR", "i", lambda k: encode("INCR", k), False),
    ("HSET", "h", lambda k: encode("HSET", k, "f", "v"), False),
    ("DEL", "d", lambda k: encode("DEL", k), True),
    ("EXPIRE", "e", lambda k: encode("EXPIRE", k, "1000"), True),
]


def keys(prefix, n):
    return [f"other:{prefix}:{i}" for i in range(n)]


def fill(port, names, chunk=1000):
    """Makes every key in `names` exist (MSET, pipelined; not timed)."""
    conn = bench.Conn(port)
    blob = b"".join(encode("MSET", *[x for k in names[i:i + chunk] for x in (k, "v")])
                    for i in range(0, len(names), chunk))
    conn.sock.sendall(blob)
    for r in conn.read((len(names) + chunk - 1) // chunk):
        if isinstance(r, Exception):
            raise RuntimeError(str(r))
    conn.sock.close()


def connect(port):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def blast(port, blob, n, sock=None):
    """Sends `blob` (n single-line-reply commands) on one connection (`sock`, or a new one)
    while reading the replies; returns commands per second."""
    sock = sock or connect(port)
    sender = threading.Thread(target=sock.sendall, args=(blob,))
    got = errors = 0
    start = time.perf_counter()
    sender.start()
    while got < n:
        data = sock.recv(1 << 20)
        if not data:
            raise OSError("connection closed")
        # Every reply here is one line (+OK, :n); an error starts with '-', which no
        # other reply of these commands contains.
        got += data.count(b"\n")
        errors += data.count(b"-")
    elapsed = time.perf_counter() - start
    sender.join()
    sock.close()
    if errors:
        raise RuntimeError(f"{errors} error replies")
    return n / elapsed


def check_replies(port, name, one):
    """The first command of a stream, sent alone: fails loudly on an error reply."""
    conn = bench.Conn(port)
    conn.sock.sendall(one)
    r = conn.read(1)[0]
    conn.sock.close()
    if isinstance(r, Exception):
        raise RuntimeError(f"{name}: {r}")


def server_cpu(conn):
    """The server process's CPU seconds so far (user + system, all threads)."""
    info = conn.call("INFO", "cpu").decode()
    v = dict(l.split(":", 1) for l in info.splitlines() if ":" in l)
    return float(v["used_cpu_user"]) + float(v["used_cpu_sys"])


def throughput(module_srv, plain_srv, a):
    out = {}
    for name, prefix, make, needs_keys in COMMANDS:
        names = keys(prefix, a.requests)
        blob = b"".join(make(k) for k in names)
        print(f"timing {name} ...", file=sys.stderr, flush=True)
        servers = [("module", module_srv), ("without", plain_srv)]
        for _, s in servers:
            check_replies(s.port, name, make(names[0]))
            if needs_keys:
                fill(s.port, names)
            blast(s.port, blob, len(names))  # warm-up: keys and tables at full size
        rates = {label: [] for label, _ in servers}
        cpu = {label: [] for label, _ in servers}
        for r in range(a.rounds):
            for label, s in (servers if r % 2 == 0 else servers[::-1]):
                if needs_keys:
                    fill(s.port, names)
                before = server_cpu(s.conn)
                rates[label].append(blast(s.port, blob, len(names)))
                cpu[label].append((server_cpu(s.conn) - before) / len(names) * 1e6)
        ratios = [m / w for m, w in zip(rates["module"], rates["without"])]
        # The server's own CPU time per command moves far less with other load on the
        # machine than the rate does; without/module is the rate ratio a CPU-bound server
        # would see.
        cpu_ratios = [w / m for m, w in zip(cpu["module"], cpu["without"])]
        out[name] = {
            "module_rps": statistics.median(rates["module"]),
            "without_rps": statistics.median(rates["without"]),
            "ratio": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "module_cpu_us": statistics.median(cpu["module"]),
            "without_cpu_us": statistics.median(cpu["without"]),
            "cpu_ratio": statistics.median(cpu_ratios),
            "cpu_ratio_min": min(cpu_ratios),
            "cpu_ratio_max": max(cpu_ratios),
            "rounds": {"module": rates["module"], "without": rates["without"],
                       "module_cpu_us": cpu["module"], "without_cpu_us": cpu["without"]},
        }
    return out


class CallgrindServer(bench.Server):
    """bench.Server under callgrind (as in bench/instructions.py), with or without the
    module."""

    def __init__(self, server_bin, module):
        self.out = os.path.join(tempfile.mkdtemp(prefix="jwks-callgrind-"), "callgrind.out")
        super().__init__(server_bin, module=module, start_timeout=120,
                         wrapper=["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out}"])

    def control(self, flag):
        subprocess.run(["callgrind_control", flag, str(self.proc.pid)], check=True, capture_output=True)

    def dump_total(self):
        before = set(glob.glob(self.out + "*"))
        self.control("-d")
        dumps = sorted(set(glob.glob(self.out + "*")) - before, key=os.path.getmtime)
        with open(dumps[-1]) as f:
            return next(int(line.split()[1]) for line in f if line.startswith(("totals:", "summary:")))

    def count(self, blob, n):
        """Instructions per command over the n commands in `blob` (the connection is made
        before the counters are zeroed), and the seconds the window lasted."""
        sock = connect(self.port)
        self.control("-z")
        start = time.perf_counter()
        blast(self.port, blob, n, sock)
        time.sleep(0.2)  # let the module's logging thread drain
        total = self.dump_total()
        return total / n, time.perf_counter() - start

    def idle(self, seconds=2.0):
        """Instructions per second with no client: timers and cron, the floor under every
        count (the server with key sets has more to look after)."""
        self.control("-z")
        start = time.perf_counter()
        time.sleep(seconds)
        return self.dump_total() / (time.perf_counter() - start)

    def stop(self):
        super().stop()
        shutil.rmtree(os.path.dirname(self.out), ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def instructions(a):
    servers = {}
    try:
        servers["module"] = CallgrindServer(a.server, module=True)
        servers["without"] = CallgrindServer(a.server, module=False)
        bench.many_sets(servers["module"], a.key_sets, "ks:")
        out = {}
        idle = {label: s.idle() for label, s in servers.items()}
        for name, prefix, make, needs_keys in COMMANDS:
            print(f"counting {name} ...", file=sys.stderr, flush=True)
            names = keys(prefix, a.callgrind_n)
            blob = b"".join(make(k) for k in names)
            counts = {}
            for label, s in servers.items():
                if needs_keys:
                    fill(s.port, names)
                blast(s.port, blob, len(names))  # warm-up
                if needs_keys:
                    fill(s.port, names)
                counts[label], seconds = s.count(blob, len(names))
                # What the idle server would have run in that window, per command.
                counts[f"{label}_idle"] = idle[label] * seconds / len(names)
            counts["extra"] = counts["module"] - counts["without"]
            counts["ratio"] = counts["module"] / counts["without"]
            # Net of what each server runs idle over the window: the commands' own cost.
            net = {k: counts[k] - counts[f"{k}_idle"] for k in ("module", "without")}
            counts["extra_net"] = net["module"] - net["without"]
            counts["ratio_net"] = net["module"] / net["without"]
            out[name] = counts
        return out
    finally:
        for s in servers.values():
            s.stop()


def report(results):
    lines = []
    t = results.get("throughput")
    if t:
        lines.append(f"{'command':<8} {'module req/s':>13} {'without req/s':>14} "
                     f"{'module/without':>15} {'spread (rounds)':>16}   "
                     f"{'server CPU us/cmd':>17} {'without/module':>15} {'spread':>12}")
        for name, r in t.items():
            lines.append(f"{name:<8} {r['module_rps']:>13,.0f} {r['without_rps']:>14,.0f} "
                         f"{r['ratio']:>15.3f} {r['ratio_min']:>8.3f}-{r['ratio_max']:.3f}   "
                         f"{r['module_cpu_us']:>8.3f} / {r['without_cpu_us']:.3f} {r['cpu_ratio']:>15.3f} "
                         f"{r['cpu_ratio_min']:>6.3f}-{r['cpu_ratio_max']:.3f}")
    i = results.get("instructions")
    if i:
        lines.append("")
        lines.append(f"{'command':<8} {'module instr/cmd':>17} {'without':>9} {'extra':>7} {'module/without':>15}"
                     f"   {'idle share module / without':>28}   {'net extra':>9} {'net ratio':>9}")
        for name, r in i.items():
            lines.append(f"{name:<8} {r['module']:>17,.0f} {r['without']:>9,.0f} {r['extra']:>7,.0f} "
                         f"{r['ratio']:>15.3f}   {r['module_idle']:>17,.0f} / {r['without_idle']:<8,.0f}"
                         f"   {r['extra_net']:>9,.0f} {r['ratio_net']:>9.3f}")
        lines.append("(idle share: what each server runs with no client - timers, cron, the module's "
                     "threads - over the same window, per command; net = counts less idle share)")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=300_000, help="commands per timed run")
    p.add_argument("--key-sets", type=int, default=1000, help="key sets on the server with the module")
    p.add_argument("--callgrind-n", type=int, default=20_000, help="commands counted per command under callgrind")
    p.add_argument("--no-callgrind", action="store_true", help="throughput only")
    p.add_argument("--no-throughput", action="store_true", help="callgrind only")
    p.add_argument("--smoke", action="store_true", help="tiny counts: checks that it runs, measures nothing")
    p.add_argument("--server", default=os.environ.get("JWKS_SERVER_BIN", "redis-server"))
    p.add_argument("--module", default=os.environ.get("JWKS_MODULE") or bench.MODULE)
    p.add_argument("--json", default=os.path.join(bench.ROOT, "bench", "out", "other_workloads.json"))
    a = p.parse_args()
    if a.smoke:
        a.rounds, a.requests, a.key_sets, a.callgrind_n = 1, 2000, 20, 200
    if not os.path.exists(a.module):
        sys.exit(f"no module at {a.module} (cargo build --release, or set JWKS_MODULE)")
    bench.MODULE = os.path.abspath(a.module)  # bench.Server loads bench.MODULE

    results = {}
    module_srv = bench.Server(a.server)
    plain_srv = bench.Server(a.server, module=False)
    try:
        info = dict(l.split(":", 1) for l in module_srv.conn.call("INFO", "server").decode().splitlines() if ":" in l)
        version = info.get("valkey_version", info.get("redis_version", "?"))
        if not a.no_throughput:
            bench.many_sets(module_srv, a.key_sets, "ks:")
            results["throughput"] = throughput(module_srv, plain_srv, a)
    finally:
        for s in (module_srv, plain_srv):
            s.stop()
            shutil.rmtree(s.dir, ignore_errors=True)
    if not a.no_callgrind:
        results["instructions"] = instructions(a)

    print(report(results))
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    meta = {"server": a.server, "server_version": version.strip(), "module": bench.MODULE,
            "cpus": os.cpu_count(), "args": vars(a),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with open(a.json, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=2)
    print(f"\nwrote {a.json}")


if __name__ == "__main__":
    main()

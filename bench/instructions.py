#!/usr/bin/env python3
"""Instructions per command under callgrind: the module against the same baselines as
bench.py, counted instead of timed.

Throughput on a 2-core machine moves by 10% from run to run; callgrind's instruction
counts do not (same binary, same inputs, same count). This is the profile bench.py's
ratios were chased with: one redis-server (Debian's, with the release module) runs
under `valgrind --tool=callgrind`; for each variant the counters are zeroed, N commands
are sent pipelined on one connection, and the counters are dumped. Every thread of the
server is counted, the module's logging thread included. Kernel time (system calls) is
not counted, so these ratios say what each command costs the server's CPU, not the
round trip. Prints a table and writes bench/out/instructions.json. Asserts nothing.

    bench/run.sh --instructions        (or: python3 bench/instructions.py -n 5000)
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (fixtures, RESP client, Lua baselines)


class CallgrindServer(bench.Server):
    def __init__(self, server_bin):
        out_dir = tempfile.mkdtemp(prefix="jwks-callgrind-")
        self.out = os.path.join(out_dir, "callgrind.out")
        super().__init__(server_bin, wrapper=["valgrind", "--tool=callgrind",
                                              f"--callgrind-out-file={self.out}"],
                         start_timeout=60)

    def control(self, flag):
        subprocess.run(["callgrind_control", flag, str(self.proc.pid)], check=True,
                       capture_output=True)

    def count(self, unit, n):
        """Instructions per unit (a list of commands) over n units."""
        self.control("-z")
        bench.pipelined(self.port, unit, n)
        time.sleep(0.2)  # let the logging thread drain what these commands queued
        before = set(glob.glob(self.out + "*"))
        self.control("-d")
        dumps = sorted(set(glob.glob(self.out + "*")) - before, key=os.path.getmtime)
        with open(dumps[-1]) as f:
            totals = next(int(line.split()[1]) for line in f if line.startswith(("totals:", "summary:")))
        return totals / n


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=5000, help="units per variant")
    p.add_argument("--verifiers", type=int, default=1000, help="live verifier IDs on the ack cases' key sets")
    p.add_argument("--json", default=os.path.join(bench.ROOT, "bench", "out", "instructions.json"))
    p.add_argument("--server", default=os.environ.get("JWKS_SERVER_BIN", "redis-server"))
    a = p.parse_args()

    srv = CallgrindServer(a.server)
    try:
        c = srv.conn
        bench.load_set(c, "hit", bench.realistic_set())
        c.call("SET", "plain-doc", c.call("JWKS.GET", "hit"))
        bench.load_set(c, "inv", bench.realistic_set())
        inv_sha = bench.script_sha(c, "invalidate.lua")
        cache, audit, metrics = bench.derived("inv")
        lua_inv = ["EVALSHA", inv_sha, "3", cache, audit, metrics, "10000", bench.TIMESTAMP,
                   "manual", "1", "default"]
        multi = [["MULTI"], ["DEL", cache],
                 ["XADD", audit, "MAXLEN", "~", "10000", "*", "timestamp", bench.TIMESTAMP,
                  "action", "JWKS_CACHE_INVALIDATED", "reason", "manual", "generation", "1",
                  "user", "default", "kids", "", "deleted", "0"],
                 ["HINCRBY", metrics, "jwt_jwks_cache_invalidations_total", "1"], ["EXEC"]]

        jwks = bench.realistic_set()
        bench.load_set(c, "rot", jwks)
        c.call("JWKS.ROTATE", "rot", "PROMOTE", "rsa-1")
        rot_sha = bench.script_sha(c, "rotate.lua")
        lua_keys = ["4", "lrot", "{lrot}:cache", "{lrot}:audit", "{lrot}:metrics", "10000",
                    bench.TIMESTAMP, "bench"]
        c.call("EVALSHA", rot_sha, *lua_keys, *sum((["ADD", bench.dumps(j)] for j in jwks), []),
               "PROMOTE", "rsa-0")
        c.call("EVALSHA", rot_sha, *lua_keys, "PROMOTE", "rsa-1")
        extra = bench.dumps(bench.ec_jwk("extra", 1))
        ops = {"promote": ["PROMOTE", "rsa-0", "PROMOTE", "rsa-1"],
               "add+retire": ["ADD", extra, "RETIRE", "extra"]}

        # Acks (issue #21): 1,000 live verifier IDs on the key set (--verifiers), one of them
        # re-acking its generation (a verifier's steady state: every load and every TTL/3).
        # Second set: under CONFIRM 100 with a next key none of them holds yet, so every ack
        # also re-counts the confirmation (and promotes nothing).
        bench.load_set(c, "ack", bench.realistic_set())
        bench.load_set(c, "ackc", bench.realistic_set())
        c.call("JWKS.POLICY", "ackc", "PROMOTE-AFTER", "86400000", "CONFIRM", "100")
        ack_gen = c.call("JWKS.INFO", "ack")
        ack_gen = int(ack_gen[ack_gen.index(b"generation") + 1])
        for key in ("ack", "ackc"):
            bench.pipelined(srv.port, [["JWKS.ACK", key, "GENERATION", ack_gen, "ID", f"verifier-{i:04d}",
                                        "TTL", "3600000"] for i in range(a.verifiers)], 1, batch=1)
        c.call("JWKS.ROTATE", "ackc", "ADD", bench.dumps(bench.ec_jwk("ackc-next", 2)))
        ack_unit = lambda key: [["JWKS.ACK", key, "GENERATION", ack_gen, "ID",  # noqa: E731
                                 f"verifier-{a.verifiers // 2:04d}", "TTL", "3600000"]]

        cases = {
            "read_hit": [("JWKS.GET", [["JWKS.GET", "hit"]]), ("GET", [["GET", "plain-doc"]])],
            f"ack/{a.verifiers}_verifiers": [("JWKS.ACK", ack_unit("ack")),
                                             ("JWKS.ACK CONFIRM", ack_unit("ackc")),
                                             ("JWKS.GET", [["JWKS.GET", "ack"]])],
            "invalidate": [("JWKS.INVALIDATE", [["JWKS.INVALIDATE", "inv"]]),
                           ("EVALSHA", [lua_inv]), ("MULTI/EXEC", multi)],
        }
        for name, op in ops.items():
            cases[f"rotate/{name}"] = [
                ("JWKS.ROTATE", [["JWKS.ROTATE", "rot", "REASON", "bench"] + op]),
                ("EVALSHA", [["EVALSHA", rot_sha] + lua_keys + op]),
            ]
        results = {}
        for case, variants in cases.items():
            print(f"counting {case} ...", file=sys.stderr, flush=True)
            # Warm up (first fills, stream growth to its cap), then count.
            for _, unit in variants:
                bench.pipelined(srv.port, unit, min(a.n, 2000))
            results[case] = {name: srv.count(unit, a.n) for name, unit in variants}
    finally:
        srv.stop()

    print(f"{'case':<22} {'variant':<18} {'instructions':>13}")
    for case, r in results.items():
        for name, ir in r.items():
            print(f"{case:<22} {name:<18} {ir:>13,.0f}")
    print("\nratios (baseline instructions / module instructions; higher is better for the module):")
    print(f"  read hit: GET / JWKS.GET = {results['read_hit']['GET'] / results['read_hit']['JWKS.GET']:.3f}")
    inv = results["invalidate"]
    print(f"  invalidate: Lua / module = {inv['EVALSHA'] / inv['JWKS.INVALIDATE']:.2f}, "
          f"MULTI-EXEC / module = {inv['MULTI/EXEC'] / inv['JWKS.INVALIDATE']:.2f}")
    for name in ops:
        r = results[f"rotate/{name}"]
        print(f"  rotate {name}: Lua / module = {r['EVALSHA'] / r['JWKS.ROTATE']:.2f}")
    ack = results[f"ack/{a.verifiers}_verifiers"]
    print(f"  ack ({a.verifiers} live verifiers): JWKS.ACK / JWKS.GET = {ack['JWKS.ACK'] / ack['JWKS.GET']:.2f}, "
          f"under CONFIRM with a next key pending {ack['JWKS.ACK CONFIRM'] / ack['JWKS.GET']:.2f}")
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump({"units_per_variant": a.n, "verifiers": a.verifiers, "instructions_per_unit": results}, f, indent=2)
    print(f"\nwrote {a.json}")


if __name__ == "__main__":
    main()

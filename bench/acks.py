#!/usr/bin/env python3
"""Acks/s a server takes from a fleet of 1,000 verifiers (issue #21), against JWKS.GET in the
same run.

Starts its own redis-server with the release module (bench.py's fixtures), a key set with
--verifiers live verifier IDs (each acked once beforehand), and drives with redis-benchmark
(--clients connections, P1 unpipelined and P16 pipelined, as bench.py does):

  JWKS.ACK          JWKS.ACK K GENERATION g ID v:__rand_int__ TTL 30000 (redis-benchmark's -r
                    makes the ID one of the --verifiers live ones: every ack re-acks)
  JWKS.ACK CONFIRM  the same on a key set under CONFIRM 100 with a next key none of them holds
                    (every ack re-counts the confirmation, none promotes)
  JWKS.GET          a cache hit on the same server, the baseline

side by side, alternating order, --rounds rounds, medians. A fleet of V verifiers acking
every TTL/3 sends V / (TTL/3) acks/s (1,000 verifiers with the default 30 s TTL: 100/s), plus
one per verifier per rotation. Prints a table and JSON (--json). Asserts nothing.

    python3 bench/acks.py                 # 5 rounds
    python3 bench/acks.py --smoke         # tiny counts, for CI: checks that it runs
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--verifiers", type=int, default=1000)
    p.add_argument("--requests", type=int, default=100000, help="per unpipelined run (P16 sends 5x)")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--json", default=os.path.join(bench.ROOT, "bench", "out", "acks.json"))
    p.add_argument("--server", default=os.environ.get("JWKS_SERVER_BIN", "redis-server"))
    a = p.parse_args()
    if a.smoke:
        a.requests, a.rounds, a.verifiers = 2000, 1, 100

    srv = bench.Server(a.server)
    try:
        c = srv.conn
        for key in ("ack", "ackc"):
            bench.load_set(c, key, bench.realistic_set())
        c.call("JWKS.POLICY", "ackc", "PROMOTE-AFTER", "86400000", "CONFIRM", "100")
        info = c.call("JWKS.INFO", "ack")
        gen = int(info[info.index(b"generation") + 1])
        # redis-benchmark -r N writes __rand_int__ as 12 digits, 0 .. N-1.
        ids = [f"v:{i:012d}" for i in range(a.verifiers)]
        for key in ("ack", "ackc"):
            bench.pipelined(srv.port, [["JWKS.ACK", key, "GENERATION", gen, "ID", v, "TTL", "30000"] for v in ids],
                            1, batch=1)
        c.call("JWKS.ROTATE", "ackc", "ADD", bench.dumps(bench.ec_jwk("ackc-next", 2)))
        live = {key: c.call("JWKS.INFO", key) for key in ("ack", "ackc")}
        live = {k: int(v[v.index(b"verifiers") + 1]) for k, v in live.items()}

        def ack(key, pipeline):
            return bench.redis_benchmark(srv.port, ["-r", a.verifiers, "JWKS.ACK", key, "GENERATION", gen, "ID",
                                                    "v:__rand_int__", "TTL", "30000"],
                                         bench.scaled(a.requests, pipeline), a.clients, pipeline)

        out = {"verifiers": a.verifiers, "live": live, "clients": a.clients, "rounds": a.rounds}
        for pl in (1, 16):
            r = bench.side_by_side(a.rounds, [
                ("JWKS.ACK", lambda pl=pl: ack("ack", pl)),
                ("JWKS.ACK CONFIRM", lambda pl=pl: ack("ackc", pl)),
                ("JWKS.GET", lambda pl=pl: bench.redis_benchmark(srv.port, ["JWKS.GET", "ack"],
                                                                bench.scaled(a.requests, pl), a.clients, pl)),
            ])
            r["ratio_ack_get"] = r["JWKS.ACK"]["rps"] / r["JWKS.GET"]["rps"]
            r["ratio_ack_confirm_get"] = r["JWKS.ACK CONFIRM"]["rps"] / r["JWKS.GET"]["rps"]
            out[f"P{pl}"] = r
        # Still exactly the fleet: re-acks did not add IDs.
        out["live_after"] = {k: int(v[v.index(b"verifiers") + 1])
                             for k, v in ((k, c.call("JWKS.INFO", k)) for k in ("ack", "ackc"))}
        # Every request an ack that counted (redis-benchmark counts an error reply as a request).
        stats = c.call("INFO", "commandstats").decode()
        line = next((x for x in stats.splitlines() if x.startswith("cmdstat_jwks.ack:")), "")
        out["jwks_ack_commandstats"] = line.split(":", 1)[-1]
        out["cpus"] = os.cpu_count()
    finally:
        srv.stop()

    print(f"\n{a.verifiers} live verifiers, {a.clients} clients, {a.rounds} rounds (medians), {out['cpus']} CPUs")
    print(f"{'':<8} {'variant':<18} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for pl in (1, 16):
        r = out[f"P{pl}"]
        for name in ("JWKS.ACK", "JWKS.ACK CONFIRM", "JWKS.GET"):
            print(f"{'P' + str(pl):<8} {name:<18} {r[name]['rps']:>10,.0f} {r[name]['p50_ms']:>8.3f} {r[name]['p99_ms']:>8.3f}")
        print(f"{'':<8} ack / get = {r['ratio_ack_get']:.2f}, ack under CONFIRM / get = {r['ratio_ack_confirm_get']:.2f}")
    print(f"live verifiers before / after: {out['live']} / {out['live_after']}; "
          f"JWKS.ACK commandstats: {out['jwks_ack_commandstats']}")
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(out, f, indent=2)
    print(f"\nwrote {a.json}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""How fast a fleet of verifiers learns of a rotation: KeyCache vs PyJWT's PyJWKClient.

Starts its own redis-server (or $JWKS_SERVER_BIN) with the module on a free loopback port,
then runs two phases with the same rotation sequence (each rotation one JWKS.ROTATE: ADD a
new key, PROMOTE it, RETIRE the key before the previous one):

1. KeyCache: --processes verifier processes, each holding a jwks_redis.KeyCache. For every
   rotation and process: the time from the JWKS.ROTATE reply (as the rotating client saw
   it) to the moment that process holds the new generation (its cache installed it).
   CLOCK_MONOTONIC is system-wide, so the processes' timestamps compare.
2. Baseline: as many processes each holding a PyJWKClient with its defaults (lifespan 300 s,
   cooldown 30 s) on the JWKS endpoint (jwks_redis.endpoint, served from JWKS.GET META), asked
   for the signing keys every --poll seconds as a verifier under load would. Every fetch is
   recorded. A process holds a generation from the first fetch after its ROTATE reply; with
   a 300 s lifespan that fetch comes when the cache expires, so a rotation the run did not
   see refetched is counted at last fetch + lifespan - reply: exactly when PyJWKClient's own
   logic would fetch next (plus the steady-state figures for a fleet whose caches expire at
   uniformly spread moments).

Both phases report the Redis commands the fleet sent (INFO commandstats delta). Prints a
table and JSON (--json FILE to keep it). Asserts nothing. Smoke run (CI):

    python3 bench/keycache.py --processes 3 --rotations 5
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import sys
import threading
import time
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from socketserver import ThreadingMixIn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT / "python" / "tests"))  # the server harness the tests use too

import jwt  # noqa: E402
import redis  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from jwt.algorithms import ECAlgorithm  # noqa: E402

from jwks_redis import KeyCache  # noqa: E402
from jwks_redis.endpoint import make_app  # noqa: E402

import harness  # noqa: E402

KEY = "jwks:{bench}"
LIFESPAN = 300.0  # PyJWKClient's default


def default_module() -> str:
    """JWKS_MODULE (via --module), else the release build, else the debug one."""
    try:
        return harness.module_path("release", "debug")
    except harness.HarnessError as e:
        raise SystemExit(str(e)) from None


def public_jwk(kid: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    jwk = json.loads(ECAlgorithm.to_jwk(key))
    jwk.update(kid=kid, use="sig", alg="ES256")
    return json.dumps(jwk, separators=(",", ":"))


def commandstats(client: redis.Redis) -> dict:
    return {k.removeprefix("cmdstat_"): int(v["calls"])
            for k, v in client.info("commandstats").items()}


def delta(before: dict, after: dict) -> dict:
    out = {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0) > 0}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


# --------------------------------------------------------------------------- the fleets


def keycache_verifier(port: int, ready, stop, out) -> None:
    held: list = []
    cache = KeyCache(redis.Redis(host="127.0.0.1", port=port), KEY,
                     on_change=lambda s: held.append((s.generation, time.monotonic())))
    cache.wait_ready(10)
    ready.release()
    stop.wait()
    stats = cache.stats()
    cache.close()
    out.send({"held": held, "stats": stats})
    out.close()


def pyjwk_verifier(url: str, poll: float, ready, stop, out) -> None:
    fetches: list = []

    class Recording(jwt.PyJWKClient):
        def fetch_data(self):
            data = super().fetch_data()
            fetches.append(time.monotonic())
            return data

    client = Recording(url)  # the defaults: lifespan 300 s, cooldown 30 s
    client.get_signing_keys()
    ready.release()
    while not stop.wait(poll * (0.5 + random.random())):
        client.get_signing_keys()
    out.send({"fetches": fetches})
    out.close()


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def run_phase(kind: str, server: harness.RedisServer, args, keys: list, start_gen: int) -> dict:
    ctx = mp.get_context("fork")
    ready, stop = ctx.Semaphore(0), ctx.Event()
    client = server.client()
    httpd = None
    if kind == "keycache":
        target, extra = keycache_verifier, (server.port,)
    else:
        app = make_app(redis.Redis(host="127.0.0.1", port=server.port), KEY)
        httpd = make_server("127.0.0.1", 0, app, server_class=_ThreadingWSGIServer,
                            handler_class=_Quiet)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{httpd.server_port}/.well-known/jwks.json"
        target, extra = pyjwk_verifier, (url, args.poll)
    procs, pipes = [], []
    before = commandstats(client)
    before["info"] = before.get("info", 0) + 1  # the next INFO is this driver's
    for _ in range(args.processes):
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=target, args=(*extra, ready, stop, send), daemon=True)
        p.start()
        send.close()
        procs.append(p)
        pipes.append(recv)
    for _ in procs:
        if not ready.acquire(timeout=120):
            raise SystemExit(f"{kind}: a verifier did not start")
    started = commandstats(client)
    replies: dict = {}
    gen = start_gen
    for i in range(args.rotations):
        new, drop = keys[i + 2], keys[i]
        client.execute_command("JWKS.ROTATE", KEY, "ADD", new[1], "PROMOTE", new[0],
                               "RETIRE", drop[0])
        replies[gen + 1] = time.monotonic()
        gen += 1
        time.sleep(args.interval * (0.5 + random.random()))
    time.sleep(max(0.5, args.interval))
    after = commandstats(client)
    # What the fleet sent: without this driver's own rotations and INFO calls.
    after["jwks.rotate"] = after.get("jwks.rotate", 0) - args.rotations
    after["info"] = after.get("info", 0) - 1
    stop.set()
    results = [pipe.recv() for pipe in pipes]
    for p in procs:
        p.join(10)
    if httpd is not None:
        httpd.shutdown()
    return {"replies": replies, "results": results, "startup": delta(before, started),
            "during": delta(started, after), "end_gen": gen}


# --------------------------------------------------------------------------- statistics


def pct(values: list, q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summarize(lags_ms: list) -> dict:
    return {"n": len(lags_ms), "p50_ms": round(pct(lags_ms, 0.5), 3),
            "p99_ms": round(pct(lags_ms, 0.99), 3), "max_ms": round(max(lags_ms), 3),
            "min_ms": round(min(lags_ms), 3)}


def keycache_lags(phase: dict) -> tuple:
    lags, missing = [], 0
    for r in phase["results"]:
        held = r["held"]
        for g, t_reply in phase["replies"].items():
            t = next((t for gen, t in held if gen is not None and gen >= g), None)
            if t is None:
                missing += 1
            else:
                lags.append((t - t_reply) * 1000)
    return lags, missing


def baseline_lags(phase: dict) -> tuple:
    lags, refetched = [], 0
    for r in phase["results"]:
        fetches = r["fetches"]
        for g, t_reply in phase["replies"].items():
            after = [t for t in fetches if t >= t_reply]
            if after:
                refetched += 1
                lags.append((after[0] - t_reply) * 1000)
            else:
                last = max(t for t in fetches if t < t_reply)
                lags.append((last + LIFESPAN - t_reply) * 1000)
    return lags, refetched


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, default=50)
    p.add_argument("--rotations", type=int, default=100)
    p.add_argument("--interval", type=float, default=0.1,
                   help="mean seconds between rotations (default 0.1)")
    p.add_argument("--poll", type=float, default=0.05,
                   help="mean seconds between a baseline verifier's key lookups")
    p.add_argument("--server-bin", default=os.environ.get("JWKS_SERVER_BIN", "redis-server"))
    p.add_argument("--module", default=os.environ.get("JWKS_MODULE") or None)
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--json", help="also write the JSON report to this file")
    args = p.parse_args()
    module = args.module or default_module()

    server = harness.RedisServer(None, module=module, binary=args.server_bin,
                                 dir_prefix="jwks-bench-")
    try:
        keys = [(f"k{i}", public_jwk(f"k{i}")) for i in range(2 * args.rotations + 2)]
        c = server.client()
        c.execute_command("JWKS.ROTATE", KEY, "ADD", keys[0][1], "PROMOTE", keys[0][0],
                          "ADD", keys[1][1], "PROMOTE", keys[1][0])
        gen = 1
        report: dict = {"processes": args.processes, "rotations": args.rotations,
                        "interval_s": args.interval, "server": args.server_bin,
                        "module": module, "cpus": os.cpu_count()}
        kc = run_phase("keycache", server, args, keys, gen)
        lags, missing = keycache_lags(kc)
        report["keycache"] = {**summarize(lags), "never_held": missing,
                              "commands_startup": kc["startup"],
                              "commands_during_rotations": kc["during"],
                              "reloads_per_process": round(sum(r["stats"]["loads"] for r in kc["results"])
                                                           / args.processes, 2)}
        if not args.no_baseline:
            base = run_phase("pyjwkclient", server, args, keys[args.rotations:],
                             kc["end_gen"])
            blags, refetched = baseline_lags(base)
            report["pyjwkclient_default_lifespan"] = {
                **summarize(blags), "lifespan_s": LIFESPAN,
                "rotations_seen_by_a_fetch_in_the_run": refetched,
                "fetches": sum(len(r["fetches"]) for r in base["results"]),
                "steady_state_model_ms": {"p50_ms": LIFESPAN * 500, "p99_ms": LIFESPAN * 990,
                                          "max_ms": LIFESPAN * 1000},
                "commands_startup": base["startup"],
                "commands_during_rotations": base["during"],
            }
    finally:
        server.close()

    print_table(report)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


def print_table(r: dict) -> None:
    print(f"\n{r['processes']} verifier processes, {r['rotations']} rotations, "
          f"{r['cpus']} CPUs, {Path(r['server']).name}")
    print("time from the JWKS.ROTATE reply to the process holding the new generation")
    print(f"{'':34} {'p50':>12} {'p99':>12} {'max':>12}")
    k = r["keycache"]
    print(f"{'KeyCache (events)':34} {k['p50_ms']:>9.2f} ms {k['p99_ms']:>9.2f} ms {k['max_ms']:>9.2f} ms")
    if "pyjwkclient_default_lifespan" in r:
        b = r["pyjwkclient_default_lifespan"]
        print(f"{'PyJWKClient, lifespan 300 s (run)':34} {b['p50_ms'] / 1000:>10.1f} s "
              f"{b['p99_ms'] / 1000:>10.1f} s {b['max_ms'] / 1000:>10.1f} s")
        m = b["steady_state_model_ms"]
        print(f"{'PyJWKClient, steady state':34} {m['p50_ms'] / 1000:>10.1f} s "
              f"{m['p99_ms'] / 1000:>10.1f} s {m['max_ms'] / 1000:>10.1f} s")
    print("Redis commands the fleet sent during the rotations (INFO commandstats delta):")
    print(f"  KeyCache:    {k['commands_during_rotations']}  (reloads per process: {k['reloads_per_process']})")
    if "pyjwkclient_default_lifespan" in r:
        print(f"  PyJWKClient: {r['pyjwkclient_default_lifespan']['commands_during_rotations']}")
    print()


if __name__ == "__main__":
    main()

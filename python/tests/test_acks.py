"""Verifier acks (JWKS.ACK) from KeyCache, AsyncKeyCache and jwks-endpoint, and the push
path that cannot silently go stale: missed events found by an ack's reply or a generation
jump, and resubscription after the server ends a sharded subscription (slot migration,
failover). Real servers; ms-scale timings; every wait is bounded."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import jwt
import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster

from conftest import free_port, wait_until
from jwks_redis import (Add, AsyncJwksClient, AsyncKeyCache, JwksClient, KeyCache, KeyStore,
                        Promote, Retire, UnknownSigningKey)
from jwks_redis._cache_core import CacheCore
from jwks_redis.endpoint import make_app

KEY = "jwks:{auth}"


@pytest.fixture
def keys(tmp_path):
    return KeyStore(tmp_path / "keys")


def token(keys: KeyStore, kid: str) -> str:
    return jwt.encode({"sub": "u"}, keys.private_key(kid), algorithm="ES256",
                      headers={"kid": kid})


def bootstrap(c: JwksClient, keys: KeyStore, key: str = KEY) -> str:
    a = keys.generate()
    c.rotate(key, [Add(a), Promote(a["kid"])])
    return a["kid"]


def verifier(c: JwksClient, ack_id: str, key: str = KEY):
    return next((v for v in c.verifiers(key) if v["id"] == ack_id), None)


def held_by(c: JwksClient, ack_id: str, generation: int, key: str = KEY):
    v = verifier(c, ack_id, key)
    return v is not None and v["generation"] == generation


def acl_user(server, name: str, rules: list) -> redis.Redis:
    server.client().execute_command("ACL", "SETUSER", name, "on", f">{name}-pw", *rules)
    return redis.Redis(host="127.0.0.1", port=server.port, username=name,
                       password=f"{name}-pw", socket_timeout=5)


def drop_events(monkeypatch, pubsub_class, count=None, is_async=False):
    """Loses change events on the way (all, or the first `count`); returns how many."""
    lost = {"n": 0}
    real = pubsub_class.get_message

    def keep(message) -> bool:
        if message is not None and message.get("type") in ("smessage", b"smessage") and \
                (count is None or lost["n"] < count):
            lost["n"] += 1
            return False
        return True

    if is_async:
        async def losing(self, *args, **kwargs):
            message = await real(self, *args, **kwargs)
            return message if keep(message) else None
    else:
        def losing(self, *args, **kwargs):
            message = real(self, *args, **kwargs)
            return message if keep(message) else None
    monkeypatch.setattr(pubsub_class, "get_message", losing)
    return lost


# --------------------------------------------------------------------------- KeyCache


def test_keycache_acks_after_every_load_and_every_third_of_its_ttl(server, keys):
    c = JwksClient(server.client())
    first = bootstrap(c, keys)
    with KeyCache(server.client(), KEY, ack_id="svc-a", ack_ttl=1.5) as cache:
        assert cache.wait_ready(5)
        t0 = time.monotonic()
        wait_until(lambda: held_by(c, "svc-a", 1), 1, "the ack after the first load")
        assert time.monotonic() - t0 < 0.3
        v = verifier(c, "svc-a")
        assert v["current"] == 1 and v["ttl_ms"] <= 1500
        # A rotation: the reload after its event is acked within milliseconds.
        b = keys.generate()
        r = c.rotate(KEY, [Add(b), Promote(b["kid"]), Retire(first)])
        t0 = time.monotonic()
        wait_until(lambda: held_by(c, "svc-a", r.generation), 1, "the ack of the new generation")
        assert time.monotonic() - t0 < 0.3
        # Re-acked every 0.5 s: still live well past its 1.5 s TTL, never older than a period.
        acks = cache.stats()["acks"]
        end = time.monotonic() + 3.2
        while time.monotonic() < end:
            v = verifier(c, "svc-a")
            assert v is not None and v["age_ms"] <= 800, v
            time.sleep(0.1)
        assert cache.stats()["acks"] - acks >= 5
        s = cache.stats()
        assert s["ack_id"] == "svc-a" and s["acked_generation"] == r.generation
        assert s["ack_errors"] == 0 and s["missed_events"] == 0
        assert cache.get_signing_key(b["kid"]).key_id == b["kid"]
    # Closed: no more acks, the module forgets it after its TTL.
    wait_until(lambda: verifier(c, "svc-a") is None, 2.5, "the ack to expire")


def test_default_ack_id_is_host_pid_object_and_ack_false_sends_none(server, keys):
    c = JwksClient(server.client())
    bootstrap(c, keys)
    with KeyCache(server.client(), KEY) as a, KeyCache(server.client(), KEY) as b, \
            KeyCache(server.client(), KEY, ack=False) as quiet:
        assert a.wait_ready(5) and b.wait_ready(5) and quiet.wait_ready(5)
        for cache in (a, b):
            host, pid, obj = cache.stats()["ack_id"].rsplit(":", 2)
            assert (host, pid, obj) == (socket.gethostname(), str(os.getpid()), f"{id(cache):x}")
        ids = {a.stats()["ack_id"], b.stats()["ack_id"]}
        wait_until(lambda: {v["id"] for v in c.verifiers(KEY)} == ids, 1, "two acks")
        time.sleep(0.2)
        assert {v["id"] for v in c.verifiers(KEY)} == ids
        assert quiet.stats()["acks"] == 0 and quiet.stats()["ack_id"] is None
    with pytest.raises(ValueError):
        KeyCache(server.client(), KEY, ack_ttl=0.5, start=False)
    with pytest.raises(ValueError):
        KeyCache(server.client(), KEY, ack_id="x" * 129, start=False)


def test_ack_errors_never_break_verification_and_are_logged_once(server, keys, caplog):
    c = JwksClient(server.client())
    kid = bootstrap(c, keys)
    # A verifier role without +jwks.ack: every ack is refused (NOPERM).
    client = acl_user(server, "noack", ["resetkeys", "%R~jwks:*", "resetchannels", "&jwks:*",
                                        "-@all", "+jwks.get", "+jwks.info", "+ssubscribe",
                                        "+sunsubscribe", "+ping"])
    caplog.set_level(logging.WARNING, logger="jwks_redis.keycache")
    with KeyCache(client, KEY, ack_ttl=1.0) as cache:
        assert cache.wait_ready(5)
        tok = token(keys, kid)
        for _ in range(30):
            key = cache.get_signing_key_from_jwt(tok)
            assert jwt.decode(tok, key, algorithms=["ES256"])["sub"] == "u"
            time.sleep(0.05)
        b = keys.generate()
        r = c.rotate(KEY, [Add(b), Promote(b["kid"])])
        assert cache.wait_generation(r.generation, 2)
        assert cache.get_signing_key(b["kid"]).key_id == b["kid"]
        s = cache.stats()
        assert s["ack_errors"] >= 3 and s["acks"] == 0 and "NoPermission" in s["ack_error"], s
        assert s["connected"] and s["reconnects"] == 0
    lines = [r for r in caplog.records if "KEYCACHE_ACK_FAILED" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert c.verifiers(KEY) == []


def test_a_replica_refuses_acks_readonly_and_the_cache_goes_on(server, replica, keys):
    c = JwksClient(server.client())
    bootstrap(c, keys)
    with KeyCache(replica.client(), KEY, ack_ttl=1.0) as cache:
        assert cache.wait_ready(5)
        wait_until(lambda: cache.stats()["ack_errors"] >= 1, 2, "a refused ack")
        assert "READONLY" in cache.stats()["ack_error"], cache.stats()
        b = keys.generate()
        r = c.rotate(KEY, [Add(b)])
        assert cache.wait_generation(r.generation, 2)
        assert cache.get_signing_key(b["kid"]).key_id == b["kid"]
    assert c.verifiers(KEY) == []


def test_an_ack_reply_newer_than_the_held_copy_finds_a_missed_event(server, keys, monkeypatch):
    c = JwksClient(server.client())
    bootstrap(c, keys)
    lost = drop_events(monkeypatch, redis.client.PubSub)  # every event lost; TTL is 1 h
    with KeyCache(server.client(), KEY, ack_id="deaf", ack_ttl=1.5) as cache:
        assert cache.wait_ready(5)
        wait_until(lambda: held_by(c, "deaf", 1), 1, "the first ack")
        b = keys.generate()
        r = c.rotate(KEY, [Add(b), Promote(b["kid"])])
        t0 = time.monotonic()
        # The next ack (within 0.5 s) replies 2; a second later no event has brought it:
        # the cache reloads and acks the new generation.
        wait_until(lambda: cache.generation == r.generation, 3, "the reload")
        assert time.monotonic() - t0 < 2.0
        wait_until(lambda: held_by(c, "deaf", r.generation), 1, "the ack of the reload")
        s = cache.stats()
        assert lost["n"] >= 1 and s["missed_events"] == 1 and s["ttl_loads"] == 0, s
        assert cache.get_signing_key(b["kid"]).key_id == b["kid"]


def test_an_event_after_a_lost_one_is_a_generation_jump(server, keys, monkeypatch, caplog):
    c = JwksClient(server.client())
    bootstrap(c, keys)
    lost = drop_events(monkeypatch, redis.client.PubSub, count=1)
    caplog.set_level(logging.WARNING, logger="jwks_redis.keycache")
    with KeyCache(server.client(), KEY, ack=False) as cache:
        assert cache.wait_ready(5)
        c.rotate(KEY, [Add(keys.generate())])  # its event is lost
        wait_until(lambda: lost["n"] == 1, 2, "the lost event")
        b = keys.generate()
        r = c.rotate(KEY, [Add(b)])  # generation 3 after a held 1
        assert cache.wait_generation(r.generation, 2)
        assert cache.stats()["missed_events"] == 1
        assert any("KEYCACHE_MISSED_EVENT" in x.getMessage() and "3 after 1" in x.getMessage()
                   for x in caplog.records)


def test_an_event_with_another_etag_for_the_held_generation_counts_as_missed():
    core = CacheCore(KEY, miss_interval=1, stale_wait=1, max_stale=None, refresh_grace=0.1,
                     on_change=None)
    from jwks_redis.client import JwksDocument
    core.install(1, 0, time.monotonic(), JwksDocument('{"keys":[]}', '"e1"', 4, 1000))
    core.deliver([{"event": "invalidated", "generation": 4, "etag": '"e1"'}], time.monotonic())
    assert core.counters["missed_events"] == 0
    core.deliver([{"event": "rotated", "generation": 5, "etag": '"e2"'}], time.monotonic())
    assert core.counters["missed_events"] == 0
    core.deliver([{"event": "rotated", "generation": 4, "etag": '"e9"'}], time.monotonic())
    assert core.counters["missed_events"] == 1
    # Another key set at the name: any generation, and the next event counts from it.
    core.deliver([{"event": "replaced", "generation": 40, "etag": '"x"'}], time.monotonic())
    core.deliver([{"event": "rotated", "generation": 41, "etag": '"y"'}], time.monotonic())
    assert core.counters["missed_events"] == 1
    core.deliver([{"event": "rotated", "generation": 43, "etag": '"z"'}], time.monotonic())
    assert core.counters["missed_events"] == 2


def test_unknown_kids_reach_the_module_rate_limited_and_reload_only_when_published(server, keys):
    r = server.client()
    c = JwksClient(r)
    bootstrap(c, keys)
    name = f"jwt_jwks_keyset_unknown_kid_lookups_total:0:{KEY}"
    with KeyCache(server.client(), KEY, miss_interval=0.3) as cache:
        assert cache.wait_ready(5)
        loads = cache.stats()["loads"]
        t0 = time.monotonic()
        for i in range(200):
            with pytest.raises(UnknownSigningKey):
                cache.get_signing_key(f"forged-{i}")
            time.sleep(0.005)
        elapsed = time.monotonic() - t0
        s = cache.stats()
        # Each rate-limited miss asks JWKS.KEY (the module counts it) and reloads nothing.
        assert 2 <= s["miss_loads"] <= 1 + int(elapsed / 0.3) + 1
        assert c.stats()[name] == s["miss_loads"]
        assert s["loads"] == loads
        # A kid published while its event was lost: JWKS.KEY finds it, one reload brings it.
        b = keys.generate()
        time.sleep(0.31)
        r.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        c.rotate(KEY, [Add(b)])
        assert cache.get_signing_key(b["kid"]).key_id == b["kid"]
        assert c.stats()[name] == s["miss_loads"]  # a published kid is no unknown lookup


# --------------------------------------------------------------------------- AsyncKeyCache


def test_async_key_cache_acks_re_acks_and_finds_a_missed_event(server, keys, monkeypatch):
    c = JwksClient(server.client())
    bootstrap(c, keys)

    async def run():
        client = redis.asyncio.Redis(host="127.0.0.1", port=server.port)
        ac = AsyncJwksClient(client)
        async with AsyncKeyCache(client, KEY, ack_id="async-a", ack_ttl=1.5) as cache:
            assert await cache.wait_ready(5)
            for _ in range(1000):
                if any(v["id"] == "async-a" and v["generation"] == 1
                       for v in await ac.verifiers(KEY)):
                    break
                await asyncio.sleep(0.001)
            else:
                raise AssertionError("no ack after the first load")
            b = keys.generate()
            r = await ac.rotate(KEY, [Add(b), Promote(b["kid"])])
            assert await cache.wait_generation(r.generation, 2)
            await asyncio.sleep(0.1)
            assert next(v for v in await ac.verifiers(KEY)
                        if v["id"] == "async-a")["generation"] == r.generation
            acks = cache.stats()["acks"]
            await asyncio.sleep(2.0)  # past the TTL: re-acked every 0.5 s
            v = next(v for v in await ac.verifiers(KEY) if v["id"] == "async-a")
            assert v["age_ms"] <= 800 and cache.stats()["acks"] - acks >= 3
            # Events lost from now on: the ack's reply finds the next change.
            drop_events(monkeypatch, redis.asyncio.client.PubSub, is_async=True)
            await asyncio.sleep(0.3)  # the read under way (at most 0.25 s) is not the patched one
            n = keys.generate()
            r = await ac.rotate(KEY, [Add(n)])
            for _ in range(300):
                if cache.generation == r.generation:
                    break
                await asyncio.sleep(0.01)
            assert cache.generation == r.generation
            assert cache.stats()["missed_events"] == 1
        # A user without +jwks.ack: verification unaffected, errors counted.
        server.client().execute_command(
            "ACL", "SETUSER", "anoack", "on", ">pw", "resetkeys", "%R~jwks:*", "resetchannels",
            "&jwks:*", "-@all", "+jwks.get", "+ssubscribe", "+sunsubscribe", "+ping")
        limited = redis.asyncio.Redis(host="127.0.0.1", port=server.port, username="anoack",
                                      password="pw")
        async with AsyncKeyCache(limited, KEY, ack_ttl=1.0) as cache:
            assert await cache.wait_ready(5)
            assert (await cache.get_signing_key(n["kid"])).key_id == n["kid"]
            await asyncio.sleep(0.8)
            s = cache.stats()
            assert s["ack_errors"] >= 2 and s["acks"] == 0 and "NoPermission" in s["ack_error"]
            assert s["connected"] and s["reconnects"] == 0
        await limited.aclose()
        await client.aclose()

    asyncio.run(run())


# --------------------------------------------------------------------------- cluster


def test_cluster_acks_go_to_the_slot_owner_and_follow_a_slot_move(cluster, keys):
    from test_keycache import _move_slot
    rc = cluster.client()
    c = JwksClient(rc)
    key = "jwks:{acks-move}"
    bootstrap(c, keys, key)

    async def run_async(stop: threading.Event, seen: dict):
        arc = redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
        async with AsyncKeyCache(arc, key, ack_id="mover-async", ack_ttl=1.5) as cache:
            assert await cache.wait_ready(5)
            while not stop.is_set():
                seen["generation"] = cache.generation
                seen["stats"] = cache.stats()
                await asyncio.sleep(0.005)
        await arc.aclose()

    stop, seen = threading.Event(), {}
    t = threading.Thread(target=lambda: asyncio.run(run_async(stop, seen)))
    t.start()
    try:
        with KeyCache(cluster.client(), key, ack_id="mover", ack_ttl=1.5) as cache:
            assert cache.wait_ready(5)
            wait_until(lambda: held_by(c, "mover", 1, key) and held_by(c, "mover-async", 1, key),
                       2, "acks on the owner")
            src = cluster.owner(key)
            dst = next(n for n in cluster.nodes if n is not src)
            _move_slot(cluster, key, src, dst)
            # The old owner ends both subscriptions: each cache resubscribes on the new owner,
            # reloads, and acks there (acks are not migrated with the key set).
            wait_until(lambda: cache.stats()["reconnects"] >= 1 and cache.connected, 5,
                       "the sync cache to resubscribe")
            wait_until(lambda: seen.get("stats", {}).get("reconnects", 0) >= 1
                       and seen["stats"]["connected"], 5, "the async cache to resubscribe")
            for n in (dst,):
                wait_until(lambda: int(n.client().execute_command(
                    "PUBSUB", "SHARDNUMSUB", cache.channel)[1]) == 2, 5, "both on the new owner")
            wait_until(lambda: held_by(c, "mover", 1, key) and held_by(c, "mover-async", 1, key),
                       2, "acks on the new owner")
            new = keys.generate()
            r = c.rotate(key, [Add(new), Promote(new["kid"])])
            assert cache.wait_generation(r.generation, 2)
            wait_until(lambda: seen["generation"] == r.generation, 2, "the async cache's event")
            wait_until(lambda: held_by(c, "mover", r.generation, key)
                       and held_by(c, "mover-async", r.generation, key), 2, "acks of the new one")
            assert cache.get_signing_key(new["kid"]).key_id == new["kid"]
    finally:
        stop.set()
        t.join(10)


def test_a_lost_sunsubscribe_is_caught_by_the_acks_moved_reply(cluster, keys, monkeypatch):
    """The server's SUNSUBSCRIBE after a slot move is lost: the subscription sits on a node
    that will never publish the key set's events again. The next ack is redirected (MOVED):
    the cache resubscribes on the new owner within ack_ttl / 3."""
    from test_keycache import _move_slot
    real = redis.client.PubSub.get_message
    losing_on = {"on": True}

    def losing(self, *args, **kwargs):
        # Events too (MIGRATE's own event would otherwise trigger a reload, redirected
        # with ASK, which also resubscribes): only the ack is left to notice.
        message = real(self, *args, **kwargs)
        if losing_on["on"] and message is not None and message.get("type") in (
                "sunsubscribe", b"sunsubscribe", "smessage", b"smessage"):
            return None
        return message

    monkeypatch.setattr(redis.client.PubSub, "get_message", losing)
    c = JwksClient(cluster.client())
    key = "jwks:{acks-lost-sunsub}"
    bootstrap(c, keys, key)
    with KeyCache(cluster.client(), key, ack_id="stuck", ack_ttl=1.5) as cache:
        assert cache.wait_ready(5) and cache.wait_acked(5)
        src = cluster.owner(key)
        dst = next(n for n in cluster.nodes if n is not src)
        _move_slot(cluster, key, src, dst)
        t0 = time.monotonic()
        wait_until(lambda: cache.stats()["reconnects"] >= 1 and cache.connected, 3,
                   "the resubscription after a redirected ack")
        assert time.monotonic() - t0 < 1.5
        assert cache.stats()["ack_errors"] >= 1 and "MovedError" in cache.stats()["ack_error"]
        losing_on["on"] = False
        wait_until(lambda: int(dst.client().execute_command(
            "PUBSUB", "SHARDNUMSUB", cache.channel)[1]) == 1, 3, "the subscription on the owner")
        new = keys.generate()
        r = c.rotate(key, [Add(new)])
        assert cache.wait_generation(r.generation, 2)
        wait_until(lambda: held_by(c, "stuck", r.generation, key), 2, "acks on the new owner")


def test_cluster_failover_resubscribes_on_the_new_primary_and_acks_there(cluster_with_replicas,
                                                                          keys):
    cl = cluster_with_replicas
    c = JwksClient(cl.client())
    key = "jwks:{failover}"
    bootstrap(c, keys, key)

    async def run_async(stop: threading.Event, seen: dict):
        arc = redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=cl.nodes[0].port)
        async with AsyncKeyCache(arc, key, ack_id="fo-async", ack_ttl=1.5) as cache:
            assert await cache.wait_ready(5)
            while not stop.is_set():
                seen["generation"] = cache.generation
                seen["stats"] = cache.stats()
                await asyncio.sleep(0.005)
        await arc.aclose()

    stop, seen = threading.Event(), {}
    t = threading.Thread(target=lambda: asyncio.run(run_async(stop, seen)))
    t.start()
    try:
        with KeyCache(cl.client(), key, ack_id="fo", ack_ttl=1.5) as cache:
            assert cache.wait_ready(5)
            wait_until(lambda: held_by(c, "fo", 1, key) and held_by(c, "fo-async", 1, key), 2,
                       "acks on the primary")
            old = cl.owner(key)
            new_primary = cl.replica_of(old)
            assert old.client().execute_command("WAIT", 1, 5000) == 1  # the replica has it
            new_primary.client().execute_command("CLUSTER", "FAILOVER")
            wait_until(lambda: new_primary.client().info("replication")["role"] == "master",
                       10, "the failover")
            wait_until(lambda: cache.stats()["reconnects"] >= 1 and cache.connected, 10,
                       "the sync cache to resubscribe")
            wait_until(lambda: seen.get("stats", {}).get("reconnects", 0) >= 1
                       and seen["stats"]["connected"], 10, "the async cache to resubscribe")
            wait_until(lambda: int(new_primary.client().execute_command(
                "PUBSUB", "SHARDNUMSUB", cache.channel)[1]) == 2, 10, "both on the new primary")
            # The new primary learns the fleet from the acks after the resubscription.
            wait_until(lambda: held_by(c, "fo", 1, key) and held_by(c, "fo-async", 1, key), 3,
                       "acks on the new primary")
            n = keys.generate()
            t0 = time.monotonic()
            r = c.rotate(key, [Add(n), Promote(n["kid"])])
            assert cache.wait_generation(r.generation, 2)
            wait_until(lambda: seen["generation"] == r.generation, 2, "the async cache's event")
            assert time.monotonic() - t0 < 1.0
            assert cache.get_signing_key(n["kid"]).key_id == n["kid"]
            assert cache.stats()["missed_events"] == 0
    finally:
        stop.set()
        t.join(10)


# --------------------------------------------------------------------------- the endpoint


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def serve(app):
    httpd = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_port}/.well-known/jwks.json"


def get(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.headers, r.read()


def test_the_endpoint_acks_the_oldest_generation_an_http_client_may_hold(server, keys):
    c = JwksClient(server.client())
    bootstrap(c, keys)
    app = make_app(server.client(), KEY, max_age=2, jitter=0, ack_id="http:test", ack_ttl=1.5,
                   status=False)
    httpd, url = serve(app)
    try:
        t_first = time.monotonic()
        status, headers, _ = get(url)
        assert status == 200 and headers["Cache-Control"] == "public, max-age=2"
        wait_until(lambda: held_by(c, "http:test", 1), 1, "the endpoint's first ack")
        b = keys.generate()
        r = c.rotate(KEY, [Add(b), Promote(b["kid"])])
        status, headers, body = get(url)
        assert b["kid"].encode() in body
        # A client may hold generation 1 for its max-age (2 s from the first response):
        # the endpoint keeps acking 1 (re-acked past its 1.5 s TTL) ...
        while time.monotonic() < t_first + 2 - 0.1:
            assert held_by(c, "http:test", 1), c.verifiers(KEY)
            time.sleep(0.05)
        # ... then the generation it serves.
        wait_until(lambda: held_by(c, "http:test", r.generation), 1.0, "the ack of the new one")
        # Nothing served since: it acks the generation it would serve now.
        n = keys.generate()
        r3 = c.rotate(KEY, [Add(n)])
        wait_until(lambda: held_by(c, "http:test", r3.generation), 3, "the served-now ack")
        assert app.acker.stats()["ack_errors"] == 0
    finally:
        httpd.shutdown()
        app.acker.close()
    # Turned off: no acks.
    quiet = make_app(server.client(), KEY, max_age=2, ack=False, status=False)
    assert quiet.acker is None


def test_jwks_endpoint_command_acks_as_http_host_port(server, keys, tmp_path):
    import subprocess
    import sys
    from conftest import ROOT
    c = JwksClient(server.client())
    bootstrap(c, keys)
    port = free_port()
    log = tmp_path / "endpoint.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jwks_redis.endpoint", "--redis-url", server.url(), "--key",
             KEY, "--bind", f"127.0.0.1:{port}", "--max-age", "1", "--ack-ttl", "1.5"],
            cwd=ROOT / "python", stdout=f, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT / "python")})
    try:
        wait_until(lambda: b"Serving on" in log.read_bytes() or proc.poll() is not None, 30,
                   "the endpoint")
        assert proc.poll() is None, log.read_text()
        ack_id = f"http:{socket.gethostname()}:{port}"
        # Acks at start (nothing served yet: the generation it serves now), and only its
        # own ID: its KeyCache does not ack.
        wait_until(lambda: held_by(c, ack_id, 1), 3, "the endpoint's ack")
        assert [v["id"] for v in c.verifiers(KEY)] == [ack_id]
        get(f"http://127.0.0.1:{port}/.well-known/jwks.json")
        b = keys.generate()
        r = c.rotate(KEY, [Add(b)])
        wait_until(lambda: held_by(c, ack_id, r.generation), 3, "the new generation acked")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert "Traceback" not in log.read_text()


# --------------------------------------------------------------------------- CONFIRM


def test_confirm_promotes_once_the_keycaches_and_the_endpoints_clients_hold_the_key(server,
                                                                                    keys):
    """The point of acks: under CONFIRM 100 a next key is promoted as soon as every live
    verifier holds it: within milliseconds for a KeyCache fleet, and only once the longest
    max-age the endpoint handed out for the older document has passed."""
    c = JwksClient(server.client())
    bootstrap(c, keys)
    policy = c.policy(KEY, promote_after_ms=60_000, confirm_pct=100, min_wait_ms=0)
    assert (policy.confirm_pct, policy.min_wait_ms) == (100, 0)
    caches = [KeyCache(server.client(), KEY, ack_id=f"fleet-{i}", ack_ttl=1.5) for i in range(3)]
    try:
        for cache in caches:
            assert cache.wait_ready(5) and cache.wait_acked(5)
        b = keys.generate()
        t0 = time.monotonic()
        c.rotate(KEY, [Add(b)])
        wait_until(lambda: c.info(KEY).current == b["kid"], 2, "the confirmed promotion")
        assert time.monotonic() - t0 < 1.0
        for cache in caches:
            assert cache.wait_generation(c.info(KEY).generation, 2)

        # An endpoint whose HTTP clients hold the document for 2 s.
        app = make_app(server.client(), KEY, max_age=2, jitter=0, ack_id="http:confirm",
                       ack_ttl=1.5, status=False)
        httpd, url = serve(app)
        try:
            t_get = time.monotonic()
            get(url)
            wait_until(lambda: verifier(c, "http:confirm") is not None, 1, "the endpoint's ack")
            n = keys.generate()
            c.rotate(KEY, [Add(n)])
            info = c.info(KEY)
            assert info.verifiers == 4 and info.confirmation["kid"] == n["kid"]
            assert info.confirmation["needed"] >= 1 and info.confirmation["confirmed"] == 0
            while time.monotonic() < t_get + 2 - 0.15:
                assert c.info(KEY).current == b["kid"], "promoted before the max-age ran out"
                time.sleep(0.05)
            wait_until(lambda: c.info(KEY).current == n["kid"], 1.5,
                       "the promotion once the HTTP clients' max-age ran out")
        finally:
            httpd.shutdown()
            app.acker.close()
    finally:
        for cache in caches:
            cache.close()


def test_acks_name_the_document_and_a_stale_answer_reloads():
    """The ack carries the held document's ETag; the module's STALE answer (the document is
    another key set's, once at this name, whose generations repeat) makes the cache reload,
    and a redirect makes it resubscribe."""
    from jwks_redis._cache_core import Acker

    a = Acker("jwks:{t}", "host:1:a", 30.0)
    assert a.command(4, '"abc"')[-2:] == ["ETAG", '"abc"']
    assert "ETAG" not in a.command(4)
    stale = redis.ResponseError("STALE ETag '\"abc\"' is not the document of this key set's "
                                   "generation 4: the verifier holds a key set once at this name; reload")
    assert a.failed(stale) == "reload"
    assert a.failed(redis.ResponseError("MOVED 1234 127.0.0.1:7000")) == "resubscribe"
    assert a.failed(redis.ResponseError("NOPERM no permissions")) is None
    assert a.stats()["ack_errors"] == 3


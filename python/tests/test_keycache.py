"""KeyCache and AsyncKeyCache against real servers: a standalone primary, a replica and a
3-primary cluster. Timings are ms-scale; every wait is bounded."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import jwt
import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster

from conftest import command_calls, wait_until
from jwks_redis import (Add, AsyncKeyCache, JwksClient, KeyCache, KeyCacheStale, Promote,
                        Retire, UnknownSigningKey)
from jwks_redis import KeyStore

KEY = "jwks:{auth}"


@pytest.fixture
def keys(tmp_path):
    return KeyStore(tmp_path / "keys")


def token(keys: KeyStore, kid: str, **claims) -> str:
    return jwt.encode({"sub": "u", **claims}, keys.private_key(kid), algorithm="ES256",
                      headers={"kid": kid})


def bootstrap(c: JwksClient, keys: KeyStore, key: str = KEY) -> str:
    a = keys.generate()
    c.rotate(key, [Add(a), Promote(a["kid"])])
    return a["kid"]


def test_follows_rotations_within_milliseconds_and_verifies_with_pyjwt(server, keys):
    c = JwksClient(server.client())
    first = bootstrap(c, keys)
    with KeyCache(server.client(), KEY) as cache:
        assert cache.wait_ready(5) and cache.generation == 1
        tok = token(keys, first)
        key = cache.get_signing_key_from_jwt(tok)
        assert isinstance(key, jwt.PyJWK) and key.key_id == first
        assert jwt.decode(tok, key, algorithms=["ES256"])["sub"] == "u"
        lags = []
        prev = first
        for _ in range(10):
            b = keys.generate()
            t0 = time.monotonic()
            r = c.rotate(KEY, [Add(b), Promote(b["kid"]), Retire(prev)])
            wait_until(lambda: cache.generation == r.generation, 2, "the new generation")
            lags.append(time.monotonic() - t0)
            assert cache.get_signing_key(b["kid"]).key_id == b["kid"]
            with pytest.raises(UnknownSigningKey):
                cache.get_signing_key(prev)  # retired: gone with the reload after its event
            prev = b["kid"]
        assert max(lags) < 0.5, lags
        s = cache.stats()
        assert s["events"] == 10 and s["reconnects"] == 0 and s["connected"]
        # A token without kid, and a deleted key set.
        with pytest.raises(jwt.PyJWKClientError):
            cache.get_signing_key_from_jwt(jwt.encode({"a": 1}, keys.private_key(prev), "ES256"))
        server.client().delete(KEY)
        wait_until(lambda: cache.snapshot.exists is False, 2, "the deletion")
        with pytest.raises(UnknownSigningKey):
            cache.get_signing_key(prev)


def test_events_and_concurrent_reloads_coalesce(server, keys):
    r = server.client()
    c = JwksClient(r)
    bootstrap(c, keys)
    with KeyCache(server.client(), KEY) as cache:
        assert cache.wait_ready(5)
        # 20 changes in one transaction: 20 events arrive together, one or two reloads.
        before = command_calls(r, "jwks.get")
        pipe = r.pipeline(transaction=True)
        for _ in range(20):
            pipe.execute_command("JWKS.ROTATE", KEY, "ADD", _json(keys.generate()))
        pipe.execute()
        wait_until(lambda: cache.generation == 21, 2, "generation 21")
        time.sleep(0.05)
        assert cache.stats()["events"] == 20
        assert command_calls(r, "jwks.get") - before <= 2
        # 16 threads asking for a reload at once (the reload lock is held here until all
        # 16 asked): one reload serves them all.
        before = command_calls(r, "jwks.get")
        cache._load_lock.acquire()
        threads = [threading.Thread(target=cache.refresh) for _ in range(16)]
        try:
            for t in threads:
                t.start()
            time.sleep(0.1)
        finally:
            cache._load_lock.release()
        for t in threads:
            t.join()
        assert command_calls(r, "jwks.get") - before == 1
        assert cache.stats()["coalesced"] >= 15


def test_unknown_kids_cannot_stampede_redis(server, keys):
    r = server.client()
    bootstrap(JwksClient(r), keys)
    with KeyCache(server.client(), KEY, miss_interval=0.3) as cache:
        assert cache.wait_ready(5)
        before = command_calls(r, "jwks.get")
        errors = []

        def garbage():
            for i in range(100):
                try:
                    cache.get_signing_key(f"garbage-{random.random()}")
                except UnknownSigningKey as e:
                    errors.append(e)

        threads = [threading.Thread(target=garbage) for _ in range(8)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        assert len(errors) == 800
        # At most one reload per started interval.
        assert command_calls(r, "jwks.get") - before <= 1 + int(elapsed / 0.3)
        time.sleep(0.31)
        with pytest.raises(UnknownSigningKey):
            cache.get_signing_key("garbage-again")
        assert cache.stats()["miss_loads"] <= 2 + int(elapsed / 0.3)


def test_a_key_published_while_events_were_lost_is_found_by_one_miss_reload(server, keys):
    r = server.client()
    c = JwksClient(r)
    bootstrap(c, keys)
    with KeyCache(server.client(), KEY, miss_interval=0.2, backoff=(0.6, 0.6)) as cache:
        assert cache.wait_ready(5)
        # The subscription is dropped (and reconnects only after 0.3-0.6 s), so the event of
        # this change is lost: the only way to learn the new key now is the miss reload.
        b = keys.generate()
        r.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        c.rotate(KEY, [Add(b)])
        found = cache.get_signing_key(b["kid"])
        assert found.key_id == b["kid"] and cache.stats()["miss_loads"] == 1


def test_reconnect_reloads_in_full(server, keys):
    r = server.client()
    c = JwksClient(r)
    bootstrap(c, keys)
    with KeyCache(server.client(), KEY) as cache:
        assert cache.wait_ready(5)
        events = cache.stats()["events"]
        # Kill the subscription and change the key set in the same round trip: its event
        # goes to nobody; the reload after resubscribing must bring the change.
        pipe = r.pipeline(transaction=False)
        pipe.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        pipe.execute_command("JWKS.ROTATE", KEY, "ADD", _json(keys.generate()))
        pipe.execute()
        wait_until(lambda: cache.generation == 2, 3, "the reload after reconnecting")
        s = cache.stats()
        assert s["reconnects"] == 1 and s["events"] == events and s["connected"]
        # A restarted server (nothing persisted: the key set is gone).
        server.kill()
        server.start()
        wait_until(lambda: cache.snapshot.exists is False, 5, "the reload after the restart")
        assert cache.stats()["reconnects"] == 2


def test_ttl_safety_net_catches_a_change_without_event(server, keys, monkeypatch):
    r = server.client()
    r.config_set("jwks.cache-ttl", 1)
    kid = bootstrap(JwksClient(r), keys)
    # Lose every change event on the way (the module announces them all, FLUSHALL too):
    # the reload at the end of the TTL must notice anyway.
    real = redis.client.PubSub.get_message

    def losing(self, *args, **kwargs):
        message = real(self, *args, **kwargs)
        if message is not None and message.get("type") in ("smessage", b"smessage"):
            return None
        return message

    monkeypatch.setattr(redis.client.PubSub, "get_message", losing)
    with KeyCache(server.client(), KEY, refresh_grace=0.05) as cache:
        assert cache.wait_ready(5)
        assert 0 < cache.snapshot.remaining_ttl() <= 1.0
        r.flushall()
        time.sleep(0.1)
        assert cache.get_signing_key(kid).key_id == kid
        wait_until(lambda: cache.snapshot.exists is False, 2, "the TTL reload")
        assert cache.stats()["ttl_loads"] >= 1


def test_lookups_wait_for_the_reload_after_an_event_and_fail_closed(server, keys):
    r = server.client()
    c = JwksClient(r)
    first = bootstrap(c, keys)
    with KeyCache(server.client(), KEY, stale_wait=0.2, timeout=0.3) as cache:
        assert cache.wait_ready(5)
        # Hold every reload back (the server hangs right after publishing): a lookup after
        # the event was read must not answer from the old copy.
        cache._load_lock.acquire()
        try:
            b = keys.generate()
            c.rotate(KEY, [Add(b), Promote(b["kid"]), Retire(first)])
            wait_until(lambda: cache.stats()["events"] == 1, 2, "the event")
            t0 = time.monotonic()
            with pytest.raises(KeyCacheStale):
                cache.get_signing_key(first)
            assert 0.15 < time.monotonic() - t0 < 1.0
        finally:
            cache._load_lock.release()
        wait_until(lambda: cache.generation == 2, 2, "the reload")
        with pytest.raises(UnknownSigningKey):
            cache.get_signing_key(first)
        assert cache.get_signing_key(b["kid"]).key_id == b["kid"]


def test_a_hung_server_keeps_the_keys_unless_max_stale(server, keys):
    r = server.client()
    r.config_set("jwks.cache-ttl", 1)
    kid = bootstrap(JwksClient(r), keys)
    tolerant = KeyCache(server.client(), KEY, timeout=0.2, health_interval=0.2)
    strict = KeyCache(server.client(), KEY, timeout=0.2, max_stale=0.0, health_interval=0.2)
    try:
        assert tolerant.wait_ready(5) and strict.wait_ready(5)
        server.pause()
        try:
            wait_until(lambda: not tolerant.connected and not strict.connected, 3, "PING timeouts")
            time.sleep(max(0.0, strict.snapshot.remaining_ttl()) + 0.05)
            assert tolerant.get_signing_key(kid).key_id == kid
            with pytest.raises(KeyCacheStale):
                strict.get_signing_key(kid)
        finally:
            server.resume()
        wait_until(lambda: strict.connected and strict.fresh, 5, "recovery")
        assert strict.get_signing_key(kid).key_id == kid
    finally:
        tolerant.close()
        strict.close()


def test_replica_reads_and_subscribes_on_the_replica(server, replica, keys):
    c = JwksClient(server.client())
    bootstrap(c, keys)
    rc = replica.client()
    with KeyCache(rc, KEY) as cache:
        assert cache.wait_ready(5)
        wait_until(lambda: cache.generation == 1, 2, "replicated state")
        before = command_calls(rc, "jwks.get")
        primary_before = command_calls(server.client(), "jwks.get")
        b = keys.generate()
        r = c.rotate(KEY, [Add(b), Promote(b["kid"])])
        wait_until(lambda: cache.generation == r.generation, 2, "the replica's event")
        assert cache.get_signing_key(b["kid"]).key_id == b["kid"]
        assert command_calls(rc, "jwks.get") > before
        assert command_calls(server.client(), "jwks.get") == primary_before
        subs = rc.execute_command("PUBSUB", "SHARDNUMSUB", cache.channel)
        assert int(subs[1]) == 1


def test_cluster_subscribes_on_the_slot_owner_and_follows_a_slot_move(cluster, keys):
    rc = cluster.client()
    c = JwksClient(rc)
    for name in ("jwks:{billing}", "plain-a"):
        bootstrap(c, keys, name)
    with KeyCache(rc, "jwks:{billing}") as a, KeyCache(cluster.client(), "plain-a") as b:
        assert a.wait_ready(5) and b.wait_ready(5)
        for cache in (a, b):
            owner = cluster.owner(cache.channel)
            assert int(owner.client().execute_command(
                "PUBSUB", "SHARDNUMSUB", cache.channel)[1]) == 1
            new = keys.generate()
            g = c.rotate(cache.key, [Add(new), Promote(new["kid"])]).generation
            wait_until(lambda: cache.generation == g, 2, f"{cache.key} event")
        # Move plain-a's slot to another primary: the old owner ends the subscription, the
        # cache resubscribes on the new owner, reloads in full and keeps following.
        src = cluster.owner(b.key)
        dst = next(n for n in cluster.nodes if n is not src)
        _move_slot(cluster, b.key, src, dst)
        wait_until(lambda: b.stats()["reconnects"] >= 1 and b.connected, 5, "resubscribe")
        wait_until(lambda: int(dst.client().execute_command(
            "PUBSUB", "SHARDNUMSUB", b.channel)[1]) == 1, 5, "subscription on the new owner")
        new = keys.generate()
        g = c.rotate(b.key, [Add(new)]).generation
        wait_until(lambda: b.generation == g, 3, "event from the new owner")
        assert b.get_signing_key(new["kid"]).key_id == new["kid"]


def test_async_key_cache_standalone_and_cluster(server, cluster, keys):
    c = JwksClient(server.client())
    first = bootstrap(c, keys)
    cc = JwksClient(cluster.client())
    bootstrap(cc, keys, "jwks:{async}")

    async def run():
        client = redis.asyncio.Redis(host="127.0.0.1", port=server.port)
        async with AsyncKeyCache(client, KEY, miss_interval=0.5) as cache:
            assert await cache.wait_ready(5)
            tok = token(keys, first)
            key = await cache.get_signing_key_from_jwt(tok)
            assert jwt.decode(tok, key, algorithms=["ES256"])["sub"] == "u"
            b = keys.generate()
            await asyncio.to_thread(c.rotate, KEY, [Add(b), Promote(b["kid"]), Retire(first)])
            for _ in range(2000):
                if cache.generation == 2:
                    break
                await asyncio.sleep(0.001)
            assert cache.generation == 2
            with pytest.raises(UnknownSigningKey):
                await cache.get_signing_key(first)
            before = cache.stats()["miss_loads"]
            for i in range(50):
                with pytest.raises(UnknownSigningKey):
                    await cache.get_signing_key(f"garbage-{i}")
            assert cache.stats()["miss_loads"] - before <= 1
            await client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            for _ in range(3000):
                if cache.stats()["reconnects"] == 1 and cache.connected:
                    break
                await asyncio.sleep(0.001)
            assert cache.stats()["reconnects"] == 1
        await client.aclose()
        rc = redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
        async with AsyncKeyCache(rc, "jwks:{async}") as cache:
            assert await cache.wait_ready(5) and cache.generation == 1
            n = keys.generate()
            await asyncio.to_thread(cc.rotate, "jwks:{async}", [Add(n)])
            for _ in range(2000):
                if cache.generation == 2:
                    break
                await asyncio.sleep(0.001)
            assert (await cache.get_signing_key(n["kid"])).key_id == n["kid"]
        await rc.aclose()

    asyncio.run(run())


def test_sync_and_async_caches_have_the_same_lookups():
    import inspect
    for name in ("get_signing_key", "get_signing_key_from_jwt", "get_signing_keys", "refresh",
                 "stats", "recent_events", "wait_ready", "wait_acked"):
        assert inspect.signature(getattr(KeyCache, name)) == \
            inspect.signature(getattr(AsyncKeyCache, name)), name
    for name in ("snapshot", "generation", "etag", "connected", "fresh"):
        assert isinstance(getattr(AsyncKeyCache, name), property)
        assert isinstance(getattr(KeyCache, name), property)


# --------------------------------------------------------------------------- helpers


def _json(jwk: dict) -> str:
    import json
    return json.dumps(jwk, separators=(",", ":"))


def _move_slot(cluster, key: str, src, dst) -> None:
    """CLUSTER SETSLOT IMPORTING/MIGRATING, MIGRATE the slot's keys in one call, then
    SETSLOT NODE on every node (what `redis-cli --cluster reshard` does)."""
    s, d = src.client(), dst.client()
    slot = s.execute_command("CLUSTER", "KEYSLOT", key)
    src_id, dst_id = s.execute_command("CLUSTER", "MYID"), d.execute_command("CLUSTER", "MYID")
    d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    names = s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
    if names:
        s.execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", *names)
    for n in [dst, src] + [n for n in cluster.nodes if n not in (src, dst)]:
        n.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    wait_until(lambda: cluster.owner(key) is dst, 5, "the slot move")

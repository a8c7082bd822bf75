import asyncio
import inspect
import json
import time

import pytest
import redis
import redis.asyncio

import jwks_redis
from jwks_redis import (Add, AsyncJwksClient, GenerationMismatch, InvalidJwk, JwksClient,
                        Promote, Replace, Retire, UnknownKid, invalidate_jwks_cache_sync)
from jwks_redis.invalidation import INVALIDATION_ERRORS, INVALIDATIONS
from jwks_redis import KeyStore

KEY = "jwks:{auth}"


def test_rotation_cycle_and_audit(server, tmp_path):
    c = JwksClient(server.client())
    keys = KeyStore(tmp_path / "keys")
    a, b = keys.generate(), keys.generate()
    r = c.rotate(KEY, [Add(a), Promote(a["kid"])], if_gen=0, reason="bootstrap")
    assert (r.generation, r.current, r.published) == (1, a["kid"], [a["kid"]])
    assert json.loads(c.get(KEY))["keys"][0]["kid"] == a["kid"]
    r = c.rotate(KEY, [Add(b)], if_gen=1)
    assert r.cache_deleted and r.invalidated
    c.rotate(KEY, [Promote(b["kid"])], if_gen=2)
    r = c.rotate(KEY, [Retire(a["kid"])], if_gen=3)
    assert r.published == [b["kid"]]
    info = c.info(KEY)
    assert info.current == b["kid"] and info.generation == 4
    assert info.counters["jwt_jwks_rotations_total"] == 4
    assert info.derived_keys["audit"] == "jwks:{auth}:audit"
    actions = [e.action for e in c.audit(KEY)]
    assert actions.count("JWKS_CACHE_INVALIDATED") == 4
    assert c.audit(KEY)[0].fields["reason"] == "bootstrap"
    assert c.stats()["jwt_jwks_rotations_total"] == 4


def test_errors_become_exceptions(server, tmp_path):
    c = JwksClient(server.client())
    a = KeyStore(tmp_path / "keys").generate()
    c.rotate(KEY, [Add(a), Promote(a["kid"])])
    with pytest.raises(GenerationMismatch):
        c.rotate(KEY, [Retire("x")], if_gen=0)
    with pytest.raises(UnknownKid):
        c.rotate(KEY, [Retire("nope")])
    with pytest.raises(InvalidJwk):
        c.rotate(KEY, [Add(dict(a, kid="p", d="AAAA"))])
    with pytest.raises(InvalidJwk):
        c.rotate(KEY, [Replace([{"kty": "oct", "k": "AAAA"}])])


def test_async_client(server, tmp_path):
    a = KeyStore(tmp_path / "keys").generate()

    async def run():
        client = redis.asyncio.Redis(host="127.0.0.1", port=server.port)
        c = AsyncJwksClient(client)
        r = await c.rotate(KEY, [Add(a), Promote(a["kid"])], if_gen=0)
        assert r.current == a["kid"]
        assert a["kid"] in await c.get(KEY)
        assert await c.invalidate(KEY, "test") is True
        assert (await c.info(KEY)).generation == 1
        assert (await c.audit(KEY))[-1].fields["reason"] == "test"
        with pytest.raises(GenerationMismatch):
            await c.rotate(KEY, [Retire(a["kid"])], if_gen=7)
        await client.aclose()

    asyncio.run(run())


def test_invalidate_jwks_cache_sync_never_raises(server, caplog, tmp_path, monkeypatch):
    caplog.set_level("INFO")
    client = server.client()
    a = KeyStore(tmp_path / "keys").generate()
    JwksClient(client).rotate(KEY, [Add(a), Promote(a["kid"])])
    ok_before, err_before = INVALIDATIONS._value.get(), INVALIDATION_ERRORS._value.get()
    assert invalidate_jwks_cache_sync("deploy", client=client, key=KEY) is True
    assert INVALIDATIONS._value.get() == ok_before + 1
    assert any(r.levelname == "INFO" and "JWKS_CACHE_INVALIDATED" in r.message for r in caplog.records)
    # The key set and the server from the environment.
    monkeypatch.setenv("JWKS_KEY_SET", KEY)
    monkeypatch.setenv("JWKS_REDIS_URL", server.url())
    assert invalidate_jwks_cache_sync("deploy") is True
    assert JwksClient(client).audit(KEY)[-1].fields["reason"] == "deploy"
    server.kill()
    assert invalidate_jwks_cache_sync("deploy", client=client, key=KEY) is False
    assert INVALIDATION_ERRORS._value.get() == err_before + 1
    assert any(r.levelname == "WARNING" and "JWKS_CACHE_INVALIDATION_FAILED" in r.message
               for r in caplog.records)


def test_invalidate_needs_a_key_set_name(monkeypatch):
    monkeypatch.delenv("JWKS_KEY_SET", raising=False)
    with pytest.raises(ValueError, match="JWKS_KEY_SET"):
        invalidate_jwks_cache_sync("deploy")


def test_invalidate_is_bounded_on_a_hung_redis(server, tmp_path, monkeypatch):
    a = KeyStore(tmp_path / "keys").generate()
    slow = redis.Redis(host="127.0.0.1", port=server.port)  # redis-py defaults: 5 s x 11 tries
    JwksClient(slow).rotate(KEY, [Add(a), Promote(a["kid"])])
    monkeypatch.setenv("JWKS_REDIS_URL", server.url())
    server.pause()
    try:
        for call in (lambda: invalidate_jwks_cache_sync("x", key=KEY, client=slow),
                     lambda: invalidate_jwks_cache_sync("x", key=KEY)):
            t0 = time.monotonic()
            assert call() is False
            assert time.monotonic() - t0 < 2.0
    finally:
        server.resume()
    assert invalidate_jwks_cache_sync("x", key=KEY, client=slow) is True


def test_invalidate_through_a_cluster_client(cluster, tmp_path):
    rc = cluster.client()
    a = KeyStore(tmp_path / "keys").generate()
    JwksClient(rc).rotate("jwks:{inv}", [Add(a), Promote(a["kid"])])
    assert invalidate_jwks_cache_sync("deploy", key="jwks:{inv}", client=rc) is True


def test_every_error_code_has_its_exception(server, tmp_path, bare_server):
    c = JwksClient(server.client())
    keys = KeyStore(tmp_path / "keys")
    a, b = keys.generate(), keys.generate()
    c.rotate(KEY, [Add(a), Promote(a["kid"])])
    cases = [
        (jwks_redis.InvalidKeyName, lambda: c.rotate("x:events", [Add(b)])),
        (jwks_redis.KidConflict, lambda: c.rotate(KEY, [Add(dict(b, kid=a["kid"]))])),
        (jwks_redis.InvalidState, lambda: c.rotate(KEY, [Promote(a["kid"])])),
        (jwks_redis.NoKeySet, lambda: c.policy("nothing-here", promote_after_ms=1)),
        (jwks_redis.NoKeySet, lambda: c.invalidate("nothing-here")),
        (jwks_redis.WrongType, lambda: (server.client().set("str", "x"), c.get("str"))),
        (jwks_redis.TooEarly, lambda: (c.policy(KEY, promote_after_ms=60000),
                                       c.rotate(KEY, [Add(b)]), c.rotate(KEY, [Promote(b["kid"])]))),
        (jwks_redis.JwksError, lambda: c.rotate(KEY, [Promote(a["kid"])], reason="")),
        (jwks_redis.ModuleNotLoaded, lambda: JwksClient(bare_server.client()).get(KEY)),
    ]
    for exc, call in cases:
        with pytest.raises(exc) as info:
            call()
        assert isinstance(info.value, redis.ResponseError)  # still a redis-py error
        if exc.code != "ERR":
            assert str(info.value).startswith(exc.code + " "), str(info.value)
    # FORCE overrides the guard; DRYRUN shows the document and writes nothing.
    g = c.info(KEY).generation
    dry = c.rotate(KEY, [Promote(b["kid"])], force=True, dry_run=True)
    assert dry.document and json.loads(dry.document)["keys"] and c.info(KEY).generation == g
    assert c.rotate(KEY, [Promote(b["kid"])], force=True).current == b["kid"]
    assert c.audit(KEY, count=1)[0].action == "JWKS_KEY_ADDED"
    server.client().execute_command("ACL", "SETUSER", "ro", "on", "nopass", "~*", "+@all",
                                    "-jwks.rotate")
    ro = redis.Redis(host="127.0.0.1", port=server.port, username="ro", password="x")
    with pytest.raises(jwks_redis.NoPermission):
        JwksClient(ro).rotate(KEY, [Retire(a["kid"])])
    codes = {cls.code for cls in vars(jwks_redis).values()
             if isinstance(cls, type) and issubclass(cls, jwks_redis.JwksError)}
    assert codes >= {"BADNAME", "BADJWK", "KIDCONFLICT", "NOKID", "BADSTATE", "FULL",
                     "GENMISMATCH", "WRONGTYPE", "CORRUPT", "NOKEYSET", "NOPERM", "AUDITFULL",
                     "TOOEARLY", "ERR"}


def test_get_meta_key_policy_and_info(server, tmp_path):
    c = JwksClient(server.client())
    keys = KeyStore(tmp_path / "keys")
    a, b = keys.generate(), keys.generate()
    assert c.get(KEY) is None and c.get(KEY, meta=True) is None and c.info(KEY) is None
    c.rotate(KEY, [Add(a), Promote(a["kid"])])
    meta = c.get(KEY, meta=True)
    assert meta.document == c.get(KEY) and meta.generation == 1 and 0 < meta.ttl_ms <= 3600_000
    assert meta.etag == c.info(KEY).etag
    assert c.key(KEY, a["kid"]) == a and c.key(KEY, "nope") is None
    p = c.policy(KEY, promote_after_ms=500, retire_after_ms=1000)
    assert (p.promote_after_ms, p.retire_after_ms, p.next_change) == (500, 1000, None)
    c.rotate(KEY, [Add(b)])
    p = c.policy(KEY)
    assert (p.next_change.action, p.next_change.kid) == ("promote", b["kid"])
    info = c.info(KEY)
    assert info.policy.promote_after_ms == 500 and info.next_change.kid == b["kid"]
    assert c.get(KEY, meta=True).ttl_ms <= 500


def test_sync_and_async_clients_have_the_same_methods():
    def public(cls):
        return {n: inspect.signature(f) for n, f in vars(cls).items()
                if callable(f) and not n.startswith("_")}

    sync, aio = public(JwksClient), public(AsyncJwksClient)
    assert sync.keys() == aio.keys()
    assert {"rotate", "invalidate", "get", "key", "info", "policy", "audit", "stats"} <= sync.keys()
    for name in sync:
        assert sync[name] == aio[name], name
        assert inspect.iscoroutinefunction(getattr(AsyncJwksClient, name)), name


def test_async_client_full_surface(server, tmp_path):
    keys = KeyStore(tmp_path / "keys")
    a, b = keys.generate(), keys.generate()

    async def run():
        client = redis.asyncio.Redis(host="127.0.0.1", port=server.port)
        c = AsyncJwksClient(client)
        await c.rotate(KEY, [Add(a), Promote(a["kid"])])
        assert (await c.get(KEY, meta=True)).generation == 1
        assert await c.key(KEY, a["kid"]) == a
        assert (await c.policy(KEY, retire_after_ms=100)).retire_after_ms == 100
        assert (await c.rotate(KEY, [Add(b)], dry_run=True)).document
        assert (await c.stats())["jwt_jwks_key_sets"] == 1
        assert len(await c.audit(KEY, count=1)) == 1
        with pytest.raises(jwks_redis.NoKeySet):
            await c.policy("none")
        await client.aclose()

    asyncio.run(run())

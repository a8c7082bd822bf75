import asyncio
import json

import pytest
import redis.asyncio

from jwks_redis import (Add, AsyncJwksClient, GenerationMismatch, InvalidJwk, JwksClient,
                        Promote, Replace, Retire, UnknownKid, invalidate_jwks_cache_sync)
from jwks_redis.invalidation import INVALIDATION_ERRORS, INVALIDATIONS
from keystore import KeyStore

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


def test_invalidate_jwks_cache_sync_never_raises(server, caplog, tmp_path):
    caplog.set_level("INFO")
    client = server.client()
    a = KeyStore(tmp_path / "keys").generate()
    JwksClient(client).rotate(KEY, [Add(a), Promote(a["kid"])])
    ok_before, err_before = INVALIDATIONS._value.get(), INVALIDATION_ERRORS._value.get()
    assert invalidate_jwks_cache_sync("deploy", client=client, key=KEY) is True
    assert INVALIDATIONS._value.get() == ok_before + 1
    assert any(r.levelname == "INFO" and "JWKS_CACHE_INVALIDATED" in r.message for r in caplog.records)
    server.kill()
    assert invalidate_jwks_cache_sync("deploy", client=client, key=KEY) is False
    assert INVALIDATION_ERRORS._value.get() == err_before + 1
    assert any(r.levelname == "WARNING" and "JWKS_CACHE_INVALIDATION_FAILED" in r.message
               for r in caplog.records)

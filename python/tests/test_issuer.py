"""The issuer side: KeyStore (private keys on disk, permissions created and checked),
KeyCache.current_kid / get_current_kid (sync and async, exact even for a set without a
current key), and Signer / AsyncSigner signing with the current key across rotations."""

from __future__ import annotations

import asyncio
import os
import stat
import time

import jwt
import pytest
import redis.asyncio

from conftest import wait_until
from jwks_redis import (Add, AsyncKeyCache, AsyncSigner, InsecureKeyStore, InvalidKid, JwksClient,
                        KeyCache, KeyStore, NoCurrentKey, Promote, Retire, Signer,
                        SigningKeyMismatch, UnknownSigningKey)
from jwks_redis.keystore import ALGORITHMS
from jwks_redis.signer import algorithm_of

KEY = "jwks:{auth}"
ALGS = ["ES256", "RS256", "PS256", "ES384", "ES512", "EdDSA"]


def settle(cache, result) -> None:
    """Waits until the cache holds the generation a rotation made (events take ms)."""
    wait_until(lambda: cache.generation == result.generation, 5, "the change event")


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# --------------------------------------------------------------------------- KeyStore


def test_keystore_creates_a_private_directory_and_private_files(tmp_path):
    old = os.umask(0)  # the store must not depend on the umask
    try:
        keys = KeyStore(tmp_path / "a" / "keys")
        jwk = keys.generate()
    finally:
        os.umask(old)
    assert mode(keys.dir) == 0o700
    assert mode(keys.path(jwk["kid"])) == 0o600
    assert keys.kids() == [jwk["kid"]] and jwk["kid"] in keys
    assert {"d", "p", "q"}.isdisjoint(jwk) and jwk["use"] == "sig" and jwk["alg"] == "ES256"
    # Never overwrites a key.
    with pytest.raises(FileExistsError):
        keys.generate(kid=jwk["kid"])


@pytest.mark.parametrize("loose", [0o750, 0o705, 0o755, 0o777])
def test_keystore_refuses_a_directory_others_can_enter(tmp_path, loose):
    d = tmp_path / "keys"
    d.mkdir()
    os.chmod(d, loose)
    with pytest.raises(InsecureKeyStore, match="chmod 700"):
        KeyStore(d)
    os.chmod(d, 0o700)
    keys = KeyStore(d)
    kid = keys.generate()["kid"]
    # Loosened later: refused at the next use, not only at start.
    os.chmod(d, loose)
    with pytest.raises(InsecureKeyStore):
        keys.private_key(kid)
    with pytest.raises(InsecureKeyStore):
        keys.generate()


def test_keystore_refuses_key_files_others_can_read_and_symlinks(tmp_path):
    keys = KeyStore(tmp_path / "keys")
    kid = keys.generate()["kid"]
    keys.private_key(kid)
    os.chmod(keys.path(kid), 0o640)
    with pytest.raises(InsecureKeyStore, match="chmod 600"):
        keys.private_key(kid)
    os.chmod(keys.path(kid), 0o600)
    # A symlink in place of a key file, or of the directory, is refused.
    other = KeyStore(tmp_path / "other")
    okid = other.generate()["kid"]
    os.symlink(other.path(okid), keys.dir / "linked.pem")
    with pytest.raises(OSError):
        keys.private_key("linked")
    os.symlink(keys.dir, tmp_path / "dir-link")
    with pytest.raises(InsecureKeyStore, match="symlink"):
        KeyStore(tmp_path / "dir-link")


@pytest.mark.parametrize("kid", ["../x", "a/b", ".hidden", "", "x" * 200, "a\x00b", "é"])
def test_a_kid_can_never_name_a_file_outside_the_store(tmp_path, kid):
    keys = KeyStore(tmp_path / "keys")
    with pytest.raises(InvalidKid):
        keys.private_key(kid)
    assert kid not in keys


def test_prune_deletes_only_unlisted_old_keys(tmp_path):
    keys = KeyStore(tmp_path / "keys")
    a, b = keys.generate()["kid"], keys.generate()["kid"]
    assert keys.prune([a], older_than_s=60) == []  # b is too young
    old = time.time() - 120
    os.utime(keys.path(b), (old, old))
    assert keys.prune([a], older_than_s=60) == [b]
    assert keys.kids() == [a]


@pytest.mark.parametrize("alg", ALGS)
def test_every_generated_key_is_accepted_by_the_module_and_signs(server, tmp_path, alg):
    assert alg in ALGORITHMS
    keys = KeyStore(tmp_path / "keys")
    jwk = keys.generate(alg)
    assert keys.public_jwk(jwk["kid"], alg) == jwk
    JwksClient(server.client()).rotate(KEY, [Add(jwk), Promote(jwk["kid"])])
    with KeyCache(server.client(), KEY) as cache:
        assert cache.wait_ready(5)
        signer = Signer(cache, keys)
        assert signer.current() == (jwk["kid"], alg)
        token = signer.sign({"sub": alg})
        assert jwt.get_unverified_header(token) == {"alg": alg, "kid": jwk["kid"], "typ": "JWT"}
        key = cache.get_signing_key_from_jwt(token)
        assert jwt.decode(token, key.key, algorithms=[alg]) == {"sub": alg}


def test_algorithm_of_a_jwk_without_alg():
    assert algorithm_of({"kty": "EC", "crv": "P-384"}) == "ES384"
    assert algorithm_of({"kty": "RSA"}) == "RS256"
    assert algorithm_of({"kty": "OKP", "crv": "Ed25519"}) == "EdDSA"
    assert algorithm_of({"kty": "RSA", "alg": "PS512"}) == "PS512"


# --------------------------------------------------------------------------- current kid


def test_current_kid_follows_every_promotion_within_milliseconds(server, tmp_path):
    keys = KeyStore(tmp_path / "keys")
    jwks = JwksClient(server.client())
    with KeyCache(server.client(), KEY) as cache:
        assert cache.wait_ready(5)
        assert cache.current_kid is None
        with pytest.raises(NoCurrentKey):
            cache.get_current_kid()
        a = keys.generate()
        settle(cache, jwks.rotate(KEY, [Add(a), Promote(a["kid"])]))
        assert cache.get_current_kid() == a["kid"]
        for _ in range(5):
            b = keys.generate("RS256")
            settle(cache, jwks.rotate(KEY, [Add(b)]))
            assert cache.get_current_kid() == a["kid"]  # a next key is not current
            settle(cache, jwks.rotate(KEY, [Promote(b["kid"])]))
            assert cache.get_current_kid() == b["kid"]
            assert cache.snapshot.current_confirmed
            settle(cache, jwks.rotate(KEY, [Retire(a["kid"])]))
            a = b
        assert cache.stats()["current_kid"] == a["kid"]


def test_a_set_without_a_current_key_has_no_current_kid_even_at_the_first_load(server, tmp_path):
    """The document alone cannot tell (its first key is a `next` key): the first load is
    confirmed with JWKS.INFO, later ones by the change events."""
    keys = KeyStore(tmp_path / "keys")
    jwks = JwksClient(server.client())
    a = keys.generate()
    jwks.rotate(KEY, [Add(a)])
    with KeyCache(server.client(), KEY) as cache:
        assert cache.wait_ready(5)
        with pytest.raises(NoCurrentKey):
            cache.get_current_kid()
        assert cache.current_kid is None and cache.snapshot.current_confirmed
        # Promoting the only key leaves the document (and its ETag) as it was: the event
        # still says it is current now.
        etag = cache.etag
        jwks.rotate(KEY, [Promote(a["kid"])])
        wait_until(lambda: cache.current_kid == a["kid"], 5, "the promotion")
        assert cache.etag == etag and cache.get_current_kid() == a["kid"]


def test_without_jwks_info_the_current_kid_comes_from_the_documents_order(server, tmp_path, caplog):
    keys = KeyStore(tmp_path / "keys")
    a = keys.generate()
    JwksClient(server.client()).rotate(KEY, [Add(a), Promote(a["kid"])])
    admin = server.client()
    admin.execute_command("ACL", "SETUSER", "verifier", "on", ">pw", "resetkeys", "%R~jwks:*",
                          "resetchannels", "&jwks:*", "-@all", "+jwks.get", "+ssubscribe",
                          "+sunsubscribe", "+ping")
    client = redis.Redis(host="127.0.0.1", port=server.port, username="verifier", password="pw")
    with KeyCache(client, KEY) as cache:
        assert cache.wait_ready(5)
        assert cache.get_current_kid() == a["kid"]
        assert cache.get_current_kid() == a["kid"]
    assert sum("KEYCACHE_CURRENT_UNCONFIRMED" in r.message for r in caplog.records) == 1


def test_async_current_kid_and_async_signer(server, tmp_path):
    keys = KeyStore(tmp_path / "keys")
    jwks = JwksClient(server.client())

    async def main():
        client = redis.asyncio.Redis(host="127.0.0.1", port=server.port)
        async with AsyncKeyCache(client, KEY) as cache:
            assert await cache.wait_ready(5)
            with pytest.raises(NoCurrentKey):
                await cache.get_current_kid()
            a = keys.generate("ES256")
            jwks.rotate(KEY, [Add(a)])
            # The first key of the document is `next`: not current.
            await asyncio.sleep(0.1)
            with pytest.raises(NoCurrentKey):
                await cache.get_current_kid()
            jwks.rotate(KEY, [Promote(a["kid"])])
            await asyncio.sleep(0.1)
            signer = AsyncSigner(cache, keys)
            assert await signer.current() == (a["kid"], "ES256")
            t1 = await signer.sign({"sub": "a"})
            b = keys.generate("RS256")
            jwks.rotate(KEY, [Add(b)])
            jwks.rotate(KEY, [Promote(b["kid"])])
            await asyncio.sleep(0.1)
            assert cache.current_kid == b["kid"]
            t2 = await signer.sign({"sub": "b"}, headers={"typ": "at+jwt"})
            assert jwt.get_unverified_header(t2) == {"alg": "RS256", "kid": b["kid"], "typ": "at+jwt"}
            for t in (t1, t2):
                key = await cache.get_signing_key_from_jwt(t)
                jwt.decode(t, key.key, algorithms=["ES256", "RS256"])
        await client.aclose()

    asyncio.run(main())


# --------------------------------------------------------------------------- Signer


def test_tokens_signed_across_a_rotation_verify_until_their_key_is_retired(server, tmp_path):
    """The issuer (Signer) and a verifier (KeyCache) in separate caches: ES256, then RS256."""
    keys = KeyStore(tmp_path / "keys")
    jwks = JwksClient(server.client())
    es = keys.generate("ES256")
    jwks.rotate(KEY, [Add(es), Promote(es["kid"])])
    with KeyCache(server.client(), KEY) as issuer_cache, KeyCache(server.client(), KEY) as verifier:
        assert issuer_cache.wait_ready(5) and verifier.wait_ready(5)
        signer = Signer(issuer_cache, keys, headers={"typ": "JWT"})

        def verify(token):
            key = verifier.get_signing_key_from_jwt(token)
            return jwt.decode(token, key.key, algorithms=["ES256", "RS256"])

        old = signer.sign({"sub": "before"})
        rs = keys.generate("RS256")
        done = jwks.rotate(KEY, [Add(rs)])
        settle(issuer_cache, done)
        assert jwt.get_unverified_header(signer.sign({}))["kid"] == es["kid"]
        done = jwks.rotate(KEY, [Promote(rs["kid"])])
        settle(issuer_cache, done)
        new = signer.sign({"sub": "after"})
        assert jwt.get_unverified_header(new) == {"alg": "RS256", "kid": rs["kid"], "typ": "JWT"}
        assert verify(old) == {"sub": "before"} and verify(new) == {"sub": "after"}
        settle(verifier, jwks.rotate(KEY, [Retire(es["kid"])]))
        with pytest.raises(UnknownSigningKey):
            verify(old)
        assert verify(new) == {"sub": "after"}


def test_the_signer_refuses_a_private_key_that_is_not_the_published_one(server, tmp_path):
    keys = KeyStore(tmp_path / "keys")
    elsewhere = KeyStore(tmp_path / "elsewhere")
    published = elsewhere.generate(kid="k-1")
    keys.generate(kid="k-1")  # the same kid, another key pair
    JwksClient(server.client()).rotate(KEY, [Add(published), Promote("k-1")])
    with KeyCache(server.client(), KEY) as cache:
        assert cache.wait_ready(5)
        with pytest.raises(SigningKeyMismatch):
            Signer(cache, keys).sign({})
        assert Signer(cache, elsewhere).sign({})
        # No private key at all for the current kid.
        with pytest.raises(FileNotFoundError):
            Signer(cache, KeyStore(tmp_path / "empty")).sign({})

"""The issuer side: sign each token with the key set's current key.

    cache = KeyCache(redis.Redis.from_url(url), "jwks:{auth}")
    signer = Signer(cache, KeyStore("/var/lib/auth/signing-keys"))
    token = signer.sign({"sub": "user-1", "exp": int(time.time()) + 3600})

The kid comes from the KeyCache (in memory, current within milliseconds of every promotion,
no Redis command per token); the private key from the KeyStore (read once per kid, kept in
memory, checked against the published JWK); the algorithm from the published JWK's `alg`.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Dict, Mapping, Optional, Tuple

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from ._cache_core import CacheState, KeyCacheError
from .keystore import KeyStore, KeyStoreError

__all__ = ["AsyncSigner", "Signer", "SigningKeyMismatch", "algorithm_of"]

# The members that carry a public key's material, by kty.
_MATERIAL = {"EC": ("crv", "x", "y"), "RSA": ("n", "e"), "OKP": ("crv", "x")}
_EC_ALGS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}


class SigningKeyMismatch(KeyStoreError):
    """The KeyStore's private key for the current kid does not belong to the public key the
    key set publishes under that kid: tokens it signed would not verify anywhere."""


def algorithm_of(jwk: Mapping[str, Any]) -> str:
    """The JWS algorithm to sign with for a published JWK: its `alg`, else ES256/ES384/ES512
    by curve for EC, RS256 for RSA, EdDSA for OKP."""
    alg = jwk.get("alg")
    if alg:
        return str(alg)
    kty = jwk.get("kty")
    if kty == "EC" and jwk.get("crv") in _EC_ALGS:
        return _EC_ALGS[jwk["crv"]]
    if kty == "RSA":
        return "RS256"
    if kty == "OKP":
        return "EdDSA"
    raise KeyCacheError(f"no signing algorithm for kty {kty!r}")


def _public_material(private_key: Any) -> dict:
    public = private_key.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        return json.loads(ECAlgorithm.to_jwk(public))
    if isinstance(public, rsa.RSAPublicKey):
        return json.loads(RSAAlgorithm.to_jwk(public))
    return json.loads(OKPAlgorithm.to_jwk(public))


class _SignerCore:
    def __init__(self, cache: CacheState, keys: KeyStore, headers: Optional[Mapping[str, Any]]):
        self.cache = cache
        self.keys = keys
        self.headers = dict(headers or {})
        self._lock = threading.Lock()
        self._private: Dict[str, Tuple[dict, Any]] = {}

    def material(self, kid: str) -> Tuple[str, Any]:
        """(algorithm, private key) for a current kid, the private key loaded once and
        checked against the published JWK (reloaded if the published JWK changed)."""
        jwk = self.cache._core.jwk(kid)
        if jwk is None:  # pragma: no cover - current_kid is always a held kid
            raise KeyCacheError(f"kid {kid!r} is not held by the cache")
        with self._lock:
            held = self._private.get(kid)
            if held is None or held[0] != jwk:
                private = self.keys.private_key(kid)
                mine = _public_material(private)
                members = _MATERIAL.get(jwk.get("kty"), ())
                if not members or any(mine.get(m) != jwk.get(m) for m in members):
                    raise SigningKeyMismatch(
                        f"{self.keys.dir}: the private key of kid {kid!r} does not match the "
                        f"public key published under that kid in {self.cache.key}")
                # Forget the keys of kids no longer published (retired ones cannot sign).
                held_kids = set(self.cache._core.keys)
                self._private = {k: v for k, v in self._private.items() if k in held_kids}
                held = self._private[kid] = (jwk, private)
        return algorithm_of(jwk), held[1]

    def encode(self, kid: str, claims: Mapping[str, Any],
               headers: Optional[Mapping[str, Any]]) -> str:
        alg, private = self.material(kid)
        return jwt.encode(dict(claims), private, algorithm=alg,
                          headers={**self.headers, **(headers or {}), "kid": kid})


class Signer:
    """Signs JWTs with the current key of the KeyCache's key set.

    `cache`: a `KeyCache` on the key set (it tells which kid is current, within
    milliseconds of a promotion). `keys`: the `KeyStore` holding the private keys (the one
    your key generator, e.g. the Celery example, writes to). `headers`: extra JWS header
    members for every token (`kid` and `alg` are always set by the signer).
    """

    def __init__(self, cache: Any, keys: KeyStore, *, headers: Optional[Mapping[str, Any]] = None):
        self._core = _SignerCore(cache, keys, headers)
        self.cache = cache
        self.keys = keys

    def current(self) -> Tuple[str, str]:
        """(kid, algorithm) the next token would be signed with. Raises NoCurrentKey,
        KeyCacheStale, FileNotFoundError (no private key for the current kid),
        InsecureKeyStore or SigningKeyMismatch."""
        kid = self.cache.get_current_kid()
        return kid, self._core.material(kid)[0]

    def sign(self, claims: Mapping[str, Any], *, headers: Optional[Mapping[str, Any]] = None) -> str:
        """The compact JWS of `claims`, signed with the current key, its kid and alg in the
        header (the raises of `current`). The claims are signed as given: set `exp`,
        `iat`, `iss`, `aud` yourself."""
        return self._core.encode(self.cache.get_current_kid(), claims, headers)


class AsyncSigner:
    """Signer for an `AsyncKeyCache`: the same parameters; `sign` and `current` awaited."""

    def __init__(self, cache: Any, keys: KeyStore, *, headers: Optional[Mapping[str, Any]] = None):
        self._core = _SignerCore(cache, keys, headers)
        self.cache = cache
        self.keys = keys

    async def current(self) -> Tuple[str, str]:
        """See Signer.current."""
        kid = await self.cache.get_current_kid()
        return kid, self._core.material(kid)[0]

    async def sign(self, claims: Mapping[str, Any], *,
                   headers: Optional[Mapping[str, Any]] = None) -> str:
        """See Signer.sign (reading a private key the first time is a small blocking file
        read)."""
        return self._core.encode(await self.cache.get_current_kid(), claims, headers)

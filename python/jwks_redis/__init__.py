"""redis-py wrapper for the redis-jwks module: rotate, invalidate, read and audit key sets
(JwksClient, AsyncJwksClient), keep the published keys in process memory for verifiers
(KeyCache, AsyncKeyCache), sign with the current key (Signer, AsyncSigner, with the private
keys in a KeyStore), and serve the keys over HTTP (jwks_redis.endpoint)."""

from .client import (
    Add,
    AuditEntry,
    AuditFull,
    CorruptKeySet,
    GenerationMismatch,
    InvalidJwk,
    InvalidKeyName,
    InvalidState,
    JwksClient,
    JwksDocument,
    JwksError,
    KeyInfo,
    KeySetFull,
    KeySetInfo,
    KidConflict,
    ModuleNotLoaded,
    NextChange,
    NoKeySet,
    NoPermission,
    Policy,
    Promote,
    Replace,
    Retire,
    RotateResult,
    TooEarly,
    UnknownKid,
    WrongType,
    derived_key,
    events_channel,
)
from .aio import AsyncJwksClient
from ._cache_core import KeyCacheError, KeyCacheStale, NoCurrentKey, Snapshot, UnknownSigningKey
from .keycache import KeyCache
from .aio_keycache import AsyncKeyCache
from .invalidation import invalidate_jwks_cache_sync
from .keystore import InsecureKeyStore, InvalidKid, KeyStore, KeyStoreError
from .signer import AsyncSigner, Signer, SigningKeyMismatch

__all__ = [
    "Add", "AsyncJwksClient", "AsyncKeyCache", "AsyncSigner", "AuditEntry", "AuditFull",
    "CorruptKeySet", "GenerationMismatch", "InsecureKeyStore", "InvalidJwk", "InvalidKeyName",
    "InvalidKid", "InvalidState", "JwksClient", "JwksDocument", "JwksError", "KeyCache",
    "KeyCacheError", "KeyCacheStale", "KeyInfo", "KeySetFull", "KeySetInfo", "KeyStore",
    "KeyStoreError", "KidConflict", "ModuleNotLoaded", "NextChange", "NoCurrentKey",
    "NoKeySet", "NoPermission", "Policy", "Promote", "Replace", "Retire", "RotateResult",
    "Signer", "SigningKeyMismatch", "Snapshot", "TooEarly", "UnknownKid", "UnknownSigningKey",
    "WrongType", "derived_key", "events_channel", "invalidate_jwks_cache_sync",
]

"""redis-py wrapper for the redis-jwks module: rotate, invalidate, read and audit key sets
(JwksClient, AsyncJwksClient), keep the published keys in process memory for verifiers
(KeyCache, AsyncKeyCache), and serve them over HTTP (jwks_redis.endpoint)."""

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
from ._cache_core import KeyCacheError, KeyCacheStale, Snapshot, UnknownSigningKey
from .keycache import KeyCache
from .aio_keycache import AsyncKeyCache
from .invalidation import invalidate_jwks_cache_sync

__all__ = [
    "Add", "AsyncJwksClient", "AsyncKeyCache", "AuditEntry", "AuditFull", "CorruptKeySet",
    "GenerationMismatch", "InvalidJwk", "InvalidKeyName", "InvalidState", "JwksClient",
    "JwksDocument", "JwksError", "KeyCache", "KeyCacheError", "KeyCacheStale", "KeyInfo",
    "KeySetFull", "KeySetInfo", "KidConflict", "ModuleNotLoaded", "NextChange", "NoKeySet",
    "NoPermission", "Policy", "Promote", "Replace", "Retire", "RotateResult", "Snapshot",
    "TooEarly", "UnknownKid", "UnknownSigningKey", "WrongType", "derived_key",
    "events_channel", "invalidate_jwks_cache_sync",
]

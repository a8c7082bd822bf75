"""redis-py wrapper for the redis-jwks module: rotate, invalidate, read and audit key sets."""

from .client import (
    Add,
    AuditEntry,
    GenerationMismatch,
    InvalidJwk,
    JwksClient,
    JwksError,
    KeyInfo,
    KeySetInfo,
    Promote,
    Replace,
    Retire,
    RotateResult,
    UnknownKid,
)
from .aio import AsyncJwksClient
from .invalidation import invalidate_jwks_cache_sync

__all__ = [
    "Add", "AsyncJwksClient", "AuditEntry", "GenerationMismatch", "InvalidJwk", "JwksClient",
    "JwksError", "KeyInfo", "KeySetInfo", "Promote", "Replace", "Retire", "RotateResult",
    "UnknownKid", "invalidate_jwks_cache_sync",
]

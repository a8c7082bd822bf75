"""`invalidate_jwks_cache_sync`, with the operations spec's semantics for the app side.

With the module, JWKS.ROTATE already deletes the cached JWKS in the same command as the
key-set swap; this function is for everything else that changes what the endpoint must
serve (and for a manual heal). It never raises: if Redis cannot be reached the failure is
logged at WARNING and counted, the caller carries on, and the cache TTL bounds staleness.
"""

from __future__ import annotations

import logging
from typing import Optional

import redis
from prometheus_client import Counter

log = logging.getLogger("jwks_redis.invalidation")

# prometheus_client adds the _total suffix: these export as the spec's names.
INVALIDATIONS = Counter(
    "jwt_jwks_cache_invalidations", "Successful JWKS cache invalidations (app side)"
)
INVALIDATION_ERRORS = Counter(
    "jwt_jwks_cache_invalidation_errors", "Failed JWKS cache invalidations (app side)"
)


def record_failure(key: str, reason: str, error: BaseException) -> None:
    """Logs and counts an invalidation (or rotation) that could not reach Redis."""
    INVALIDATION_ERRORS.inc()
    log.warning(
        "JWKS_CACHE_INVALIDATION_FAILED key=%s reason=%s error=%s "
        "(the cached JWKS expires within its TTL)", key, reason, error,
    )


def invalidate_jwks_cache_sync(
    reason: str = "key_rotation",
    *,
    client: Optional[redis.Redis] = None,
    key: str = "jwks",
) -> bool:
    """Delete the cached JWKS for `key` (JWKS.INVALIDATE). Returns True on success."""
    if client is None:
        client = redis.Redis()
    try:
        deleted = client.execute_command("JWKS.INVALIDATE", key, "REASON", reason)
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as e:
        record_failure(key, reason, e)
        return False
    INVALIDATIONS.inc()
    log.info("JWKS_CACHE_INVALIDATED key=%s reason=%s deleted=%s", key, reason, bool(deleted))
    return True

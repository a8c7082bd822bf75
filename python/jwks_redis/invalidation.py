"""`invalidate_jwks_cache_sync`, with the operations spec's semantics for the app side.

With the module, JWKS.ROTATE already deletes the cached JWKS in the same command as the
key-set swap; this function is for everything else that changes what the endpoint must
serve (and for a manual heal). It never raises for Redis: if Redis cannot be reached, hangs
or refuses, the failure is logged at WARNING and counted, the caller carries on (within
`timeout`, 1 s by default), and the cache TTL bounds staleness. A missing key set name is a
configuration error and does raise (ValueError): there is no default key set.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Optional

import redis
from prometheus_client import Counter
from redis.backoff import NoBackoff
from redis.retry import Retry

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


def _bounded(client: redis.Redis, timeout: float) -> redis.Redis:
    """The same server and credentials with `timeout` on connect and socket, no retries."""
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs, socket_timeout=timeout,
                  socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))
    return redis.Redis(connection_pool=redis.ConnectionPool(
        connection_class=pool.connection_class, max_connections=1, **kwargs))


def _call_within(client: Any, timeout: float, *args: Any) -> Any:
    """For clients whose timeouts cannot be rebuilt (e.g. a cluster client): the command in
    a worker thread, abandoned after `timeout` (the thread ends with the client's own
    timeout)."""
    out: dict = {}

    def run() -> None:
        try:
            out["reply"] = client.execute_command(*args)
        except BaseException as e:  # noqa: BLE001
            out["error"] = e

    t = threading.Thread(target=run, daemon=True, name="jwks-invalidate")
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise redis.TimeoutError(f"no reply within {timeout} s")
    if "error" in out:
        raise out["error"]
    return out["reply"]


def invalidate_jwks_cache_sync(
    reason: str = "manual",
    *,
    key: Optional[str] = None,
    client: Optional[Any] = None,
    timeout: float = 1.0,
) -> bool:
    """Delete the cached JWKS of key set `key` (JWKS.INVALIDATE K REASON reason).

    `key` defaults to the JWKS_KEY_SET environment variable; with neither, ValueError.
    `client` defaults to JWKS_REDIS_URL (redis://127.0.0.1:6379/0 if unset). Returns True on
    success, False (logged, counted) if Redis failed or did not answer within `timeout`.
    """
    key = key or os.environ.get("JWKS_KEY_SET")
    if not key:
        raise ValueError("invalidate_jwks_cache_sync needs the key set: pass key=... or set JWKS_KEY_SET")
    args = ("JWKS.INVALIDATE", key, "REASON", reason)
    try:
        if client is None:
            url = os.environ.get("JWKS_REDIS_URL", "redis://127.0.0.1:6379/0")
            bounded = redis.Redis.from_url(url, socket_timeout=timeout,
                                           socket_connect_timeout=timeout,
                                           retry=Retry(NoBackoff(), 0))
        elif isinstance(client, redis.Redis):
            bounded = _bounded(client, timeout)
        else:
            bounded = None
        if bounded is not None:
            try:
                deleted = bounded.execute_command(*args)
            finally:
                bounded.connection_pool.disconnect()
        else:
            deleted = _call_within(client, timeout, *args)
    except redis.RedisError as e:
        record_failure(key, reason, e)
        return False
    INVALIDATIONS.inc()
    log.info("JWKS_CACHE_INVALIDATED key=%s reason=%s deleted=%s", key, reason, bool(deleted))
    return True

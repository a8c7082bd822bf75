"""Example Celery app: zero-downtime JWT signing-key rotation with the module's lifecycle
policy.

The periodic task only makes key pairs: it generates a key for JWKS_ALG (ES256 by default;
the private key stays in the package's KeyStore directory, mode 0700/0600, never in Redis) and publishes its public JWK as `next` when the
key set has none and the current key is older than JWKS_ROTATE_EVERY. Redis does the rest,
by itself and on time, even while no worker runs: JWKS.POLICY makes the module promote each
`next` key JWKS_PROMOTE_AFTER seconds after it was added (the old current becomes
`previous`) and retire each `previous` key JWKS_RETIRE_AFTER seconds after it was demoted.

  no key set yet -> ADD a new key and PROMOTE it (bootstrap), then JWKS.POLICY
  no next key    -> ADD a new key as `next` (once the current one is JWKS_ROTATE_EVERY old)
  otherwise      -> nothing (the module promotes and retires)

Every JWKS.ROTATE carries IFGEN with the generation the run planned against, so a
duplicated or retried task message cannot apply twice. If Redis cannot be reached, the run
logs a WARNING, counts jwt_jwks_cache_invalidation_errors_total and returns: nothing is
half-applied (JWKS.ROTATE is atomic) and the next run catches up.

JWKS_SOURCE=db is the other variant: a SQL database (sqlite here) is the truth, the task
drives the whole life cycle itself and syncs Redis with REPLACE (the module's policy stays
off, or it would change states behind the database's back).

Environment (all optional; see docs/python.md):
  JWKS_REDIS_URL       Redis with the module          (redis://127.0.0.1:6379/0)
  JWKS_BROKER_URL      Celery broker                  (redis://127.0.0.1:6379/1)
  JWKS_RESULT_BACKEND  Celery result backend          (redis://127.0.0.1:6379/2)
  JWKS_KEY_SET         the key set                    (jwks:{auth})
  JWKS_KEY_DIR         private keys, one PEM per kid  (./signing-keys)
  JWKS_ALG             algorithm of new keys          (ES256; RS256, ES384, EdDSA ...)
  JWKS_ROTATE_EVERY    seconds between new keys       (86400)
  JWKS_PROMOTE_AFTER   seconds a key is `next`        (3600)
  JWKS_RETIRE_AFTER    seconds a key is `previous`    (7200)
  JWKS_CHECK_EVERY     seconds between task runs      (60)
  JWKS_SOURCE          redis or db                    (redis)
  JWKS_DB_PATH         the sqlite file for db         (./keys.sqlite)

Run:  cd python/examples && celery -A rotation worker -B --loglevel=INFO
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from typing import Optional

import redis
from celery import Celery

from jwks_redis import (Add, GenerationMismatch, JwksClient, KeyCache, KeyStore, Promote,
                        Replace, Retire, Signer)
from jwks_redis.client import KeyInfo, KeySetInfo
from jwks_redis.invalidation import INVALIDATIONS, record_failure

log = logging.getLogger("rotation")

REDIS_URL = os.environ.get("JWKS_REDIS_URL", "redis://127.0.0.1:6379/0")
BROKER_URL = os.environ.get("JWKS_BROKER_URL", "redis://127.0.0.1:6379/1")
BACKEND_URL = os.environ.get("JWKS_RESULT_BACKEND", "redis://127.0.0.1:6379/2")
KEY_SET = os.environ.get("JWKS_KEY_SET", "jwks:{auth}")
KEY_DIR = os.environ.get("JWKS_KEY_DIR", "./signing-keys")
ALG = os.environ.get("JWKS_ALG", "ES256")
SOURCE = os.environ.get("JWKS_SOURCE", "redis")
DB_PATH = os.environ.get("JWKS_DB_PATH", "./keys.sqlite")
ROTATE_EVERY = float(os.environ.get("JWKS_ROTATE_EVERY", str(24 * 3600)))
PROMOTE_AFTER = float(os.environ.get("JWKS_PROMOTE_AFTER", "3600"))
RETIRE_AFTER = float(os.environ.get("JWKS_RETIRE_AFTER", "7200"))
CHECK_EVERY = float(os.environ.get("JWKS_CHECK_EVERY", "60"))

app = Celery("rotation", broker=BROKER_URL, backend=BACKEND_URL)
app.conf.beat_schedule = {
    "rotate-jwt-signing-keys": {"task": "rotation.rotate_keys", "schedule": CHECK_EVERY},
}
app.conf.task_acks_late = True  # a crashed worker's run is redelivered: IFGEN makes that safe
app.conf.broker_connection_retry_on_startup = True


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=5)


def now_ms() -> int:
    return int(time.time() * 1000)


def policy_ms() -> tuple:
    return int(PROMOTE_AFTER * 1000), int(RETIRE_AFTER * 1000)


# --------------------------------------------------------------------------- redis source


def plan_ops(info: Optional[KeySetInfo], keys: KeyStore, now: int) -> list:
    """What this run adds, as JWKS.ROTATE ops: a bootstrap key, or a new `next` key."""
    if info is None or info.current is None:
        nexts = [] if info is None else [k for k in info.keys if k.state == "next"]
        if nexts:  # a key set left without a current key: promote what is waiting
            return [Promote(nexts[0].kid)]
        jwk = keys.generate(ALG)
        return [Add(jwk), Promote(jwk["kid"])]
    if any(k.state == "next" for k in info.keys):
        return []  # the module promotes it when its time comes
    current = next(k for k in info.keys if k.state == "current")
    if now - (current.promoted_ms or current.added_ms) >= ROTATE_EVERY * 1000:
        return [Add(keys.generate(ALG))]
    return []


def _apply_redis_source(client: JwksClient, keys: KeyStore, plan_generation: Optional[int]) -> dict:
    info = client.info(KEY_SET)
    generation = info.generation if info else 0
    if plan_generation is not None and plan_generation != generation:
        raise GenerationMismatch(f"planned against {plan_generation}, key set at {generation}")
    ops = plan_ops(info, keys, now_ms())
    outcome: dict = {"applied": False, "generation": generation, "ops": []}
    if ops:
        result = client.rotate(KEY_SET, ops, if_gen=generation, reason="key_rotation")
        outcome = {"applied": True, "generation": result.generation, "current": result.current,
                   "published": result.published, "ops": [type(o).__name__ for o in ops],
                   "kids": [o.jwk["kid"] for o in ops if isinstance(o, Add)]}
        info = None  # re-read below for the policy check
    promote_ms, retire_ms = policy_ms()
    info = info or client.info(KEY_SET)
    if info.policy is None or (info.policy.promote_after_ms, info.policy.retire_after_ms) != \
            (promote_ms, retire_ms):
        # Idempotent: setting the same policy again changes nothing and announces nothing.
        client.policy(KEY_SET, promote_after_ms=promote_ms, retire_after_ms=retire_ms)
        outcome["policy"] = {"promote_after_ms": promote_ms, "retire_after_ms": retire_ms}
    # Private keys of retired kids can no longer sign: delete them (not the fresh ones a
    # concurrent run may be about to publish).
    published = [k.kid for k in info.keys]
    keys.prune(published, older_than_s=max(60.0, PROMOTE_AFTER))
    return outcome


# --------------------------------------------------------------------------- db source


def plan_ops_db(info: KeySetInfo, keys: KeyStore, now: int) -> list:
    """The next step of the whole life cycle, decided by the task (JWKS_SOURCE=db)."""
    if info.current is None:
        nexts = [k for k in info.keys if k.state == "next"]
        if nexts:
            return [Promote(nexts[0].kid)]
        jwk = keys.generate(ALG)
        return [Add(jwk), Promote(jwk["kid"])]
    ops: list = []
    nexts = [k for k in info.keys if k.state == "next"]
    current = next(k for k in info.keys if k.state == "current")
    if nexts:
        if now - nexts[0].added_ms >= PROMOTE_AFTER * 1000:
            ops.append(Promote(nexts[0].kid))
    elif now - (current.promoted_ms or current.added_ms) >= ROTATE_EVERY * 1000:
        ops.append(Add(keys.generate(ALG)))
    for k in info.keys:
        if k.state == "previous" and k.demoted_ms and now - k.demoted_ms >= RETIRE_AFTER * 1000:
            ops.append(Retire(k.kid))
    return ops


def _db(path: str = DB_PATH) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE IF NOT EXISTS signing_keys (kid TEXT PRIMARY KEY, jwk TEXT NOT NULL,"
               " state TEXT NOT NULL, added_ms INTEGER, promoted_ms INTEGER, demoted_ms INTEGER)")
    return db


def _db_info(db: sqlite3.Connection) -> KeySetInfo:
    """The database's key set in the shape plan_ops_db reads."""
    rows = db.execute("SELECT kid, state, added_ms, promoted_ms, demoted_ms FROM signing_keys"
                      " WHERE state != 'retired' ORDER BY added_ms").fetchall()
    keys = [KeyInfo(kid=r[0], state=r[1], kty="", alg=ALG, use="sig", added_ms=r[2],
                    promoted_ms=r[3], demoted_ms=r[4]) for r in rows]
    current = next((k.kid for k in keys if k.state == "current"), None)
    return KeySetInfo(generation=0, current=current, keys=keys, cache_ttl_ms=-2, counters={},
                      audit_length=0, derived_keys={})


def _apply_db_source(client: JwksClient, keys: KeyStore, plan_generation: Optional[int]) -> dict:
    db = _db()
    now = now_ms()
    with db:  # one transaction: the database is the truth
        ops = plan_ops_db(_db_info(db), keys, now)
        for op in ops:
            if isinstance(op, Add):
                db.execute("INSERT INTO signing_keys VALUES (?, ?, 'next', ?, NULL, NULL)",
                           (op.jwk["kid"], json.dumps(dict(op.jwk)), now))
            elif isinstance(op, Promote):
                db.execute("UPDATE signing_keys SET state='previous', demoted_ms=? WHERE state='current'", (now,))
                db.execute("UPDATE signing_keys SET state='current', promoted_ms=? WHERE kid=?", (now, op.kid))
            elif isinstance(op, Retire):
                db.execute("UPDATE signing_keys SET state='retired' WHERE kid=?", (op.kid,))
    published = [json.loads(r[0]) for r in db.execute(
        "SELECT jwk FROM signing_keys WHERE state != 'retired' ORDER BY added_ms")]
    current = db.execute("SELECT kid FROM signing_keys WHERE state='current'").fetchone()
    db.close()
    # Sync Redis: idempotent, so a run after a failed sync completes it.
    info = client.info(KEY_SET)
    generation = info.generation if info else 0
    if plan_generation is not None and plan_generation != generation:
        raise GenerationMismatch(f"planned against {plan_generation}, key set at {generation}")
    sync: list = [Replace(published)]
    if current and (info is None or info.current != current[0]):
        sync.append(Promote(current[0]))
    result = client.rotate(KEY_SET, sync, if_gen=generation, reason="key_rotation")
    return {"applied": result.changed > 0, "generation": result.generation,
            "current": result.current, "published": result.published,
            "ops": [type(o).__name__ for o in ops]}


# --------------------------------------------------------------------------- the task


def _apply_key_set_update(plan_generation: Optional[int] = None,
                          client: Optional[redis.Redis] = None) -> dict:
    """One run. Never raises for Redis being unreachable (see module doc)."""
    jwks = JwksClient(client or redis_client())
    keys = KeyStore(KEY_DIR)
    apply = _apply_db_source if SOURCE == "db" else _apply_redis_source
    try:
        outcome = apply(jwks, keys, plan_generation)
    except GenerationMismatch as e:
        # A duplicate or retried run: another run already applied this step.
        log.info("rotation skipped (already applied): %s", e)
        return {"applied": False, "duplicate": True}
    except (redis.ConnectionError, redis.TimeoutError) as e:
        record_failure(KEY_SET, "key_rotation", e)
        return {"applied": False, "error": str(e)}
    if outcome["applied"]:
        # JWKS.ROTATE deleted the cached JWKS and announced the change in the same command.
        INVALIDATIONS.inc()
        log.info("JWKS_CACHE_INVALIDATED key=%s reason=key_rotation generation=%s ops=%s",
                 KEY_SET, outcome["generation"], outcome["ops"])
    return outcome


@app.task(name="rotation.rotate_keys")
def rotate_keys(plan_generation: Optional[int] = None) -> dict:
    return _apply_key_set_update(plan_generation)


# --------------------------------------------------------------------------- signing


_signer: Optional[Signer] = None


def signer(client: Optional[redis.Redis] = None) -> Signer:
    """The process's Signer: a KeyCache on KEY_SET (it learns of each promotion within
    milliseconds, with no Redis command per token) and the KeyStore the task writes to.
    Create it after a fork (e.g. in each web worker), not in a pre-forking master."""
    global _signer
    if _signer is None:
        cache = KeyCache(client or redis_client(), KEY_SET)
        cache.wait_ready(5)
        _signer = Signer(cache, KeyStore(KEY_DIR))
    return _signer


def close_signer() -> None:
    """Stops the process's Signer's KeyCache (at shutdown)."""
    global _signer
    if _signer is not None:
        _signer.cache.close()
        _signer = None


def sign(claims: dict, client: Optional[redis.Redis] = None) -> str:
    """Sign with whatever key is current (what an auth service's token issuer does).
    Raises jwks_redis.NoCurrentKey before the bootstrap."""
    return signer(client).sign(claims)

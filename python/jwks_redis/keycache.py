"""KeyCache: a key set's published keys in process memory, kept current by the module's
change events.

    cache = KeyCache(redis.Redis.from_url(url), "jwks:{auth}")
    key = cache.get_signing_key_from_jwt(token)          # a jwt.PyJWK, like PyJWKClient's
    claims = jwt.decode(token, key, algorithms=["ES256"], audience=...)

How it stays current (one background thread per cache):

- It subscribes to the key set's events channel (SSUBSCRIBE `K:events`) on the node that
  serves the key set (a standalone primary or replica, or in a cluster the primary owning
  the channel's slot), and once the subscription is confirmed it loads the document in
  full (JWKS.GET K META). Every (re)subscription, after any disconnect, reloads in full, so
  a change made while it was disconnected is never missed.
- Each event read off the subscription triggers one reload. Events that arrive together,
  and reloads asked for by several threads at once, coalesce into one (single flight).
- From the moment an event is read until the reload after it succeeds, lookups wait (up to
  `stale_wait`, then raise KeyCacheStale): a key retired by that change is never handed out
  after its event was delivered.
- A reload also happens when the copy's TTL runs out (`ttl_ms` of JWKS.GET META: the cache
  TTL, never past the next scheduled change), the safety net for a lost event; a PING every
  `health_interval` detects a silently dead connection.
- An unknown kid is looked up in Redis (JWKS.KEY, which the module counts as an unknown-kid
  lookup) at most once per `miss_interval`, and reloads only if the kid is published there
  (garbage tokens cannot stampede Redis); other misses in that interval fail at once.

If Redis cannot be reached the cache keeps answering from the keys it holds (no event can
have been delivered meanwhile), unless `max_stale` is set: then, once the copy's TTL has
run out by more than `max_stale` seconds without a successful reload, lookups fail.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Callable, List, Optional

import jwt
import redis
import redis.cluster
from jwt.exceptions import PyJWKClientConnectionError
from redis.backoff import NoBackoff
from redis.retry import Retry

from ._cache_core import (
    Acker,
    CacheCore,
    CacheState,
    DeliveredEvent,
    KeyCacheError,
    KeyCacheStale,
    NoCurrentKey,
    Snapshot,
    UnknownSigningKey,
    dedicated_kwargs,
    default_ack_id,
    kid_of,
    parse_event,
)
from .client import JwksDocument, KeySetInfo, _s, _translate

log = logging.getLogger("jwks_redis.keycache")

__all__ = ["KeyCache", "KeyCacheError", "KeyCacheStale", "NoCurrentKey", "Snapshot",
           "UnknownSigningKey"]


class _Resubscribe(Exception):
    """The server ended the subscription (e.g. the slot moved to another node)."""


class KeyCache(CacheState):
    """The published keys of key set `key`, by kid, kept current from Redis by a background
    thread (see "How it works" in docs/python.md).

    `client` is a `redis.Redis` (standalone primary or replica) or a
    `redis.cluster.RedisCluster`; the cache makes its own connections from its settings
    (address, credentials, TLS) with its own `timeout` (seconds) and no retries.
    `miss_interval`: an unknown kid is looked up in Redis (`JWKS.KEY`, counted by the
    module) at most once per this many seconds, and reloads if it is published.
    `stale_wait`: how long a lookup waits for the reload after a change event before
    raising `KeyCacheStale`. `max_stale`: if set, lookups fail once the copy's TTL has run
    out by more than this many seconds without a successful reload (default: keep
    answering). `refresh_grace`: seconds after the copy's TTL before the safety-net reload.
    `health_interval`: seconds of silence before a PING. `backoff`: (first, max) seconds
    between reconnection attempts. `on_change(snapshot)`: called from the cache's thread
    after each load that changed the document (the first load included), with the new
    `Snapshot`, before `wait_ready` / `wait_generation` return for that load; it must
    not block, and an exception it raises is logged (`KEYCACHE_ON_CHANGE_FAILED`) and
    otherwise ignored. `start=False` defers the thread to
    `start()`. The subscriber needs the ACL to `SSUBSCRIBE` the key set's events channel
    and run `JWKS.GET` and `PING` (docs/acl.md).

    Acks: with `ack` (the default) the cache tells the module which generation it holds
    (`JWKS.ACK K GENERATION g ID ack_id TTL ack_ttl`) after every load and every `ack_ttl`
    / 3 seconds while connected, from its own thread, so `JWKS.VERIFIERS` lists it and a
    `CONFIRM` policy can promote a key once the fleet holds it. `ack_id` defaults to
    `host:pid:object`; `ack_ttl` (1 .. 3600 s, default 30) is how long the module counts
    the cache after its last ack. An ack never delays or fails a lookup: an error (no
    `+jwks.ack` in the ACL, a replica's READONLY, a module without the command) is counted
    in `stats()` (`ack_errors`, `ack_error`) and logged (`KEYCACHE_ACK_FAILED`, once per
    kind per 5 minutes). The ack's reply is the key set's generation: one newer than the
    held copy a second later means a change event was missed, and the cache reloads
    (`missed_events` in `stats()`). `ack=False` sends no acks."""

    def __init__(self, client: Any, key: str, *, miss_interval: float = 1.0,
                 stale_wait: float = 1.0, max_stale: Optional[float] = None,
                 refresh_grace: float = 0.1, timeout: float = 2.0,
                 health_interval: float = 5.0, backoff: tuple = (0.05, 2.0),
                 on_change: Optional[Callable[[Snapshot], None]] = None, ack: bool = True,
                 ack_id: Optional[str] = None, ack_ttl: float = 30.0, start: bool = True):
        self._client = client
        self._cluster = isinstance(client, redis.cluster.RedisCluster)
        self._core = CacheCore(key, miss_interval=miss_interval, stale_wait=stale_wait,
                               max_stale=max_stale, refresh_grace=refresh_grace,
                               on_change=on_change)
        self.key = key
        self.channel = self._core.channel
        self._timeout = timeout
        self._health_interval = health_interval
        self._backoff = backoff
        self._cond = threading.Condition()
        self._load_lock = threading.Lock()
        self._miss_lock = threading.Lock()
        self._node_lock = threading.Lock()
        self._node: Optional[redis.Redis] = None
        self._sub: Optional[redis.Redis] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._info_refused = False
        self._key_refused = False
        self._confirm_tried: Optional[Snapshot] = None
        if ack:
            self._core.acker = Acker(key, ack_id or default_ack_id(self), ack_ttl)
        if start:
            self.start()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "KeyCache":
        """Starts the background thread (done by the constructor unless `start=False`)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"KeyCache[{self.key}]",
                                            daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 2.0) -> None:
        """Stops the background thread and closes the cache's connections."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._node_lock:
            for c in (self._node, self._sub):
                if c is not None:
                    c.connection_pool.disconnect()
            self._node = self._sub = None

    def __enter__(self) -> "KeyCache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def wait_ready(self, timeout: float = 5.0) -> bool:
        """Waits until a first load succeeded (whether or not the key set exists); False
        on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._core.announced is not None, timeout)

    def wait_generation(self, generation: int, timeout: float = 5.0) -> bool:
        """Waits until the cache holds `generation` or a later one (e.g. the `generation`
        of a `RotateResult`: the change event takes milliseconds); False on timeout."""
        def held() -> bool:
            return self._core.generation_announced(generation)
        with self._cond:
            return self._cond.wait_for(held, timeout)

    def wait_acked(self, timeout: float = 5.0) -> bool:
        """Waits until the module has the held generation acked (`JWKS.VERIFIERS` lists
        this cache with it); False on timeout, or at once with `ack=False`."""
        core = self._core
        if core.acker is None:
            return False
        with self._cond:
            return self._cond.wait_for(core.acked_current, timeout)

    # ------------------------------------------------------------------ lookups

    def get_signing_key(self, kid: str) -> jwt.PyJWK:
        """The published signing key with this kid, as a `jwt.PyJWK` (its `.key` is what
        `jwt.decode` takes). Waits for a usable copy (see `KeyCacheStale`); an unknown kid
        is looked up in Redis at most once per `miss_interval` (reloading if it is
        published there), then raises `UnknownSigningKey`."""
        core = self._core
        if core.lookup_state(time.monotonic()) is not None:
            self._wait_usable()
        key = core.keys.get(kid)
        if key is not None:
            return key
        return self._miss(kid)

    def get_signing_key_from_jwt(self, token: Any) -> jwt.PyJWK:
        """The key for a token (by the kid in its unverified header), like PyJWKClient's."""
        return self.get_signing_key(kid_of(token))

    def get_signing_keys(self) -> List[jwt.PyJWK]:
        """Every published signing key."""
        if self._core.lookup_state(time.monotonic()) is not None:
            self._wait_usable()
        return list(self._core.keys.values())

    def get_current_kid(self) -> str:
        """The kid of the current key, for an issuer: waits like the lookups (for the first
        load, and for the reload after a delivered change event; `KeyCacheStale` after
        `stale_wait`), then returns it, or raises `NoCurrentKey` if the set has none.

        Exact: after a change event the event names the current key; a copy loaded without
        one (at start, after a reconnect) is confirmed once with `JWKS.INFO` (if the ACL
        refuses it, the cache logs `KEYCACHE_CURRENT_UNCONFIRMED` once and goes by the
        document's order, which puts the current key first whenever there is one)."""
        if self._core.lookup_state(time.monotonic()) is not None:
            self._wait_usable()
        s = self._core.snapshot
        if s is not None and s.exists and not s.current_confirmed and not self._info_refused \
                and self._confirm_tried is not s:
            self._confirm_tried = s  # once per loaded copy: a Redis outage costs one try
            self._confirm_current()
        kid = self.current_kid
        if kid is None:
            raise NoCurrentKey(f"{self.key}: the key set has no current key")
        return kid

    def _wait_usable(self) -> None:
        core = self._core
        deadline = time.monotonic() + core.stale_wait
        with self._cond:
            while True:
                now = time.monotonic()
                why = core.lookup_state(now)
                if why is None:
                    return
                if now >= deadline or core.too_old(now):
                    core.counters["stale_refusals"] += 1
                    raise KeyCacheStale(f"{self.key}: {why}")
                self._cond.wait(deadline - now)

    def _miss(self, kid: str) -> jwt.PyJWK:
        core = self._core
        with self._miss_lock:
            key = core.keys.get(kid)  # brought in by the miss reload just before this one
            if key is not None:
                return key
            now = time.monotonic()
            with self._cond:
                may_load = core.miss(now)
            if may_load:
                try:
                    if self._published(kid):
                        self._load()
                except redis.RedisError as e:
                    raise PyJWKClientConnectionError(f"{self.key}: reload failed: {e}") from e
                key = core.keys.get(kid)
                if key is not None:
                    return key
        raise UnknownSigningKey(f"{self.key}: no published signing key has kid {kid!r}")

    def _published(self, kid: str) -> bool:
        """Asks the module (JWKS.KEY K kid) whether the kid is published: the module counts
        the lookups of unknown kids (`jwt_jwks_keyset_unknown_kid_lookups_total`), and a
        reload is only needed when the kid is there. Without `+jwks.key` (or an older
        module), True: reload and look."""
        if self._key_refused:
            return True
        try:
            return self._node_client().execute_command("JWKS.KEY", self.key, kid) is not None
        except redis.ResponseError as e:
            self._key_refused = True
            log.info("KEYCACHE_KEY_LOOKUP_REFUSED key=%s error=%s: unknown kids reload instead",
                     self.key, _translate(e))
            return True

    def _confirm_current(self) -> None:
        try:
            reply = self._node_client().execute_command("JWKS.INFO", self.key)
        except redis.ResponseError as e:
            self._info_refused = True
            log.warning("KEYCACHE_CURRENT_UNCONFIRMED key=%s: JWKS.INFO refused (%s); the current "
                        "kid is taken from the document's order", self.key, _translate(e))
            return
        except redis.RedisError as e:
            log.info("KEYCACHE_CURRENT_UNCONFIRMED key=%s error=%s", self.key, e)
            return
        if reply is not None:
            info = KeySetInfo.parse(reply)
            with self._cond:
                self._core.confirm_current(info.generation, info.current)

    # ------------------------------------------------------------------ state

    def recent_events(self) -> List[DeliveredEvent]:
        """The last events read off the subscription, with when they were read."""
        with self._cond:
            return list(self._core.recent_events)

    def stats(self) -> dict:
        """Counters (loads, events, reconnects, coalesced reloads, misses ...) and the state
        (connected, generation, etag, kids, current_kid, fresh), as a dict."""
        with self._cond:
            return self._core.stats()

    def refresh(self) -> Optional[Snapshot]:
        """Reloads now (coalesced with any reload under way) and returns what is held."""
        self._load()
        return self._core.snapshot

    # ------------------------------------------------------------------ loading

    def _node_client(self, subscriber: bool = False) -> redis.Redis:
        """The cache's own client for the node serving the key set: for commands (one retry
        on a fresh connection) or, with `subscriber`, for the subscription (no retries: the
        subscriber must see every disconnect, to reload in full)."""
        with self._node_lock:
            if self._node is None:
                if self._cluster:
                    node = self._client.get_node_from_key(self.channel)
                    base = self._client.get_redis_connection(node).connection_pool
                else:
                    base = self._client.connection_pool
                kwargs = dedicated_kwargs(base.connection_kwargs, self._timeout)
                self._node = redis.Redis(connection_pool=redis.ConnectionPool(
                    connection_class=base.connection_class, retry=Retry(NoBackoff(), 1), **kwargs))
                self._sub = redis.Redis(connection_pool=redis.ConnectionPool(
                    connection_class=base.connection_class, retry=Retry(NoBackoff(), 0), **kwargs))
            return self._sub if subscriber else self._node

    def _drop_node(self) -> None:
        """Forgets the node (after an error): the next use resolves it again, in a cluster
        from a fresh slot map. Connections in use by a reload finish on their own."""
        with self._node_lock:
            clients, self._node, self._sub = (self._node, self._sub), None, None
        for c in clients:
            if c is not None:
                c.connection_pool.disconnect(inuse_connections=False)
        if self._cluster:
            try:
                self._client.nodes_manager.initialize()
            except redis.RedisError as e:
                log.info("KEYCACHE_TOPOLOGY_REFRESH_FAILED key=%s error=%s", self.key, e)

    def _load(self) -> None:
        core = self._core
        with self._cond:
            trigger = core.loads_started
        with self._load_lock:
            with self._cond:
                begun = core.begin_load(trigger)
            if begun is None:
                return
            seq, events = begun
            started = time.monotonic()
            try:
                reply = self._node_client().execute_command("JWKS.GET", self.key, "META")
            except redis.ResponseError as e:
                with self._cond:
                    core.counters["load_errors"] += 1
                raise _translate(e) from e
            except BaseException:
                with self._cond:
                    core.counters["load_errors"] += 1
                raise
            meta = None if reply is None else JwksDocument.parse(reply)
            with self._cond:
                changed = core.install(seq, events, started, meta)
                if core.acker is not None:
                    core.acker.wake()  # the cache's thread acks what it now holds
            # on_change runs before the waiters wake: once wait_ready / wait_generation
            # return, the callback has seen that load.
            if changed is not None and core.on_change is not None:
                try:
                    core.on_change(changed)
                except Exception:  # noqa: BLE001 - a callback must not stop the cache
                    log.exception("KEYCACHE_ON_CHANGE_FAILED key=%s", self.key)
            with self._cond:
                core.announced = core.snapshot
                self._cond.notify_all()

    # ------------------------------------------------------------------ the subscriber

    def _run(self) -> None:
        core = self._core
        delay = self._backoff[0]
        subscribed_before = False
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self._node_client(subscriber=True).pubsub(ignore_subscribe_messages=False)
                pubsub.ssubscribe(self.channel)
                self._await_confirmation(pubsub)
                with self._cond:
                    core.connected = True
                    core.counters["subscribes"] += 1
                    if subscribed_before:
                        core.counters["reconnects"] += 1
                if subscribed_before:
                    log.info("KEYCACHE_RESUBSCRIBED key=%s (full reload)", self.key)
                subscribed_before = True
                self._load()  # after the subscription: no change can fall in between
                delay = self._backoff[0]
                self._listen(pubsub)
            except Exception as e:  # noqa: BLE001 - the loop must survive anything
                with self._cond:
                    core.connected = False
                if self._stop.is_set():
                    break
                log.warning("KEYCACHE_DISCONNECTED key=%s error=%s: %s (retrying in %.2f s)",
                            self.key, type(e).__name__, e, delay)
                self._drop_node()
                self._stop.wait(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, self._backoff[1])
            finally:
                if pubsub is not None:
                    try:
                        pubsub.reset()
                    except Exception:  # noqa: BLE001
                        pass
        with self._cond:
            core.connected = False

    def _await_confirmation(self, pubsub: Any) -> None:
        deadline = time.monotonic() + self._timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise redis.TimeoutError("no SSUBSCRIBE confirmation")
            message = pubsub.get_message(timeout=remaining)
            if message is not None and _s(message["type"]) == "ssubscribe":
                return

    def _listen(self, pubsub: Any) -> None:
        core = self._core
        last_rx = time.monotonic()
        ping_sent: Optional[float] = None
        while not self._stop.is_set():
            if core.acker is not None:
                self._ack()
            now = time.monotonic()
            if ping_sent is None and now - last_rx >= self._health_interval:
                pubsub.ping()
                ping_sent = now
            elif ping_sent is not None and now - ping_sent > self._timeout:
                raise redis.TimeoutError(f"no PONG within {self._timeout} s")
            wait = min(0.25, max(0.0, core.refresh_at - now))
            if core.acker is not None:
                wait = min(wait, core.acker.wait(now))
            message = pubsub.get_message(timeout=wait)
            if message is None:
                if time.monotonic() >= core.refresh_at:
                    with self._cond:
                        core.counters["ttl_loads"] += 1
                    self._load()
                continue
            last_rx, ping_sent = time.monotonic(), None
            dropped = False
            delivered = 0
            while message is not None:
                kind = _s(message["type"])
                if kind == "smessage":
                    with self._cond:
                        core.deliver([parse_event(message["data"])], time.monotonic())
                    delivered += 1
                elif kind == "sunsubscribe":
                    dropped = True
                elif kind == "ssubscribe":  # resubscribed underneath: reload in full
                    with self._cond:
                        core.counters["reconnects"] += 1
                    delivered += 1
                message = pubsub.get_message(timeout=0)
            if delivered:
                if delivered > 1:
                    with self._cond:
                        core.counters["coalesced"] += delivered - 1
                self._load()
            if dropped:
                raise _Resubscribe("the server ended the subscription (slot moved?)")

    def _ack(self) -> None:
        """On the cache's thread, between reads of the subscription: acks the held
        generation when due (after a load, every ack_ttl / 3), and reloads if an ack's reply
        showed a newer generation that no event brought within the grace."""
        core, acker = self._core, self._core.acker
        now = time.monotonic()
        with self._cond:
            s = core.snapshot
            newer = acker.missed(None if s is None else s.generation, now)
            if newer is not None:
                core.note_missed(f"JWKS.ACK reported generation {newer}, the cache holds "
                                 f"{None if s is None else s.generation}")
            generation = None if newer is not None else acker.due(s, now)
        if newer is not None:
            self._load()  # its wake() has the new generation acked at the next turn
            return
        if generation is None:
            return
        etag = s.etag if s is not None and s.generation == generation else None
        try:
            reply = self._node_client().execute_command(*acker.command(generation, etag))
        except redis.RedisError as e:
            with self._cond:
                action = acker.failed(e)
            if action == "resubscribe":
                raise _Resubscribe("JWKS.ACK was redirected: the node no longer serves the "
                                   "key set") from e
            if action == "reload":
                self._load()
            return
        with self._cond:
            acker.done(generation, reply, time.monotonic())
            self._cond.notify_all()

"""AsyncKeyCache: KeyCache for asyncio (`redis.asyncio`). Same guarantees and the same
lookup methods, awaited; the subscriber is a task on the running loop instead of a thread.

    async with AsyncKeyCache(redis.asyncio.Redis.from_url(url), "jwks:{auth}") as cache:
        key = await cache.get_signing_key_from_jwt(token)
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Callable, List, Optional

import jwt
import redis
import redis.asyncio
import redis.asyncio.cluster
from jwt.exceptions import PyJWKClientConnectionError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ._cache_core import (
    Acker,
    CacheCore,
    CacheState,
    DeliveredEvent,
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
from .keycache import _Resubscribe

log = logging.getLogger("jwks_redis.keycache")


class AsyncKeyCache(CacheState):
    """KeyCache for asyncio: the same parameters (`client` a `redis.asyncio.Redis` or
    `redis.asyncio.cluster.RedisCluster`), the same guarantees, the lookups awaited; the
    subscriber is a task on the running loop. Use `async with`, or `await start()` and
    `await close()`. `on_change` is called on the loop, synchronously. Acks (`ack`,
    `ack_id`, `ack_ttl`) as KeyCache's, sent by the subscriber task."""

    def __init__(self, client: Any, key: str, *, miss_interval: float = 1.0,
                 stale_wait: float = 1.0, max_stale: Optional[float] = None,
                 refresh_grace: float = 0.1, timeout: float = 2.0,
                 health_interval: float = 5.0, backoff: tuple = (0.05, 2.0),
                 on_change: Optional[Callable[[Snapshot], None]] = None, ack: bool = True,
                 ack_id: Optional[str] = None, ack_ttl: float = 30.0):
        self._client = client
        self._cluster = isinstance(client, redis.asyncio.cluster.RedisCluster)
        self._core = CacheCore(key, miss_interval=miss_interval, stale_wait=stale_wait,
                               max_stale=max_stale, refresh_grace=refresh_grace,
                               on_change=on_change)
        self.key = key
        self.channel = self._core.channel
        self._timeout = timeout
        self._health_interval = health_interval
        self._backoff = backoff
        self._cond: Optional[asyncio.Condition] = None
        self._load_lock: Optional[asyncio.Lock] = None
        self._miss_lock: Optional[asyncio.Lock] = None
        self._node: Optional[redis.asyncio.Redis] = None
        self._sub: Optional[redis.asyncio.Redis] = None
        self._stop: Optional[asyncio.Event] = None
        self._task: Optional[asyncio.Task] = None
        self._info_refused = False
        self._key_refused = False
        self._confirm_tried: Optional[Snapshot] = None
        if ack:
            self._core.acker = Acker(key, ack_id or default_ack_id(self), ack_ttl)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> "AsyncKeyCache":
        """Starts the subscriber task on the running loop (`async with` does it)."""
        if self._task is None:
            self._cond = asyncio.Condition()
            self._load_lock = asyncio.Lock()
            self._miss_lock = asyncio.Lock()
            self._stop = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"AsyncKeyCache[{self.key}]")
        return self

    async def close(self) -> None:
        """Stops the subscriber task and closes the cache's connections."""
        if self._task is not None:
            self._stop.set()
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
            self._task = None
        self._core.connected = False
        for c in (self._node, self._sub):
            if c is not None:
                await c.connection_pool.disconnect()
        self._node = self._sub = None

    async def __aenter__(self) -> "AsyncKeyCache":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def wait_ready(self, timeout: float = 5.0) -> bool:
        """Waits until a first load succeeded (whether or not the key set exists); False
        on timeout."""
        try:
            async with self._cond:
                await asyncio.wait_for(
                    self._cond.wait_for(lambda: self._core.announced is not None), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def wait_generation(self, generation: int, timeout: float = 5.0) -> bool:
        """See KeyCache.wait_generation."""
        def held() -> bool:
            return self._core.generation_announced(generation)
        try:
            async with self._cond:
                await asyncio.wait_for(self._cond.wait_for(held), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def wait_acked(self, timeout: float = 5.0) -> bool:
        """See KeyCache.wait_acked."""
        core = self._core
        if core.acker is None:
            return False
        try:
            async with self._cond:
                await asyncio.wait_for(self._cond.wait_for(core.acked_current), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    # ------------------------------------------------------------------ lookups

    async def get_signing_key(self, kid: str) -> jwt.PyJWK:
        """See KeyCache.get_signing_key."""
        core = self._core
        if core.lookup_state(time.monotonic()) is not None:
            await self._wait_usable()
        key = core.keys.get(kid)
        if key is not None:
            return key
        return await self._miss(kid)

    async def get_signing_key_from_jwt(self, token: Any) -> jwt.PyJWK:
        """See KeyCache.get_signing_key_from_jwt."""
        return await self.get_signing_key(kid_of(token))

    async def get_signing_keys(self) -> List[jwt.PyJWK]:
        """See KeyCache.get_signing_keys."""
        if self._core.lookup_state(time.monotonic()) is not None:
            await self._wait_usable()
        return list(self._core.keys.values())

    async def get_current_kid(self) -> str:
        """See KeyCache.get_current_kid."""
        if self._core.lookup_state(time.monotonic()) is not None:
            await self._wait_usable()
        s = self._core.snapshot
        if s is not None and s.exists and not s.current_confirmed and not self._info_refused \
                and self._confirm_tried is not s:
            self._confirm_tried = s  # once per loaded copy: a Redis outage costs one try
            await self._confirm_current()
        kid = self.current_kid
        if kid is None:
            raise NoCurrentKey(f"{self.key}: the key set has no current key")
        return kid

    async def _wait_usable(self) -> None:
        core = self._core
        deadline = time.monotonic() + core.stale_wait
        async with self._cond:
            while True:
                now = time.monotonic()
                why = core.lookup_state(now)
                if why is None:
                    return
                if now >= deadline or core.too_old(now):
                    core.counters["stale_refusals"] += 1
                    raise KeyCacheStale(f"{self.key}: {why}")
                try:
                    await asyncio.wait_for(self._cond.wait(), deadline - now)
                except asyncio.TimeoutError:
                    pass

    async def _miss(self, kid: str) -> jwt.PyJWK:
        core = self._core
        async with self._miss_lock:
            key = core.keys.get(kid)
            if key is not None:
                return key
            now = time.monotonic()
            if core.miss(now):
                try:
                    if await self._published(kid):
                        await self._load()
                except redis.RedisError as e:
                    raise PyJWKClientConnectionError(f"{self.key}: reload failed: {e}") from e
                key = core.keys.get(kid)
                if key is not None:
                    return key
        raise UnknownSigningKey(f"{self.key}: no published signing key has kid {kid!r}")

    async def _published(self, kid: str) -> bool:
        """See KeyCache._published."""
        if self._key_refused:
            return True
        try:
            node = await self._node_client()
            return await node.execute_command("JWKS.KEY", self.key, kid) is not None
        except redis.ResponseError as e:
            self._key_refused = True
            log.info("KEYCACHE_KEY_LOOKUP_REFUSED key=%s error=%s: unknown kids reload instead",
                     self.key, _translate(e))
            return True

    async def _confirm_current(self) -> None:
        try:
            node = await self._node_client()
            reply = await node.execute_command("JWKS.INFO", self.key)
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
            self._core.confirm_current(info.generation, info.current)

    # ------------------------------------------------------------------ state

    def recent_events(self) -> List[DeliveredEvent]:
        """See KeyCache.recent_events."""
        return list(self._core.recent_events)

    def stats(self) -> dict:
        """See KeyCache.stats."""
        return self._core.stats()

    async def refresh(self) -> Optional[Snapshot]:
        """See KeyCache.refresh."""
        await self._load()
        return self._core.snapshot

    # ------------------------------------------------------------------ loading

    async def _node_client(self, subscriber: bool = False) -> redis.asyncio.Redis:
        """See KeyCache._node_client."""
        if self._node is None:
            if self._cluster:
                await self._client.initialize()
                node = self._client.get_node_from_key(self.channel)
                kwargs = dict(node.connection_kwargs, host=node.host, port=node.port)
                cls = node.connection_class
            else:
                base = self._client.connection_pool
                kwargs, cls = base.connection_kwargs, base.connection_class
            kwargs = dedicated_kwargs(kwargs, self._timeout)
            self._node = redis.asyncio.Redis(connection_pool=redis.asyncio.ConnectionPool(
                connection_class=cls, retry=Retry(NoBackoff(), 1), **kwargs))
            self._sub = redis.asyncio.Redis(connection_pool=redis.asyncio.ConnectionPool(
                connection_class=cls, retry=Retry(NoBackoff(), 0), **kwargs))
        return self._sub if subscriber else self._node

    async def _drop_node(self) -> None:
        clients, self._node, self._sub = (self._node, self._sub), None, None
        for c in clients:
            if c is not None:
                try:
                    await c.connection_pool.disconnect(inuse_connections=False)
                except Exception:  # noqa: BLE001
                    pass
        if self._cluster:
            try:
                await self._client.nodes_manager.initialize()
            except redis.RedisError as e:
                log.info("KEYCACHE_TOPOLOGY_REFRESH_FAILED key=%s error=%s", self.key, e)

    async def _load(self) -> None:
        core = self._core
        trigger = core.loads_started
        async with self._load_lock:
            begun = core.begin_load(trigger)
            if begun is None:
                return
            seq, events = begun
            started = time.monotonic()
            try:
                node = await self._node_client()
                reply = await node.execute_command("JWKS.GET", self.key, "META")
            except redis.ResponseError as e:
                core.counters["load_errors"] += 1
                raise _translate(e) from e
            except BaseException:
                core.counters["load_errors"] += 1
                raise
            meta = None if reply is None else JwksDocument.parse(reply)
            async with self._cond:
                changed = core.install(seq, events, started, meta)
                if core.acker is not None:
                    core.acker.wake()  # the subscriber task acks what it now holds
            # on_change runs before the waiters wake: once wait_ready / wait_generation
            # return, the callback has seen that load.
            if changed is not None and core.on_change is not None:
                try:
                    core.on_change(changed)
                except Exception:  # noqa: BLE001
                    log.exception("KEYCACHE_ON_CHANGE_FAILED key=%s", self.key)
            async with self._cond:
                core.announced = core.snapshot
                self._cond.notify_all()

    # ------------------------------------------------------------------ the subscriber

    async def _run(self) -> None:
        core = self._core
        delay = self._backoff[0]
        subscribed_before = False
        while not self._stop.is_set():
            pubsub = None
            try:
                node = await self._node_client(subscriber=True)
                pubsub = node.pubsub(ignore_subscribe_messages=False)
                await pubsub.ssubscribe(self.channel)
                await self._await_confirmation(pubsub)
                core.connected = True
                core.counters["subscribes"] += 1
                if subscribed_before:
                    core.counters["reconnects"] += 1
                    log.info("KEYCACHE_RESUBSCRIBED key=%s (full reload)", self.key)
                subscribed_before = True
                await self._load()
                delay = self._backoff[0]
                await self._listen(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001
                core.connected = False
                if self._stop.is_set():
                    break
                log.warning("KEYCACHE_DISCONNECTED key=%s error=%s: %s (retrying in %.2f s)",
                            self.key, type(e).__name__, e, delay)
                await self._drop_node()
                try:
                    await asyncio.wait_for(self._stop.wait(), delay * (0.5 + random.random() / 2))
                except asyncio.TimeoutError:
                    pass
                delay = min(delay * 2, self._backoff[1])
            finally:
                if pubsub is not None:
                    try:
                        await pubsub.aclose()
                    except Exception:  # noqa: BLE001
                        pass

    async def _await_confirmation(self, pubsub: Any) -> None:
        deadline = time.monotonic() + self._timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise redis.TimeoutError("no SSUBSCRIBE confirmation")
            message = await pubsub.get_message(timeout=remaining)
            if message is not None and _s(message["type"]) == "ssubscribe":
                return

    async def _listen(self, pubsub: Any) -> None:
        core = self._core
        last_rx = time.monotonic()
        ping_sent: Optional[float] = None
        while not self._stop.is_set():
            if core.acker is not None:
                await self._ack()
            now = time.monotonic()
            if ping_sent is None and now - last_rx >= self._health_interval:
                await pubsub.ping()
                ping_sent = now
            elif ping_sent is not None and now - ping_sent > self._timeout:
                raise redis.TimeoutError(f"no PONG within {self._timeout} s")
            wait = min(0.25, max(0.0, core.refresh_at - now))
            if core.acker is not None:
                wait = min(wait, core.acker.wait(now))
            message = await pubsub.get_message(timeout=wait)
            if message is None:
                if time.monotonic() >= core.refresh_at:
                    core.counters["ttl_loads"] += 1
                    await self._load()
                continue
            last_rx, ping_sent = time.monotonic(), None
            dropped = False
            delivered = 0
            while message is not None:
                kind = _s(message["type"])
                if kind == "smessage":
                    core.deliver([parse_event(message["data"])], time.monotonic())
                    delivered += 1
                elif kind == "sunsubscribe":
                    dropped = True
                elif kind == "ssubscribe":  # resubscribed underneath: reload in full
                    core.counters["reconnects"] += 1
                    delivered += 1
                message = await pubsub.get_message(timeout=0)
            if delivered:
                if delivered > 1:
                    core.counters["coalesced"] += delivered - 1
                await self._load()
            if dropped:
                raise _Resubscribe("the server ended the subscription (slot moved?)")

    async def _ack(self) -> None:
        """See KeyCache._ack."""
        core, acker = self._core, self._core.acker
        now = time.monotonic()
        s = core.snapshot
        newer = acker.missed(None if s is None else s.generation, now)
        if newer is not None:
            core.note_missed(f"JWKS.ACK reported generation {newer}, the cache holds "
                             f"{None if s is None else s.generation}")
            await self._load()
            return
        generation = acker.due(s, now)
        if generation is None:
            return
        etag = s.etag if s is not None and s.generation == generation else None
        try:
            node = await self._node_client()
            reply = await node.execute_command(*acker.command(generation, etag))
        except redis.RedisError as e:
            action = acker.failed(e)
            if action == "resubscribe":
                raise _Resubscribe("JWKS.ACK was redirected: the node no longer serves the "
                                   "key set") from e
            if action == "reload":
                await self._load()
            return
        acker.done(generation, reply, time.monotonic())
        async with self._cond:
            self._cond.notify_all()

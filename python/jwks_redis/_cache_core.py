"""What KeyCache and AsyncKeyCache share: the held key set (parsed once per version), the
freshness bookkeeping that makes a delivered change event block lookups until the reload
after it, and the helpers that derive dedicated connections from a user's client. No I/O
and no locking here: the callers hold their own lock (a threading.Condition or an
asyncio.Condition) around every method that mutates."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Deque, Dict, Optional, Tuple

import jwt
import redis
from jwt.exceptions import PyJWKClientError

from .client import JwksDocument, _s, _translate, events_channel

log = logging.getLogger("jwks_redis.keycache")


class KeyCacheError(PyJWKClientError):
    """A KeyCache could not hand out a key (a `jwt.PyJWKClientError`, as PyJWKClient raises)."""


class KeyCacheStale(KeyCacheError):
    """A change was announced and the reload after it has not succeeded within `stale_wait`
    (or nothing was ever loaded, or the copy is older than `max_stale` allows): the cache
    refuses to answer from what it holds rather than risk accepting a retired key."""


class UnknownSigningKey(KeyCacheError):
    """No published signing key has this kid (after at most one lookup in Redis per
    `miss_interval`)."""


class NoCurrentKey(KeyCacheError):
    """The key set has no current key: there is no key set (yet), or its keys were added and
    none promoted. An issuer has nothing to sign with."""


@dataclass(frozen=True)
class Snapshot:
    """What a cache holds: one version of the key set's JWKS document."""

    exists: bool
    document: Optional[str]
    etag: Optional[str]
    generation: Optional[int]
    kids: Tuple[str, ...]
    #: time.monotonic() when the load that fetched it started.
    loaded_at: float
    #: time.monotonic() until which a copy may be kept (loaded_at + the module's ttl_ms).
    expires_at: float
    #: The kid of the current key (the one an issuer signs with), None if there is none.
    current_kid: Optional[str] = None
    #: True if `current_kid` is known exactly (from a change event or JWKS.INFO of this
    #: generation), False if it is the document's first key (see CacheCore._current).
    current_confirmed: bool = False

    def remaining_ttl(self, now: Optional[float] = None) -> float:
        """Seconds this copy may still be kept (never negative)."""
        return max(0.0, self.expires_at - (time.monotonic() if now is None else now))


@dataclass
class DeliveredEvent:
    """A change event as the cache's subscriber read it (`at` is time.monotonic())."""

    at: float
    message: dict = field(default_factory=dict)


def parse_event(data: Any) -> dict:
    try:
        message = json.loads(_s(data))
        return message if isinstance(message, dict) else {"raw": message}
    except (ValueError, TypeError):
        return {"raw": _s(data)}


class CacheCore:
    """State and bookkeeping (see the module docstring: callers lock)."""

    def __init__(self, key: str, *, miss_interval: float, stale_wait: float,
                 max_stale: Optional[float], refresh_grace: float,
                 on_change: Optional[Callable[[Snapshot], None]]):
        self.key = key
        self.channel = events_channel(key)
        self.miss_interval = miss_interval
        self.stale_wait = stale_wait
        self.max_stale = max_stale
        self.refresh_grace = refresh_grace
        self.on_change = on_change
        self.snapshot: Optional[Snapshot] = None
        # The snapshot whose on_change call (if any) has returned: what wait_ready and
        # wait_generation wait for, so the callback has always seen a load they report.
        self.announced: Optional[Snapshot] = None
        self.keys: Dict[str, jwt.PyJWK] = {}
        self._jwks: Dict[str, dict] = {}
        # Delivered events and the number of them the last successful load started after.
        self.events_seen = 0
        self.fresh_through = 0
        # Single flight: loads started (sequence numbers) and the last one that succeeded.
        self.loads_started = 0
        self.load_done_seq = 0
        self.last_miss_load = float("-inf")
        self.refresh_at = float("inf")
        self.connected = False
        self.recent_events: Deque[DeliveredEvent] = deque(maxlen=256)
        # (generation, current kid) of the last delivered event that named a generation.
        self.event_current: Optional[Tuple[int, Optional[str]]] = None
        #: The acker (None with ack=False), set by the cache.
        self.acker: Optional["Acker"] = None
        self.counters = {
            "loads": 0, "load_errors": 0, "events": 0, "subscribes": 0, "reconnects": 0,
            "coalesced": 0, "misses": 0, "miss_loads": 0, "miss_loads_suppressed": 0,
            "ttl_loads": 0, "stale_refusals": 0, "missed_events": 0,
        }

    # ------------------------------------------------------------------ freshness

    def acked_current(self) -> bool:
        """The generation held is loaded, fresh, and acked (what `wait_acked` waits for)."""
        s = self.snapshot
        return self.acker is not None and s is not None and s.generation is not None \
            and self.fresh() and self.acker.acked_generation == s.generation

    def fresh(self) -> bool:
        """True if a load succeeded and none of the delivered events is newer than it."""
        return self.snapshot is not None and self.fresh_through >= self.events_seen

    def too_old(self, now: float) -> bool:
        s = self.snapshot
        return self.max_stale is not None and s is not None and now > s.expires_at + self.max_stale

    def miss(self, now: float) -> bool:
        """Counts a lookup of an unknown kid; True if it may reload (at most one reload per
        `miss_interval`, so garbage tokens cannot stampede Redis)."""
        self.counters["misses"] += 1
        if now - self.last_miss_load < self.miss_interval:
            self.counters["miss_loads_suppressed"] += 1
            return False
        self.last_miss_load = now
        self.counters["miss_loads"] += 1
        return True

    def deliver(self, messages: list, now: float) -> None:
        """Events were read off the subscription: lookups wait for the reload after them."""
        self.events_seen += len(messages)
        self.counters["events"] += len(messages)
        for m in messages:
            self.recent_events.append(DeliveredEvent(at=now, message=m))
            if isinstance(m.get("generation"), int):
                self._check_gap(m)
                self.event_current = (m["generation"], m.get("current"))

    def _check_gap(self, m: dict) -> None:
        """A missed event shows in the next one: a generation more than one past the last
        seen (held or announced), or the generation held with another ETag. The reload that
        every event triggers heals it; this counts and logs it (`missed_events`)."""
        g = m["generation"]
        s = self.snapshot
        if m.get("event") == "replaced":  # another key set at the name: any generation
            return
        seen = [x for x in (None if s is None else s.generation,
                            None if self.event_current is None else self.event_current[0])
                if x is not None]
        if not seen:
            return
        last = max(seen)
        etag = m.get("etag")
        if g > last + 1:
            self.note_missed("event generation %d after %d" % (g, last))
        elif s is not None and s.generation == g and etag is not None and s.etag is not None \
                and etag != s.etag:
            self.note_missed("event ETag %s for the held generation %d (held %s)" % (etag, g, s.etag))

    def note_missed(self, why: str) -> None:
        """A missed change event was detected (`why`): counted; the caller reloads."""
        self.counters["missed_events"] += 1
        log.warning("KEYCACHE_MISSED_EVENT key=%s: %s (reloading)", self.key, why)

    # ------------------------------------------------------------------ single flight

    def begin_load(self, trigger_seq: int) -> Optional[Tuple[int, int]]:
        """Called holding the load lock. None if a load that started after the trigger (the
        value of `loads_started` when it happened) has already succeeded; else the new
        load's sequence number and the events it will cover."""
        if self.load_done_seq > trigger_seq:
            self.counters["coalesced"] += 1
            return None
        self.loads_started += 1
        return self.loads_started, self.events_seen

    def install(self, seq: int, events_at_start: int, started_at: float,
                meta: Optional[JwksDocument]) -> Optional[Snapshot]:
        """Installs a successful load. Returns the new snapshot if the document changed."""
        old = self.snapshot
        if meta is None:
            snap = Snapshot(False, None, None, None, (), started_at, started_at + 3600.0)
            self.keys, self._jwks = {}, {}
        else:
            keys, jwks, first = self._parse(meta.document)
            ttl = max(0, meta.ttl_ms) / 1000.0
            current, confirmed = self._current(meta.generation, first, keys)
            snap = Snapshot(True, meta.document, meta.etag, meta.generation,
                            tuple(keys), started_at, started_at + ttl, current, confirmed)
            self.keys, self._jwks = keys, jwks
        self.snapshot = snap
        self.fresh_through = max(self.fresh_through, events_at_start)
        self.load_done_seq = max(self.load_done_seq, seq)
        self.counters["loads"] += 1
        # The safety net: reload when the copy's TTL runs out (plus a little grace, so the
        # event of a change scheduled at that moment normally arrives first).
        self.refresh_at = max(snap.expires_at, started_at + 0.05) + self.refresh_grace
        changed = old is None or (old.exists, old.etag) != (snap.exists, snap.etag)
        return snap if changed else None

    def _current(self, generation: int, first: Optional[str],
                 keys: Dict[str, jwt.PyJWK]) -> Tuple[Optional[str], bool]:
        """The current kid of a loaded document, and whether it is exact. The module
        publishes the current key first (then next, then previous), so it is the first key,
        unless the set has no current key (keys added, none promoted yet): a change event
        of the same generation names it exactly (null for none); without one (the first
        load, a reload after a reconnect) the caller confirms it with JWKS.INFO."""
        known = self.event_current
        if known is not None and known[0] == generation:
            return (known[1] if known[1] in keys else None), True
        return (first if first in keys else None), False

    def generation_announced(self, generation: int) -> bool:
        """True once a load of `generation` or later was installed, announced (on_change
        returned) and nothing newer is pending."""
        a = self.announced
        return a is not None and a.generation is not None and a.generation >= generation \
            and self.fresh()

    def confirm_current(self, generation: int, current: Optional[str]) -> None:
        """JWKS.INFO said which key is current at `generation`: if that is the held copy's
        generation, its current kid is now exact."""
        s = self.snapshot
        if s is not None and s.exists and s.generation == generation:
            self.snapshot = replace(s, current_kid=current if current in self.keys else None,
                                    current_confirmed=True)

    def _parse(self, document: str) -> Tuple[Dict[str, jwt.PyJWK], Dict[str, dict], Optional[str]]:
        keys: Dict[str, jwt.PyJWK] = {}
        jwks: Dict[str, dict] = {}
        published = json.loads(document).get("keys", [])
        first = published[0].get("kid") if published and isinstance(published[0], dict) else None
        for jwk in published:
            kid = jwk.get("kid")
            if not kid or jwk.get("use") not in ("sig", None):
                continue
            jwks[kid] = jwk
            old = self._jwks.get(kid)
            if old is not None and old == jwk:
                keys[kid] = self.keys[kid]  # unchanged: keep the parsed key
                continue
            try:
                keys[kid] = jwt.PyJWK(jwk)
            except jwt.exceptions.PyJWTError as e:  # e.g. an algorithm PyJWT lacks
                log.warning("KEYCACHE_UNUSABLE_KEY key=%s kid=%s error=%s", self.key, kid, e)
        return keys, jwks, first

    def jwk(self, kid: str) -> Optional[dict]:
        """The published JWK (as a dict) of a held kid."""
        return self._jwks.get(kid)

    # ------------------------------------------------------------------ lookups

    def lookup_state(self, now: float) -> Optional[str]:
        """None if lookups may be answered now, else why not."""
        if self.snapshot is None:
            return "nothing loaded yet"
        if self.fresh_through < self.events_seen:
            return "a change was announced and the reload after it has not finished"
        if self.too_old(now):
            return "the copy is older than max_stale allows and could not be refreshed"
        return None

    def stats(self) -> dict:
        s = self.snapshot
        acks = self.acker.stats() if self.acker is not None else {
            "acks": 0, "ack_errors": 0, "ack_id": None, "acked_generation": None,
            "ack_error": None}
        return {
            **self.counters,
            **acks,
            "connected": self.connected,
            "generation": None if s is None else s.generation,
            "etag": None if s is None else s.etag,
            "kids": [] if s is None else list(s.kids),
            "current_kid": None if s is None else s.current_kid,
            "fresh": self.fresh(),
        }


def default_ack_id(obj: Any) -> str:
    """host:pid:object, unique per cache in a fleet (the object part tells two caches of one
    process apart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{id(obj):x}"


class Acker:
    """When and what a verifier acks (`JWKS.ACK K GENERATION g ID id TTL ms ETAG etag`), and what the
    reply or an error means. No I/O: the cache's thread (or task) asks `due(now)`, sends the
    command, and reports with `done` or `failed`. Errors are counted and logged at most once
    per `log_period` per kind, never raised."""

    def __init__(self, key: str, ack_id: str, ttl: float, log_period: float = 300.0):
        if not 1.0 <= ttl <= 3600.0:
            raise ValueError("ack_ttl must be 1 .. 3600 seconds")
        if not ack_id or len(ack_id.encode()) > 128 or any(ord(c) < 32 or ord(c) == 127 for c in ack_id):
            raise ValueError("ack_id must be 1 .. 128 bytes without control characters")
        self.key = key
        self.id = ack_id
        self.ttl = ttl
        self.ttl_ms = int(round(ttl * 1000))
        self.period = ttl / 3.0
        self.next_at = float("-inf")  # due at once
        self.log_period = log_period
        self._logged: Dict[str, float] = {}
        self._folded: Dict[str, int] = {}
        self.counters = {"acks": 0, "ack_errors": 0}
        self.acked_generation: Optional[int] = None
        self.last_error: Optional[str] = None
        # (K's generation per an ack reply, when to give up waiting for its event).
        self.behind: Optional[Tuple[int, float]] = None

    def wake(self) -> None:
        """A load finished: ack at the next turn of the loop."""
        self.next_at = float("-inf")

    #: How long an ack reply may be ahead of the held generation before it counts as a
    #: missed event: the event of a change made just before the ack is normally on its way.
    EVENT_GRACE = 1.0

    def wait(self, now: float) -> float:
        """Seconds until the next ack is due or a pending check is (0 if due)."""
        until = self.next_at
        if self.behind is not None:
            until = min(until, self.behind[1])
        return max(0.0, until - now)

    def missed(self, held: Optional[int], now: float) -> Optional[int]:
        """K's generation from an ack reply if the cache still holds an older one
        `EVENT_GRACE` s later (a change event was missed: reload), else None."""
        if self.behind is None:
            return None
        generation, deadline = self.behind
        if held is not None and held >= generation:
            self.behind = None
            return None
        if now < deadline:
            return None
        self.behind = None
        return generation

    def due(self, snapshot: Optional[Snapshot], now: float) -> Optional[int]:
        """The generation to ack now, or None (not due, or nothing held to ack)."""
        if now < self.next_at:
            return None
        self.next_at = now + self.period
        if snapshot is None or not snapshot.exists or snapshot.generation is None:
            return None
        return snapshot.generation

    def command(self, generation: int, etag: Optional[str] = None) -> list:
        """The ack of `generation`, with its document's `etag` when known: generations
        repeat when a key set is deleted and created again, and the ETag lets the module
        refuse (STALE) an ack about a key set that is no longer there."""
        cmd = ["JWKS.ACK", self.key, "GENERATION", str(generation), "ID", self.id,
               "TTL", str(self.ttl_ms)]
        if etag:
            cmd += ["ETAG", etag]
        return cmd

    def done(self, generation: int, reply: Any, now: float) -> None:
        """The ack succeeded; `reply` is K's current generation: if it is newer than the one
        acked, `missed` reports it once the event has had `EVENT_GRACE` to arrive."""
        self.counters["acks"] += 1
        self.acked_generation = generation
        self.last_error = None
        try:
            current = int(reply)
        except (TypeError, ValueError):
            return
        if current > generation and (self.behind is None or self.behind[0] < current):
            self.behind = (current, now + self.EVENT_GRACE)

    def failed(self, error: BaseException) -> Optional[str]:
        """The ack failed: counted and logged (rate-limited). What the caller does about it:
        "resubscribe" if the subscription's node no longer serves the key set (MOVED/ASK),
        "reload" if the module says the document held is another key set's (STALE: one
        deleted or replaced at the name, whose generations repeat), else None."""
        self.counters["ack_errors"] += 1
        if str(error).startswith("STALE"):
            self.last_error = f"{type(error).__name__}: {error}"
            log.warning("KEYCACHE_ACK_STALE key=%s id=%s error=%s (reloading)", self.key,
                        self.id, self.last_error)
            return "reload"
        moved = isinstance(error, redis.exceptions.AskError) or str(error).startswith(("MOVED", "ASK"))
        if isinstance(error, redis.ResponseError) and not moved:
            error = _translate(error)
        text = str(error)
        self.last_error = f"{type(error).__name__}: {text}"
        if moved:  # a topology change, not a failure: the caller resubscribes (and logs)
            log.info("KEYCACHE_ACK_REDIRECTED key=%s id=%s error=%s", self.key, self.id,
                     self.last_error)
            return "resubscribe"
        kind = type(error).__name__ + ":" + text.split(" ", 1)[0]
        now = time.monotonic()
        if now - self._logged.get(kind, float("-inf")) >= self.log_period:
            folded = self._folded.pop(kind, 0)
            more = f" (+{folded} more since the last line)" if folded else ""
            log.warning("KEYCACHE_ACK_FAILED key=%s id=%s error=%s%s (verification goes on; "
                        "the key set's verifier list will not count this cache)",
                        self.key, self.id, self.last_error, more)
            self._logged[kind] = now
        else:
            self._folded[kind] = self._folded.get(kind, 0) + 1
        return None

    def stats(self) -> dict:
        return {**self.counters, "ack_id": self.id, "acked_generation": self.acked_generation,
                "ack_error": self.last_error}


class CacheState:
    """The read-only state both KeyCache flavours expose (they hold a `_core`)."""

    _core: CacheCore

    @property
    def snapshot(self) -> Optional[Snapshot]:
        """What the cache holds now (a `Snapshot`: document, ETag, generation, kids, current
        kid, when it was loaded and until when it may be kept), or None before the first
        load. Never blocks; an immutable object, replaced as a whole by each reload."""
        return self._core.snapshot

    @property
    def generation(self) -> Optional[int]:
        """The key set's generation in the held copy (None before the first load or when
        there is no key set)."""
        s = self._core.snapshot
        return None if s is None else s.generation

    @property
    def etag(self) -> Optional[str]:
        """The module's ETag of the held document (None as for `generation`)."""
        s = self._core.snapshot
        return None if s is None else s.etag

    @property
    def current_kid(self) -> Optional[str]:
        """The kid of the key set's current key in the held copy: the key an issuer signs
        with. None before the first load, without a key set, or while the set has no
        current key. Never blocks: an issuer should call `get_current_kid()` (or use a
        `Signer`), which waits for the reload after a change event like the lookups do."""
        s = self._core.snapshot
        return None if s is None else s.current_kid

    @property
    def connected(self) -> bool:
        """True while the cache's subscription to the events channel is confirmed."""
        return self._core.connected

    @property
    def fresh(self) -> bool:
        """Subscribed, loaded after every delivered event, and within the copy's TTL."""
        core = self._core
        s = core.snapshot
        return core.connected and core.fresh() and s is not None and s.remaining_ttl() > 0


def kid_of(token: Any) -> str:
    header = jwt.get_unverified_header(token)
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise KeyCacheError("the token has no kid in its header")
    return kid


_KEEP = ("host", "port", "db", "username", "password", "credential_provider", "path",
         "client_name", "protocol", "lib_name", "lib_version", "driver_info",
         "socket_keepalive", "socket_keepalive_options", "socket_type")


def dedicated_kwargs(kwargs: dict, timeout: float) -> dict:
    """Connection kwargs for the cache's own connections, taken from the user's client:
    the same address, credentials and TLS (every ssl_* setting); the cache's timeouts; no
    health checks (the cache PINGs itself) and replies as bytes."""
    out = {k: v for k, v in kwargs.items() if k in _KEEP or k.startswith("ssl_")}
    out.update(socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=0)
    return out

"""The JWKS endpoint: a WSGI app serving `/.well-known/jwks.json` from Redis, and the
`jwks-endpoint` command that runs it under waitress (a production WSGI server).

- Body: the key set's JWKS document, from a KeyCache (memory, kept current by the module's
  change events) when the cache is connected and fresh, else from `JWKS.GET K META`.
- `Cache-Control: public, max-age=N`: N is at most the document's remaining TTL (`ttl_ms`,
  which never runs past the next scheduled promotion or retirement) and `max_age`, minus a
  small random amount (up to `jitter` of it, at most `max_jitter` s), so the HTTP caches of
  a fleet do not all expire in the same second. No `stale-if-error`: it would let caches
  serve a document past the moment the module said it may be kept, i.e. possibly with a
  key retired in between (see docs/python.md).
- `ETag` from the module (a hash of the document's bytes); 304 on a matching
  If-None-Match.
- Acks for its HTTP clients (unless `ack=False`, `--no-ack`): `JWKS.ACK K GENERATION g ID
  http:<host>:<port>` every `ack_ttl` / 3 s, where g is the oldest generation an HTTP client
  may still hold: the lowest generation among the responses whose max-age has not run out
  yet, else the generation it serves now (see `HttpAcker`).
- `/status` (unless turned off: `status=False`, `--no-status`): an HTML page, no
  JavaScript, with each key set's keys on a timeline (added, promoted, demoted, retired,
  the next scheduled change), its ETag and generation, read with JWKS.INFO and XREVRANGE
  of the audit trail (jwks_redis.status).
- Failures answer fast and say why, in the log and a short body: Redis unreachable or hung
  (503, `JWKS_ENDPOINT_REDIS_UNAVAILABLE`; connection and socket timeouts of 0.4 s and one
  retry by default, so a hung Redis is a 503 within about 1 s), the module not loaded (500,
  `JWKS_ENDPOINT_MODULE_MISSING`), the key holding another type (500,
  `JWKS_ENDPOINT_WRONG_TYPE`), other errors (500, `JWKS_ENDPOINT_REDIS_ERROR`); no key set
  is a 404.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import socket
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import status as status_page
from .client import (JwksDocument, ModuleNotLoaded, NoPermission, WrongType, _as_dict, _s,
                     _translate)
from .keycache import KeyCache

log = logging.getLogger("jwks_redis.endpoint")

PATH = "/.well-known/jwks.json"
STATUS_PATH = "/status"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_TIMEOUT = 0.4


def redis_from_url(url: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT,
                   retries: int = 1) -> redis.Redis:
    """A client with bounded connect and socket timeouts and few retries (redis-py's default
    client waits 5 s per attempt and retries 10 times: a minute on a hung server)."""
    return redis.Redis.from_url(
        url or os.environ.get("JWKS_REDIS_URL", DEFAULT_REDIS_URL),
        socket_timeout=timeout, socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), retries))


def required_key(key: Optional[str]) -> str:
    """`key`, else JWKS_KEY_SET from the environment; ValueError if neither is set."""
    key = key or os.environ.get("JWKS_KEY_SET")
    if not key:
        raise ValueError("no key set name: pass key=... or set JWKS_KEY_SET")
    return key


class _RateLimitedLog:
    """One line per cause per second at most, with how many were folded into it."""

    def __init__(self, period: float = 1.0):
        self.period = period
        self.last: dict = {}
        self.folded: dict = {}
        self.lock = threading.Lock()

    def __call__(self, level: int, code: str, fmt: str, *args: Any) -> None:
        now = time.monotonic()
        with self.lock:
            if now - self.last.get(code, float("-inf")) < self.period:
                self.folded[code] = self.folded.get(code, 0) + 1
                return
            self.last[code] = now
            folded = self.folded.pop(code, 0)
        suffix = f" (+{folded} more since the last line)" if folded else ""
        log.log(level, code + " " + fmt + suffix, *args)


def cache_control_max_age(ttl_s: float, max_age: int, jitter: float, max_jitter: float,
                          rng: Callable[[], float] = random.random) -> int:
    """max-age for a document that may be kept `ttl_s` more seconds: never above it nor
    `max_age`, lowered by a random fraction (at most `jitter` of it, `max_jitter` s)."""
    bound = max(0.0, min(float(max_age), ttl_s))
    cut = min(bound * jitter, max_jitter) * rng()
    return max(0, int(math.floor(bound - cut)))


class HttpAcker:
    """Acks a key set's generation on behalf of the endpoint's HTTP clients, with its own
    ID (`JWKS.ACK K GENERATION g ID ack_id TTL ack_ttl`): an HTTP client may keep a response
    for its max-age, so g is the lowest generation among the responses handed out whose
    max-age has not run out yet (counted from when it was sent), else the generation served
    now. A new key is thus counted as held by the HTTP fleet only once every older document
    it handed out has expired from the clients' caches.

    Runs its own daemon thread (started by `start()`, which the app calls on its first
    request): an ack after each change of g (the moment an older document's max-age runs
    out, or the first response of a new generation) and every `ack_ttl` / 3 s. At start it
    adopts the generation its ID last acked (from `JWKS.VERIFIERS`, if the ACL allows) as
    held for `max_age` s more: the clients of a previous process with the same ID may still
    hold it. Errors are logged (`JWKS_ENDPOINT_ACK_FAILED`, once per kind per 5 minutes),
    counted in `stats()`, and never reach a request."""

    def __init__(self, client: Any, key: str, ack_id: str, *, ack_ttl: float = 30.0,
                 max_age: int = 300, current: Optional[Callable[[], Optional[int]]] = None):
        if not 1.0 <= ack_ttl <= 3600.0:
            raise ValueError("ack_ttl must be 1 .. 3600 seconds")
        self.client = client
        self.key = key
        self.id = ack_id
        self.ttl_ms = int(round(ack_ttl * 1000))
        self.period = ack_ttl / 3.0
        self.max_age = max_age
        self._current = current
        self._served: Dict[int, float] = {}  # generation -> latest expiry handed out
        self._cond = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._kick = False
        self._say = _RateLimitedLog(period=300.0)
        self.acked: Optional[int] = None
        self.counters = {"acks": 0, "ack_errors": 0}

    def start(self) -> "HttpAcker":
        """Starts the thread (once)."""
        with self._cond:
            if self._thread is not None:
                return self
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"HttpAcker[{self.key}]")
        self._thread.start()
        return self

    def close(self, timeout: float = 2.0) -> None:
        """Stops the thread."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def served(self, generation: Optional[int], max_age: int,
               now: Optional[float] = None) -> None:
        """A response of `generation` went out with `max-age=max_age`."""
        if generation is None:
            return
        now = time.monotonic() if now is None else now
        until = now + max(0, max_age)
        with self._cond:
            known = self._served.get(generation)
            if known is None or until > known:
                self._served[generation] = until
            if known is None:  # a new generation: g may change
                self._kick = True
                self._cond.notify_all()

    def held(self, now: Optional[float] = None) -> Optional[int]:
        """The generation to ack now: the lowest one whose max-age has not run out, else the
        one served now (None if unknown)."""
        now = time.monotonic() if now is None else now
        with self._cond:
            for g in [g for g, until in self._served.items() if until <= now]:
                del self._served[g]
            live = min(self._served) if self._served else None
        if live is not None:
            return live
        return self._current() if self._current is not None else None

    def stats(self) -> dict:
        """Counters and the last generation acked."""
        with self._cond:
            return {**self.counters, "ack_id": self.id, "acked_generation": self.acked,
                    "served": dict(self._served)}

    def _adopt(self) -> None:
        try:
            reply = self.client.execute_command("JWKS.VERIFIERS", self.key)
        except redis.RedisError:
            return  # no permission or an older module: nothing to adopt
        for entry in reply or []:
            d = _as_dict(entry)
            if _s(d.get("id")) == self.id:
                self.served(int(d["generation"]), self.max_age)

    def _next_wake(self, now: float) -> float:
        with self._cond:
            ends = [u for u in self._served.values() if u > now]
        return min([now + self.period] + ends)

    def _run(self) -> None:
        self._adopt()
        next_ack, tried = 0.0, None
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                g = self.held(now)
            except redis.RedisError as e:  # reading the generation served now
                self._say(logging.WARNING, "JWKS_ENDPOINT_ACK_FAILED", "key=%s id=%s error=%s: %s",
                          self.key, self.id, type(e).__name__, e)
                g, next_ack = None, now + self.period
            if g is not None and (g != tried or now >= next_ack):
                self._ack(g)
                tried, next_ack = g, time.monotonic() + self.period
            with self._cond:
                if self._kick:
                    self._kick = False
                    continue
                wait = max(0.0, min(self._next_wake(time.monotonic()), next_ack)
                           - time.monotonic())
                self._cond.wait(wait + 0.001)

    def _ack(self, generation: int) -> None:
        try:
            self.client.execute_command("JWKS.ACK", self.key, "GENERATION", str(generation),
                                        "ID", self.id, "TTL", str(self.ttl_ms))
        except redis.RedisError as e:
            err = _translate(e) if isinstance(e, redis.ResponseError) else e
            with self._cond:
                self.counters["ack_errors"] += 1
            self._say(logging.WARNING, "JWKS_ENDPOINT_ACK_FAILED", "key=%s id=%s error=%s: %s",
                      self.key, self.id, type(err).__name__, err)
            return
        with self._cond:
            self.counters["acks"] += 1
            self.acked = generation


def make_app(client: Optional[redis.Redis] = None, key: Optional[str] = None, *,
             cache: Optional[KeyCache] = None, max_age: int = 300, jitter: float = 0.1,
             max_jitter: float = 30.0, status: bool = True,
             status_keys: Sequence[str] = (), ack: bool = True, ack_id: Optional[str] = None,
             ack_ttl: float = 30.0) -> Callable:
    """The WSGI app: `/.well-known/jwks.json` and, with `status`, `/status`.

    `client` defaults to JWKS_REDIS_URL with bounded timeouts; `key` to JWKS_KEY_SET
    (required); `cache`, if given, serves the document while it is fresh; `max_age`,
    `jitter` and `max_jitter` bound and spread Cache-Control's max-age (see
    `cache_control_max_age`). `status=False` leaves only the JWKS path (`/status` is then a
    404); `status_keys` are more key sets the status page shows after `key`. The status
    page needs `JWKS.INFO` and `XREVRANGE` on the key sets' audit trails (docs/acl.md).

    With `ack` (the default) the app acks for its HTTP clients with `ack_id` (default
    `http:<host>:<pid>`; the command passes `http:<host>:<port>`) every `ack_ttl` / 3 s, an
    `HttpAcker` started on the first request and exposed as `app.acker` (None with
    `ack=False`); the user needs `+jwks.ack` (and `+jwks.verifiers` to take over a previous
    process's ack at start)."""
    client = client if client is not None else redis_from_url()
    key = required_key(key)
    say = _RateLimitedLog()
    shown = [key] + [k for k in status_keys if k != key]

    def serving_now() -> Optional[int]:
        if cache is not None and cache.fresh:
            snap = cache.snapshot
            if snap is not None and snap.exists:
                return snap.generation
        reply = client.execute_command("JWKS.GET", key, "META")
        return None if reply is None else JwksDocument.parse(reply).generation

    acker = HttpAcker(client, key, ack_id or f"http:{socket.gethostname()}:{os.getpid()}",
                      ack_ttl=ack_ttl, max_age=max_age, current=serving_now) if ack else None

    def fetch() -> Tuple[int, Any]:
        if cache is not None and cache.fresh:
            snap = cache.snapshot
            if snap is not None and snap.exists:
                return 200, (snap.document, snap.etag, snap.remaining_ttl(), snap.generation)
        try:
            reply = client.execute_command("JWKS.GET", key, "META")
        except (redis.ConnectionError, redis.TimeoutError) as e:
            say(logging.WARNING, "JWKS_ENDPOINT_REDIS_UNAVAILABLE", "key=%s error=%s: %s",
                key, type(e).__name__, e)
            return 503, "redis unavailable"
        except redis.ResponseError as e:
            err = _translate(e)
            if isinstance(err, ModuleNotLoaded):
                say(logging.ERROR, "JWKS_ENDPOINT_MODULE_MISSING",
                    "key=%s: the redis-jwks module is not loaded on this server (%s)", key, err)
                return 500, "jwks module not loaded"
            if isinstance(err, WrongType):
                say(logging.ERROR, "JWKS_ENDPOINT_WRONG_TYPE",
                    "key=%s holds something other than a key set (%s)", key, err)
                return 500, "key holds the wrong type"
            if isinstance(err, NoPermission):
                say(logging.ERROR, "JWKS_ENDPOINT_NO_PERMISSION", "key=%s: %s", key, err)
                return 500, "no permission"
            say(logging.ERROR, "JWKS_ENDPOINT_REDIS_ERROR", "key=%s: %s", key, err)
            return 500, "redis error"
        except redis.RedisError as e:
            say(logging.ERROR, "JWKS_ENDPOINT_REDIS_ERROR", "key=%s: %s", key, e)
            return 500, "redis error"
        if reply is None:
            return 404, "no key set"
        meta = JwksDocument.parse(reply)
        return 200, (meta.document, meta.etag, meta.ttl_ms / 1000.0, meta.generation)

    def status_response(start_response: Callable, head: bool) -> List[bytes]:
        try:
            sets = status_page.collect(client, shown)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            say(logging.WARNING, "JWKS_ENDPOINT_REDIS_UNAVAILABLE", "key=%s error=%s: %s",
                key, type(e).__name__, e)
            return _plain(start_response, 503, "redis unavailable", [("Retry-After", "1")],
                          head=head)
        body = status_page.render(sets, served_key=key, cache=cache).encode()
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                  ("Cache-Control", "no-store"),
                                  ("Content-Length", str(len(body)))])
        return [] if head else [body]

    def app(environ: dict, start_response: Callable) -> List[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO")
        if path not in (PATH, STATUS_PATH) or (path == STATUS_PATH and not status):
            return _plain(start_response, 404, "not found")
        if method not in ("GET", "HEAD"):
            return _plain(start_response, 405, "method not allowed", [("Allow", "GET, HEAD")])
        if path == STATUS_PATH:
            return status_response(start_response, method == "HEAD")
        if acker is not None:
            acker.start()
        code, result = fetch()
        if code != 200:
            extra = [("Retry-After", "1")] if code == 503 else []
            return _plain(start_response, code, result, extra, head=method == "HEAD")
        document, etag, ttl_s, generation = result
        age = cache_control_max_age(ttl_s, max_age, jitter, max_jitter)
        if acker is not None and method == "GET":
            acker.served(generation, age)  # a 304 renews the client's copy too
        headers = [
            ("Content-Type", "application/json"),
            ("Cache-Control", f"public, max-age={age}"),
            ("ETag", etag),
        ]
        tags = [t.strip().removeprefix("W/") for t in environ.get("HTTP_IF_NONE_MATCH", "").split(",")]
        if etag in tags or "*" in tags:
            start_response("304 Not Modified", headers)
            return []
        body = document.encode()
        start_response("200 OK", headers + [("Content-Length", str(len(body)))])
        return [] if method == "HEAD" else [body]

    app.acker = acker  # type: ignore[attr-defined]
    return app


_REASONS = {404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error",
            503: "Service Unavailable"}


def _plain(start_response: Callable, status: int, text: str, extra: Optional[list] = None,
           head: bool = False) -> List[bytes]:
    body = (text + "\n").encode()
    start_response(f"{status} {_REASONS[status]}", [
        ("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store"),
        ("Content-Length", str(len(body))), *(extra or [])])
    return [] if head else [body]


# --------------------------------------------------------------------------- the command


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The `jwks-endpoint` command line (`jwks-endpoint --help`)."""
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="jwks-endpoint",
        description="Serve a key set's JWKS at /.well-known/jwks.json (waitress).")
    p.add_argument("--redis-url", default=env("JWKS_REDIS_URL", DEFAULT_REDIS_URL),
                   help="Redis with the module (env JWKS_REDIS_URL; default %(default)s)")
    p.add_argument("--key", default=env("JWKS_KEY_SET"),
                   help="the key set to serve (env JWKS_KEY_SET; required)")
    p.add_argument("--bind", default=env("JWKS_BIND", "127.0.0.1:8000"),
                   help="host:port to listen on (env JWKS_BIND; default %(default)s)")
    p.add_argument("--threads", type=int, default=8, help="worker threads (default 8)")
    p.add_argument("--redis-timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="Redis connect and socket timeout in seconds (default %(default)s)")
    p.add_argument("--request-timeout", type=int, default=30,
                   help="seconds an idle or slow HTTP connection is kept (default 30)")
    p.add_argument("--max-age", type=int, default=300,
                   help="upper bound of Cache-Control max-age in seconds (default 300)")
    p.add_argument("--jitter", type=float, default=0.1,
                   help="max-age is lowered by up to this fraction, at random (default 0.1)")
    p.add_argument("--no-keycache", action="store_true",
                   help="read JWKS.GET META on every request instead of serving from memory")
    p.add_argument("--no-ack", action="store_true",
                   help="do not ack for the HTTP clients (JWKS.ACK; docs/python.md)")
    p.add_argument("--ack-id", default=env("JWKS_ACK_ID"),
                   help="the ID the endpoint acks with (env JWKS_ACK_ID; default "
                        "http:<hostname>:<port>)")
    p.add_argument("--ack-ttl", type=float, default=30.0,
                   help="seconds the module counts an ack; acks every third of it (default 30)")
    p.add_argument("--no-status", action="store_true",
                   help="serve only the JWKS path: no /status page")
    p.add_argument("--status-key", action="append", default=[], metavar="KEY",
                   help="another key set to show on /status (repeatable)")
    p.add_argument("--pid-file", metavar="PATH",
                   help="write the process id here at start, remove it at exit "
                        "(stop with: kill \"$(cat PATH)\")")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    if not args.key:
        p.error("--key (or JWKS_KEY_SET) is required")
    return args


def _write_pid_file(path: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


def _remove_pid_file(path: str) -> None:
    try:
        with open(path) as f:
            mine = f.read().strip() == str(os.getpid())
        if mine:
            os.unlink(path)
    except OSError:
        pass


def main(argv: Optional[List[str]] = None) -> None:
    """The `jwks-endpoint` command: the app under waitress, with a KeyCache unless
    `--no-keycache`. SIGTERM and SIGINT stop it cleanly (the pid file is removed)."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    import signal

    import waitress

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    if args.pid_file:
        _write_pid_file(args.pid_file)

    client = redis_from_url(args.redis_url, timeout=args.redis_timeout)
    cache = None
    if not args.no_keycache:
        # The endpoint's own cache does not ack: it serves; its HTTP clients are the
        # verifiers, and the app acks for them (HttpAcker).
        cache = KeyCache(client, args.key, timeout=max(args.redis_timeout, 0.2),
                         health_interval=1.0, ack=False)
    port = args.bind.rsplit(":", 1)[-1]
    app = make_app(client, args.key, cache=cache, max_age=args.max_age, jitter=args.jitter,
                   status=not args.no_status, status_keys=args.status_key,
                   ack=not args.no_ack, ack_ttl=args.ack_ttl,
                   ack_id=args.ack_id or f"http:{socket.gethostname()}:{port}")
    if app.acker is not None:
        app.acker.start()
    log.info("JWKS_ENDPOINT_START key=%s bind=%s redis=%s keycache=%s status=%s", args.key,
             args.bind, client.connection_pool.connection_kwargs.get("host"), cache is not None,
             not args.no_status)
    try:
        waitress.serve(app, listen=args.bind, threads=args.threads,
                       channel_timeout=args.request_timeout, ident="jwks-endpoint",
                       clear_untrusted_proxy_headers=True)
    except KeyboardInterrupt:
        pass
    finally:
        if app.acker is not None:
            app.acker.close()
        if cache is not None:
            cache.close()
        if args.pid_file:
            _remove_pid_file(args.pid_file)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

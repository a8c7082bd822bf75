"""Example JWKS endpoint (WSGI): serves /.well-known/jwks.json from JWKS.GET.

- Content-Type: application/json
- Cache-Control: public, max-age=N, with N never above the cached document's remaining TTL
  (so an HTTP cache never outlives the Redis cache the module invalidates on rotation)
- ETag from the module: a hash of the document's bytes, so it changes exactly when they do
  (also when a key set is recreated or restored and its generation repeats); 304 on a
  matching If-None-Match.

Run:  python -m wsgiref.simple_server is single-threaded; use any WSGI server, e.g.
      gunicorn 'endpoint:make_app()'
"""

from __future__ import annotations

import os
from typing import Callable, Optional

import redis

from jwks_redis.client import _as_dict

PATH = "/.well-known/jwks.json"


def make_app(client: Optional[redis.Redis] = None, key: Optional[str] = None,
             max_age: int = 300) -> Callable:
    client = client or redis.Redis.from_url(os.environ.get("JWKS_REDIS_URL", "redis://127.0.0.1:6379/0"))
    key = key or os.environ.get("JWKS_KEY_SET", "jwks:{auth}")

    def app(environ, start_response):
        if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        try:
            # One command: the document with its ETag and how long it may be kept.
            meta = client.execute_command("JWKS.GET", key, "META")
        except redis.RedisError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain"), ("Retry-After", "5")])
            return [b"key store unavailable\n"]
        if meta is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"no key set\n"]
        meta = _as_dict(meta)
        doc = meta["document"]
        etag = meta["etag"].decode() if isinstance(meta["etag"], bytes) else meta["etag"]
        ttl_s = max(0, int(meta["ttl_ms"]) // 1000)
        headers = [
            ("Content-Type", "application/json"),
            ("Cache-Control", f"public, max-age={min(max_age, ttl_s)}"),
            ("ETag", etag),
        ]
        tags = [t.strip().removeprefix("W/") for t in environ.get("HTTP_IF_NONE_MATCH", "").split(",")]
        if etag in tags or "*" in tags:
            start_response("304 Not Modified", headers)
            return [b""]
        body = doc if isinstance(doc, bytes) else doc.encode()
        start_response("200 OK", headers + [("Content-Length", str(len(body)))])
        return [body] if environ.get("REQUEST_METHOD") != "HEAD" else [b""]

    return app

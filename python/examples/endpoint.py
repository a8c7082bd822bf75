"""Example JWKS endpoint (WSGI): serves /.well-known/jwks.json from JWKS.GET.

- Content-Type: application/json
- Cache-Control: public, max-age=N, with N never above the cached document's remaining TTL
  (so an HTTP cache never outlives the Redis cache the module invalidates on rotation)
- ETag derived from the key-set generation; 304 on a matching If-None-Match.

Run:  python -m wsgiref.simple_server is single-threaded; use any WSGI server, e.g.
      gunicorn 'endpoint:make_app()'
"""

from __future__ import annotations

import os
from typing import Callable, Optional

import redis

from jwks_redis.client import _as_dict, derived_key

PATH = "/.well-known/jwks.json"


def make_app(client: Optional[redis.Redis] = None, key: Optional[str] = None,
             max_age: int = 300) -> Callable:
    client = client or redis.Redis.from_url(os.environ.get("JWKS_REDIS_URL", "redis://127.0.0.1:6379/0"))
    key = key or os.environ.get("JWKS_KEY_SET", "jwks:{auth}")
    cache = derived_key(key, "cache")

    def app(environ, start_response):
        if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        try:
            # One transaction: the document, its TTL and the generation belong together.
            pipe = client.pipeline(transaction=True)
            pipe.execute_command("JWKS.GET", key)
            pipe.execute_command("PTTL", cache)
            pipe.execute_command("JWKS.INFO", key)
            doc, pttl, info = pipe.execute()
        except redis.RedisError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain"), ("Retry-After", "5")])
            return [b"key store unavailable\n"]
        if doc is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"no key set\n"]
        generation = int(_as_dict(info)["generation"])
        etag = f'"g{generation}"'
        ttl_s = max_age if pttl == -1 else max(0, int(pttl) // 1000)
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

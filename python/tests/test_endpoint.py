"""jwks_redis.endpoint: headers, jitter, KeyCache serving, and failures that answer fast and
say why (a hung Redis, a dead one, no module, a key of another type)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from conftest import ROOT, command_calls, free_port, wait_until
from jwks_redis import Add, JwksClient, KeyCache, Promote
from jwks_redis.endpoint import cache_control_max_age, make_app, redis_from_url
from jwks_redis import KeyStore
from test_e2e import QuietHandler, ThreadingWSGIServer, fetch, kids

KEY = "jwks:{auth}"


def serve(app):
    from wsgiref.simple_server import make_server
    httpd = make_server("127.0.0.1", free_port(), app, server_class=ThreadingWSGIServer,
                        handler_class=QuietHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_port}/.well-known/jwks.json"


def bootstrap(server, tmp_path) -> str:
    a = KeyStore(tmp_path / "keys").generate()
    JwksClient(server.client()).rotate(KEY, [Add(a), Promote(a["kid"])])
    return a["kid"]


def max_age(headers) -> int:
    return int(headers["Cache-Control"].split("max-age=")[1])


def test_max_age_is_bounded_by_the_ttl_and_jittered_downwards():
    assert cache_control_max_age(3600, 300, 0.1, 30, rng=lambda: 0.0) == 300
    assert cache_control_max_age(3600, 300, 0.1, 30, rng=lambda: 0.999) == 270
    assert cache_control_max_age(7.5, 300, 0.1, 30, rng=lambda: 0.0) == 7
    assert cache_control_max_age(7.5, 300, 0.1, 30, rng=lambda: 0.999) == 6
    assert cache_control_max_age(0.2, 300, 0.1, 30) == 0
    assert cache_control_max_age(-5, 300, 0.1, 30) == 0
    assert cache_control_max_age(36000, 3600, 0.5, 30, rng=lambda: 0.999) == 3570  # 30 s cap


def test_headers_jitter_head_and_errors(server, tmp_path, caplog):
    caplog.set_level("INFO")
    httpd, url = serve(make_app(redis_from_url(server.url()), KEY))
    try:
        status, _, body = fetch(url)
        assert (status, body) == (404, b"no key set\n")
        bootstrap(server, tmp_path)
        ages = set()
        for _ in range(40):
            status, headers, body = fetch(url)
            assert status == 200 and headers["Content-Type"] == "application/json"
            assert "stale-if-error" not in headers["Cache-Control"]
            ages.add(max_age(headers))
        assert len(ages) > 1 and min(ages) >= 270 and max(ages) <= 300, ages
        status, headers, body = fetch(url, {"If-None-Match": f'W/{headers["ETag"]}'})
        assert status == 304 and body == b""
        import urllib.request
        head = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(head, timeout=5) as r:
            assert r.status == 200 and r.read() == b"" and int(r.headers["Content-Length"]) > 10
        post = urllib.request.Request(url, data=b"x", method="POST")
        assert fetch_request(post)[0] == 405
        # Wrong type at the key: a distinct log line and body.
        server.client().delete(KEY)
        server.client().set(KEY, "not a key set")
        status, headers, body = fetch(url)
        assert (status, body) == (500, b"key holds the wrong type\n")
        assert headers["Cache-Control"] == "no-store"
        assert any("JWKS_ENDPOINT_WRONG_TYPE" in r.message for r in caplog.records)
    finally:
        httpd.shutdown()


def fetch_request(req):
    import urllib.request
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_module_missing_is_told_apart(bare_server, caplog):
    caplog.set_level("INFO")
    httpd, url = serve(make_app(redis_from_url(bare_server.url()), KEY))
    try:
        status, _, body = fetch(url)
        assert (status, body) == (500, b"jwks module not loaded\n")
        assert any(r.levelname == "ERROR" and "JWKS_ENDPOINT_MODULE_MISSING" in r.message
                   for r in caplog.records)
    finally:
        httpd.shutdown()


def test_hung_or_dead_redis_is_a_fast_503(server, tmp_path, caplog):
    caplog.set_level("INFO")
    bootstrap(server, tmp_path)
    httpd, url = serve(make_app(redis_from_url(server.url()), KEY))
    try:
        assert fetch(url)[0] == 200
        server.pause()  # SIGSTOP: connections stay open, nothing answers
        try:
            for _ in range(2):
                t0 = time.monotonic()
                status, headers, body = fetch(url)
                elapsed = time.monotonic() - t0
                assert (status, body) == (503, b"redis unavailable\n")
                assert headers["Retry-After"] == "1" and elapsed < 1.2, elapsed
        finally:
            server.resume()
        assert fetch(url)[0] == 200
        server.kill()
        t0 = time.monotonic()
        assert fetch(url)[0] == 503 and time.monotonic() - t0 < 1.2
        lines = [r.message for r in caplog.records if "JWKS_ENDPOINT_REDIS_UNAVAILABLE" in r.message]
        assert lines and all(r.levelname == "WARNING" for r in caplog.records
                             if "JWKS_ENDPOINT_REDIS_UNAVAILABLE" in r.message)
    finally:
        httpd.shutdown()


def test_served_from_keycache_without_touching_redis(server, tmp_path):
    first = bootstrap(server, tmp_path)
    r = server.client()
    cache = KeyCache(redis_from_url(server.url()), KEY, timeout=0.3, health_interval=0.3)
    assert cache.wait_ready(5)
    httpd, url = serve(make_app(redis_from_url(server.url()), KEY, cache=cache))
    try:
        before = command_calls(r, "jwks.get")
        for _ in range(30):
            status, headers, body = fetch(url)
            assert status == 200 and kids(body) == [first]
        assert command_calls(r, "jwks.get") == before
        b = KeyStore(tmp_path / "keys").generate()
        JwksClient(r).rotate(KEY, [Add(b)])
        wait_until(lambda: cache.generation == 2, 2, "the event")
        assert sorted(kids(fetch(url)[2])) == sorted([first, b["kid"]])
        # A hung Redis: the cache notices (PING) and the endpoint stops serving from it.
        server.pause()
        try:
            wait_until(lambda: not cache.fresh, 3, "the cache to notice")
            t0 = time.monotonic()
            assert fetch(url)[0] == 503 and time.monotonic() - t0 < 1.2
        finally:
            server.resume()
        wait_until(lambda: cache.fresh, 5, "recovery")
        assert fetch(url)[0] == 200
    finally:
        httpd.shutdown()
        cache.close()


def test_the_command_serves_and_needs_a_key(server, tmp_path):
    first = bootstrap(server, tmp_path)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
    env.pop("JWKS_KEY_SET", None)
    missing = subprocess.run([sys.executable, "-m", "jwks_redis.endpoint", "--redis-url",
                              server.url()], env=env, capture_output=True, text=True, timeout=30)
    assert missing.returncode == 2 and "--key" in missing.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "jwks_redis.endpoint", "--redis-url", server.url(), "--key", KEY,
         "--bind", f"127.0.0.1:{port}", "--threads", "4"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
    try:
        status, headers, body = wait_until(lambda: _try(url), 20, "the endpoint")
        assert status == 200 and kids(body) == [first] and max_age(headers) <= 300
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=20)[0].decode()
    assert "JWKS_ENDPOINT_START" in out, out


def _try(url):
    try:
        return fetch(url)
    except OSError:
        return None

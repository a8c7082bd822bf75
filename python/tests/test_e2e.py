"""End to end on loopback: Redis with the module, a real Celery worker (Redis as broker)
running the rotation task, the JWKS endpoint, and PyJWT verifiers (PyJWKClient) checking
tokens signed with whatever key is current while rotations run back to back."""

from __future__ import annotations

import importlib
import json
import os
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import jwt
import pytest

from conftest import ROOT, free_port

KEY = "jwks:{auth}"


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def configure(server, tmp: Path, **extra) -> dict:
    env = {
        "JWKS_REDIS_URL": server.url(0),
        "JWKS_BROKER_URL": server.url(1),
        "JWKS_RESULT_BACKEND": server.url(2),
        "JWKS_KEY_SET": KEY,
        "JWKS_KEY_DIR": str(tmp / "signing-keys"),
        "JWKS_DB_PATH": str(tmp / "keys.sqlite"),
        "JWKS_ROTATE_EVERY": "0",
        "JWKS_PROMOTE_AFTER": "0.4",
        "JWKS_RETIRE_AFTER": "1.5",
        **extra,
    }
    os.environ.update(env)
    return env


def load_rotation():
    import rotation
    return importlib.reload(rotation)


def serve_endpoint(server):
    import endpoint
    httpd = make_server("127.0.0.1", free_port(), endpoint.make_app(server.client(), KEY),
                        server_class=ThreadingWSGIServer, handler_class=QuietHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_port}/.well-known/jwks.json"


def fetch(url: str, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def kids(body: bytes) -> list:
    return [k["kid"] for k in json.loads(body)["keys"]]


@pytest.fixture
def worker(server, tmp_path):
    env = configure(server, tmp_path)
    log = open(tmp_path / "worker.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "rotation", "worker", "--pool=solo",
         "--loglevel=INFO", "--without-heartbeat", "--without-gossip", "--without-mingle"],
        cwd=ROOT / "python" / "examples",
        env={**os.environ, **env, "PYTHONPATH": f"{ROOT / 'python'}:{ROOT / 'python' / 'examples'}"},
        stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 60
    while b"ready." not in (tmp_path / "worker.log").read_bytes():
        assert proc.poll() is None, (tmp_path / "worker.log").read_text()
        assert time.time() < deadline, "celery worker not ready"
        time.sleep(0.1)
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_rotations_never_fail_a_valid_token(server, worker, tmp_path):
    rotation = load_rotation()
    httpd, url = serve_endpoint(server)
    stop = threading.Event()
    stats = {"signed": 0, "verified": 0, "expired": 0, "failures": []}
    tokens: list = []
    lock = threading.Lock()

    def signer():
        client = server.client()
        while not stop.is_set():
            try:
                # Tokens live 1 s, inside the 1.5 s grace a retired key keeps being published.
                now = time.time()
                token = rotation.sign({"sub": "user", "iat": int(now), "exp": now + 1.0}, client)
            except RuntimeError:  # before bootstrap
                time.sleep(0.02)
                continue
            with lock:
                tokens.append(token)
                stats["signed"] += 1
            time.sleep(0.03)

    def verifier():
        # The zero-downtime contract: verifiers refresh their JWKS (lifespan) faster than a
        # `next` key waits before promotion. Production: PROMOTE_AFTER 1 h, lifespan 5 min;
        # here everything is scaled down: PROMOTE_AFTER 0.4 s, lifespan 0.2 s.
        jwks = jwt.PyJWKClient(url, cache_jwk_set=True, lifespan=0.2, cooldown_duration=0.05)
        while not stop.is_set() or tokens:
            with lock:
                token = tokens.pop(0) if tokens else None
            if token is None:
                time.sleep(0.005)
                continue
            if jwt.decode(token, options={"verify_signature": False})["exp"] < time.time():
                with lock:
                    stats["expired"] += 1  # not verified in time: says nothing about rotation
                continue
            try:
                key = jwks.get_signing_key_from_jwt(token)
                jwt.decode(token, key.key, algorithms=["ES256"], leeway=1)
                with lock:
                    stats["verified"] += 1
            except Exception as e:  # noqa: BLE001 - every failure is the finding
                with lock:
                    stats["failures"].append(repr(e))

    threads = [threading.Thread(target=signer)] + [threading.Thread(target=verifier) for _ in range(2)]
    for t in threads:
        t.start()

    applied = []
    try:
        for _ in range(14):
            result = rotation.rotate_keys.delay().get(timeout=30)
            if result.get("applied"):
                applied.append(result)
                # Right after the rotation commits, the endpoint serves the new key set.
                status, headers, body = fetch(url)
                assert status == 200
                assert kids(body)[0] == result["current"]
                assert sorted(kids(body)) == sorted(result["published"])
            time.sleep(0.45)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        httpd.shutdown()

    ops = [op for r in applied for op in r["ops"]]
    assert ops.count("Promote") >= 4 and ops.count("Retire") >= 2, ops
    assert stats["verified"] > 50 and stats["expired"] < stats["verified"] / 10, stats
    assert stats["failures"] == [], stats["failures"][:5]

    # A duplicated run (same message delivered twice) is refused by IFGEN.
    client = server.client()
    info = rotation.JwksClient(client).info(KEY)
    time.sleep(0.5)
    first = rotation.rotate_keys.delay(plan_generation=info.generation).get(timeout=30)
    second = rotation.rotate_keys.delay(plan_generation=info.generation).get(timeout=30)
    assert first["applied"] is True
    assert second == {"applied": False, "duplicate": True}
    trail = rotation.JwksClient(client).audit(KEY)
    changes = [e for e in trail if e.fields.get("generation") == str(first["generation"])
               and e.action.startswith("JWKS_KEY_")]
    assert len(changes) == len(first["ops"])  # one JWKS_KEY_* entry per real change
    assert sum(1 for e in trail if e.action == "JWKS_CACHE_INVALIDATED"
               and e.fields["generation"] == str(first["generation"])) == 1


def test_endpoint_headers_etag_and_304(server, tmp_path):
    configure(server, tmp_path)
    rotation = load_rotation()
    rotation._apply_key_set_update()
    httpd, url = serve_endpoint(server)
    try:
        status, headers, body = fetch(url)
        assert status == 200
        assert headers["Content-Type"] == "application/json"
        max_age = int(headers["Cache-Control"].split("max-age=")[1])
        assert headers["Cache-Control"].startswith("public, ") and 0 < max_age <= 300
        first = headers["ETag"]
        assert first.startswith('"') and first.endswith('"') and len(first) == 24
        status, _, body304 = fetch(url, {"If-None-Match": first})
        assert status == 304 and body304 == b""
        # A rotation changes the ETag.
        time.sleep(0.5)
        rotation._apply_key_set_update()
        status, headers, _ = fetch(url, {"If-None-Match": first})
        assert status == 200 and headers["ETag"] != first
        # A key set recreated with other keys repeats generation 1 but never the ETag.
        client = server.client()
        client.delete(KEY)
        rotation._apply_key_set_update()
        assert rotation.JwksClient(client).info(KEY).generation == 1
        status, headers, _ = fetch(url, {"If-None-Match": first})
        assert status == 200 and headers["ETag"] != first
        # max-age never outlives the cached document.
        server.client().pexpire("jwks:{auth}:cache", 7000)
        _, headers, _ = fetch(url)
        assert int(headers["Cache-Control"].split("max-age=")[1]) <= 7
        assert fetch(url.replace("jwks.json", "x"))[0] == 404
    finally:
        httpd.shutdown()


def test_killing_redis_mid_task_is_logged_counted_and_healed(server_aof, tmp_path, caplog, monkeypatch):
    server = server_aof
    configure(server, tmp_path)
    rotation = load_rotation()
    from jwks_redis.invalidation import INVALIDATION_ERRORS
    rotation._apply_key_set_update()  # bootstrap: generation 1
    before = rotation.JwksClient(server.client()).info(KEY)
    time.sleep(0.5)

    real_rotate = rotation.JwksClient.rotate

    def rotate_after_crash(self, *args, **kwargs):
        server.kill()  # Redis dies after the task planned, before it could apply
        return real_rotate(self, *args, **kwargs)

    monkeypatch.setattr(rotation.JwksClient, "rotate", rotate_after_crash)
    errors = INVALIDATION_ERRORS._value.get()
    caplog.set_level("INFO")
    outcome = rotation._apply_key_set_update()
    assert outcome["applied"] is False and "error" in outcome
    assert INVALIDATION_ERRORS._value.get() == errors + 1
    assert any(r.levelname == "WARNING" and "JWKS_CACHE_INVALIDATION_FAILED" in r.message
               for r in caplog.records)

    # Nothing was half-applied, and the next run completes the rotation.
    monkeypatch.setattr(rotation.JwksClient, "rotate", real_rotate)
    server.start()
    after = rotation.JwksClient(server.client()).info(KEY)
    assert (after.generation, after.current, [k.kid for k in after.keys]) == \
        (before.generation, before.current, [k.kid for k in before.keys])
    outcome = rotation._apply_key_set_update()
    assert outcome["applied"] is True and outcome["generation"] == before.generation + 1


def test_database_source_of_truth_synced_with_replace(server, tmp_path, caplog, monkeypatch):
    configure(server, tmp_path, JWKS_SOURCE="db")
    rotation = load_rotation()
    httpd, url = serve_endpoint(server)
    try:
        for _ in range(5):
            outcome = rotation._apply_key_set_update()
            db = rotation._db()
            published = [r[0] for r in db.execute(
                "SELECT kid FROM signing_keys WHERE state != 'retired' ORDER BY added_ms")]
            current = db.execute("SELECT kid FROM signing_keys WHERE state='current'").fetchone()[0]
            db.close()
            status, _, body = fetch(url)
            assert sorted(kids(body)) == sorted(published) and kids(body)[0] == current
            assert outcome["current"] == current
            time.sleep(0.45)
        # Redis unreachable during the sync: the database change stands, the sync heals next run.
        server.kill()
        caplog.set_level("INFO")
        assert rotation._apply_key_set_update()["applied"] is False
        assert any("JWKS_CACHE_INVALIDATION_FAILED" in r.message for r in caplog.records)
        server.start()
        time.sleep(0.45)
        rotation._apply_key_set_update()
        db = rotation._db()
        published = [r[0] for r in db.execute(
            "SELECT kid FROM signing_keys WHERE state != 'retired' ORDER BY added_ms")]
        db.close()
        assert sorted(kids(fetch(url)[2])) == sorted(published)
    finally:
        httpd.shutdown()

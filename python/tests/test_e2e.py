"""End to end on loopback: Redis with the module, a real Celery worker (Redis as broker)
running the rotation task, the JWKS endpoint, and verifiers (PyJWT's PyJWKClient through
the endpoint, and KeyCache) checking tokens signed with whatever key is current while the
module's lifecycle policy promotes and retires keys by itself."""

from __future__ import annotations

import importlib
import json
import os
import random
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

from conftest import ROOT, free_port, wait_until
from jwks_redis import (Add, GenerationMismatch, JwksClient, KeyCache, NoCurrentKey, Promote,
                        UnknownSigningKey)

KEY = "jwks:{auth}"
PROMOTE_AFTER = 0.3
RETIRE_AFTER = 1.2  # >= the longest token lifetime (1 s: exp is whole seconds) + skew


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
        "JWKS_PROMOTE_AFTER": str(PROMOTE_AFTER),
        "JWKS_RETIRE_AFTER": str(RETIRE_AFTER),
        **extra,
    }
    os.environ.update(env)
    return env


def load_rotation():
    import rotation
    return importlib.reload(rotation)


def serve_endpoint(server, cache=None):
    from jwks_redis.endpoint import make_app
    httpd = make_server("127.0.0.1", free_port(), make_app(server.client(), KEY, cache=cache),
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
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    log.close()


class Traffic:
    """A signer (rotation.sign: a Signer whose KeyCache says which key is current) and verifiers: two
    PyJWKClients through the endpoint (lifespan below PROMOTE_AFTER, the contract for HTTP
    caches) and two KeyCaches."""

    def __init__(self, server, rotation, url):
        self.server, self.rotation, self.url = server, rotation, url
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.tokens: list = []
        self.stats = {"signed": 0, "verified": 0, "expired": 0, "failures": []}
        self.caches = [KeyCache(server.client(), KEY) for _ in range(2)]
        self.threads = [threading.Thread(target=self.signer)]
        self.threads += [threading.Thread(target=self.verifier, args=(self.pyjwk(),)) for _ in range(2)]
        self.threads += [threading.Thread(target=self.verifier, args=(c,)) for c in self.caches]

    def pyjwk(self):
        return jwt.PyJWKClient(self.url, lifespan=PROMOTE_AFTER / 3, cooldown_duration=0.05)

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        for c in self.caches:
            c.close()
        self.rotation.close_signer()

    def signer(self):
        client = self.server.client()
        while not self.stop.is_set():
            try:
                now = time.time()
                # exp is whole seconds (PyJWT truncates it): lifetimes up to 1 s.
                token = self.rotation.sign(
                    {"sub": "user", "iat": int(now), "exp": int(now) + 1}, client)
            except NoCurrentKey:  # before the bootstrap
                time.sleep(0.01)
                continue
            with self.lock:
                self.tokens.append(token)
                self.stats["signed"] += 1
            time.sleep(0.01)

    def verifier(self, keys):
        while not self.stop.is_set():
            with self.lock:
                token = self.tokens[-1] if self.tokens else None
            if token is None:
                time.sleep(0.005)
                continue
            if jwt.decode(token, options={"verify_signature": False})["exp"] <= time.time():
                with self.lock:
                    self.stats["expired"] += 1  # not verified in time: says nothing
                time.sleep(0.005)
                continue
            try:
                key = keys.get_signing_key_from_jwt(token)
                jwt.decode(token, key.key, algorithms=["ES256"])
                with self.lock:
                    self.stats["verified"] += 1
            except jwt.ExpiredSignatureError:
                with self.lock:
                    self.stats["expired"] += 1  # expired while waiting for a CPU
            except Exception as e:  # noqa: BLE001 - every failure is the finding
                with self.lock:
                    self.stats["failures"].append(repr(e))
            time.sleep(0.005)


def test_lifecycle_runs_in_redis_even_with_the_worker_stopped(server, worker, tmp_path):
    rotation = load_rotation()
    client = server.client()
    jwks = JwksClient(client)
    endpoint_cache = KeyCache(server.client(), KEY)
    httpd, url = serve_endpoint(server, endpoint_cache)
    traffic = Traffic(server, rotation, url)
    traffic.start()
    try:
        # Bootstrap through the worker, twice with the same plan: IFGEN refuses the second.
        first = rotation.rotate_keys.delay(plan_generation=0).get(timeout=30)
        second = rotation.rotate_keys.delay(plan_generation=0).get(timeout=30)
        assert first["applied"] and first["ops"] == ["Add", "Promote"], first
        assert second == {"applied": False, "duplicate": True}
        info = jwks.info(KEY)
        assert (info.policy.promote_after_ms, info.policy.retire_after_ms) == (300, 1200)
        trail = jwks.audit(KEY)
        assert [e.action for e in trail if e.action.startswith("JWKS_KEY_")] == \
            ["JWKS_KEY_ADDED", "JWKS_KEY_PROMOTED"]
        # The worker keeps adding `next` keys; Redis promotes and retires them.
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            done = rotation.rotate_keys.delay().get(timeout=30)
            assert not done.get("error"), done
            audit = [e.action for e in jwks.audit(KEY)]
            if audit.count("JWKS_KEY_RETIRED") >= 2:
                break
            time.sleep(0.1)
        # Right after an ADD, stop the worker: the rest of that key's life happens in Redis.
        while True:
            done = rotation.rotate_keys.delay().get(timeout=30)
            if done.get("ops") == ["Add"]:
                break
            time.sleep(0.05)
        after_add = jwks.info(KEY)  # milliseconds later: the promotion is 300 ms away
        worker.kill()  # stopped dead: whatever happens next, Redis does it
        worker.wait(timeout=20)
        added, old_current = done["kids"][0], done["current"]
        added_ms = next(k.added_ms for k in after_add.keys if k.kid == added)
        status, _, body = fetch(url)
        assert status == 200 and added in kids(body)

        def entry(action, kid):
            return next((e for e in jwks.audit(KEY) if e.action == action
                         and e.fields.get("kid") == kid), None)

        promoted = wait_until(lambda: entry("JWKS_KEY_PROMOTED", added), 3, "the promotion")
        demoted_ms = next(k.demoted_ms for k in jwks.info(KEY).keys if k.kid == old_current)
        retired = wait_until(lambda: entry("JWKS_KEY_RETIRED", old_current), 4, "the retirement")
        # On time (never early, late by scheduling noise only): the schedule's own changes.
        assert promoted.fields["user"] == "(schedule)" and promoted.fields["reason"] == "policy"
        assert 0 <= promoted.time_ms - (added_ms + 300) < 250, promoted.time_ms - added_ms
        assert 0 <= demoted_ms - (added_ms + 300) < 250
        assert 0 <= retired.time_ms - (demoted_ms + 1200) < 250, retired.time_ms - demoted_ms
        assert jwks.info(KEY).current == added
        status, _, body = fetch(url)
        assert old_current not in kids(body)
        time.sleep(0.2)
    finally:
        traffic.finish()
        httpd.shutdown()
        endpoint_cache.close()
    stats = traffic.stats
    assert stats["verified"] > 200 and stats["expired"] < stats["verified"] / 10, stats
    assert stats["failures"] == [], stats["failures"][:5]
    audit = [e.action for e in JwksClient(client).audit(KEY)]
    assert audit.count("JWKS_KEY_PROMOTED") >= 4 and audit.count("JWKS_KEY_RETIRED") >= 3


def test_keycache_verifiers_never_accept_a_retired_key_after_its_event(server, tmp_path):
    """Several KeyCache verifiers during a sequence of rotations driven by the policy: zero
    failures for valid tokens, and no verifier hands out a key after it read the event of
    that key's retirement (each probes tokens of retired kids all along)."""
    from jwks_redis import KeyStore
    keys = KeyStore(tmp_path / "keys")
    client = server.client()
    jwks = JwksClient(client)
    a = keys.generate()
    jwks.rotate(KEY, [Add(a), Promote(a["kid"])])
    jwks.policy(KEY, promote_after_ms=100, retire_after_ms=250)
    caches = [KeyCache(server.client(), KEY) for _ in range(4)]
    for c in caches:
        assert c.wait_ready(5)
    tokens = {a["kid"]: _token(keys, a["kid"])}
    current = [a["kid"]]
    stop = threading.Event()
    lock = threading.Lock()
    log = [[] for _ in caches]  # per verifier: (lookup started, kid, accepted)
    failures = []

    def signer_and_rotator():
        rounds, end = 0, None
        while end is None or time.monotonic() < end:
            info = jwks.info(KEY)
            with lock:
                current[0] = info.current
                tokens.setdefault(info.current, _token(keys, info.current))
            if rounds < 15 and not any(k.state == "next" for k in info.keys):
                n = keys.generate()
                try:
                    jwks.rotate(KEY, [Add(n)], if_gen=info.generation)
                except GenerationMismatch:  # the policy changed the set meanwhile: re-read
                    continue
                with lock:
                    tokens[n["kid"]] = _token(keys, n["kid"])
                rounds += 1
                if rounds == 15:
                    end = time.monotonic() + 0.5  # the last promotion and retirements
            time.sleep(0.01)
        stop.set()

    def verifier(i, cache):
        rnd = random.Random(i)
        while not stop.is_set():
            with lock:
                cur = current[0]
                probe = rnd.choice(list(tokens))
            # A token of the current key must verify.
            try:
                jwt.decode(tokens[cur], cache.get_signing_key(cur), algorithms=["ES256"])
            except Exception as e:  # noqa: BLE001
                failures.append((i, cur, repr(e)))
            # Any other kid, retired ones included: record what the cache hands out.
            t0 = time.monotonic()
            try:
                cache.get_signing_key(probe)
                log[i].append((t0, probe, True))
            except UnknownSigningKey:
                log[i].append((t0, probe, False))
            time.sleep(0.001)

    threads = [threading.Thread(target=signer_and_rotator)]
    threads += [threading.Thread(target=verifier, args=(i, c)) for i, c in enumerate(caches)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert failures == [], failures[:5]
        retired_at_gen = {e.fields["kid"]: int(e.fields["generation"])
                          for e in jwks.audit(KEY) if e.action == "JWKS_KEY_RETIRED"}
        assert len(retired_at_gen) >= 10, retired_at_gen
        checked = 0
        for i, cache in enumerate(caches):
            delivered = {}
            for ev in cache.recent_events():
                g = ev.message.get("generation")
                delivered.setdefault(g, ev.at)
            for kid, gen in retired_at_gen.items():
                at = delivered.get(gen)
                assert at is not None, f"verifier {i} never got the event of generation {gen}"
                late = [t for t, k, ok in log[i] if k == kid and ok and t > at]
                assert late == [], f"verifier {i} accepted retired {kid} after its event"
                checked += sum(1 for t, k, ok in log[i] if k == kid and t > at)
        assert checked > 100  # the retired kids were really probed after their events
    finally:
        for c in caches:
            c.close()


def _token(keys, kid: str) -> str:
    return jwt.encode({"sub": "u"}, keys.private_key(kid), algorithm="ES256", headers={"kid": kid})


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
        assert "stale-if-error" not in headers["Cache-Control"]
        first = headers["ETag"]
        assert first.startswith('"') and first.endswith('"') and len(first) == 24
        status, _, body304 = fetch(url, {"If-None-Match": first})
        assert status == 304 and body304 == b""
        # A rotation changes the ETag.
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
        # max-age never outlives the cached document, nor the next scheduled change.
        server.client().pexpire("jwks:{auth}:cache", 7000)
        _, headers, _ = fetch(url)
        assert int(headers["Cache-Control"].split("max-age=")[1]) <= 7
        rotation._apply_key_set_update()  # a `next` key: promotion due in 0.3 s
        _, headers, _ = fetch(url)
        assert headers["Cache-Control"] == "public, max-age=0"
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

    # Nothing was half-applied, and the next run completes the step.
    monkeypatch.setattr(rotation.JwksClient, "rotate", real_rotate)
    server.start()
    after = rotation.JwksClient(server.client()).info(KEY)
    assert (after.generation, after.current, [k.kid for k in after.keys]) == \
        (before.generation, before.current, [k.kid for k in before.keys])
    outcome = rotation._apply_key_set_update()
    assert outcome["applied"] is True and outcome["generation"] == before.generation + 1


def test_database_source_of_truth_synced_with_replace(server, tmp_path, caplog):
    configure(server, tmp_path, JWKS_SOURCE="db", JWKS_PROMOTE_AFTER="0.2", JWKS_RETIRE_AFTER="0.5")
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
            time.sleep(0.25)
        # The task drove the whole cycle: the module's policy stays off.
        assert rotation.JwksClient(server.client()).info(KEY).policy.promote_after_ms == 0
        # Redis unreachable during the sync: the database change stands, the sync heals next run.
        server.kill()
        caplog.set_level("INFO")
        assert rotation._apply_key_set_update()["applied"] is False
        assert any("JWKS_CACHE_INVALIDATION_FAILED" in r.message for r in caplog.records)
        server.start()
        time.sleep(0.25)
        rotation._apply_key_set_update()
        db = rotation._db()
        published = [r[0] for r in db.execute(
            "SELECT kid FROM signing_keys WHERE state != 'retired' ORDER BY added_ms")]
        db.close()
        assert sorted(kids(fetch(url)[2])) == sorted(published)
    finally:
        httpd.shutdown()


def test_private_keys_of_retired_kids_are_pruned(tmp_path):
    from jwks_redis import KeyStore
    keys = KeyStore(tmp_path / "k")
    a, b = keys.generate(), keys.generate()
    assert keys.prune([a["kid"]], older_than_s=60) == []  # too fresh: may be about to publish
    old = time.time() - 120
    os.utime(keys.dir / f"{b['kid']}.pem", (old, old))
    assert keys.prune([a["kid"]], older_than_s=60) == [b["kid"]]
    assert keys.private_key(a["kid"]) is not None

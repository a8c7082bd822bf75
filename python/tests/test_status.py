"""The endpoint's status page (`/status`): what it says, that it needs no JavaScript, that
it is off with `status=False` / `--no-status`, and how it looks in a real headless browser
(Debian's chromium; skipped only if chromium is not installed)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import ROOT, free_port, wait_until
from jwks_redis import Add, JwksClient, KeyStore, Promote, Retire
from jwks_redis.client import KeyInfo, KeySetInfo, NextChange, Policy
from jwks_redis.endpoint import make_app, redis_from_url
from jwks_redis.status import KeySetStatus, render, timelines
from test_endpoint import serve
from test_e2e import fetch

KEY = "jwks:{auth}"


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.parts.append(data)


def page_text(html: str) -> tuple:
    p = _Text()
    p.feed(html)
    return re.sub(r"\s+", " ", " ".join(p.parts)), p.tags


def history(server, keys: KeyStore) -> dict:
    """A key set that has been through a rotation: A retired, B previous, C current, D next
    (the policy will promote D), plus a second key set without a policy."""
    jwks = JwksClient(server.client())
    kids = {}
    for name, alg in (("a", "ES256"), ("b", "RS256"), ("c", "ES256"), ("d", "ES384")):
        kids[name] = keys.generate(alg, kid=f"2026-12-{name}")
    jwks.rotate(KEY, [Add(kids["a"]), Promote("2026-12-a")], reason="bootstrap")
    time.sleep(0.05)
    jwks.rotate(KEY, [Add(kids["b"])])
    time.sleep(0.05)
    jwks.rotate(KEY, [Promote("2026-12-b")])
    time.sleep(0.05)
    jwks.rotate(KEY, [Add(kids["c"])])
    jwks.rotate(KEY, [Promote("2026-12-c"), Retire("2026-12-a")])
    jwks.policy(KEY, promote_after_ms=3600_000, retire_after_ms=7200_000)
    jwks.rotate(KEY, [Add(kids["d"])])
    e = keys.generate("EdDSA", kid="other-1")
    jwks.rotate("jwks:{other}", [Add(e), Promote("other-1")])
    return kids


# --------------------------------------------------------------------------- the page


def test_the_page_shows_who_holds_what_and_how_far_confirm_has_come(server, tmp_path):
    history(server, KeyStore(tmp_path / "keys"))
    jwks = JwksClient(server.client())
    jwks.policy(KEY, confirm_pct=100)
    info = jwks.info(KEY)
    # The one behind first: alone, the other would confirm (and promote) at once.
    jwks.ack(KEY, info.generation - 1, "stuck-2:202", 60_000)
    jwks.ack(KEY, info.generation, "web-1:101", 60_000)
    httpd, url = serve(make_app(redis_from_url(server.url()), KEY, ack=False))
    base = url.rsplit("/.well-known", 1)[0]
    try:
        status, _, body = fetch(base + "/status")
        assert status == 200
        text, tags = page_text(body.decode())
        assert "script" not in tags
        for want in (
            "CONFIRM 100 %",  # in the policy line
            "CONFIRM 100 % for 2026-12-d: 1 of 2 live verifiers hold it, 2 needed (waiting).",
            f"2 live, 1 on generation {info.generation}, 1 behind.",
            f"web-1:101 {info.generation} holds holds",
            f"stuck-2:202 {info.generation - 1} holds missing",
        ):
            assert want in text, (want, text)
        assert body.decode().count('<tr class="behind">') == 1
    finally:
        httpd.shutdown()


def test_the_page_shows_each_keys_life_the_next_change_etag_and_generation(server, tmp_path):
    history(server, KeyStore(tmp_path / "keys"))
    info = JwksClient(server.client()).info(KEY)
    httpd, url = serve(make_app(redis_from_url(server.url()), KEY, status_keys=["jwks:{other}",
                                                                                "jwks:{none}"]))
    base = url.rsplit("/.well-known", 1)[0]
    try:
        status, headers, body = fetch(base + "/status")
        assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
        assert headers["Cache-Control"] == "no-store"
        text, tags = page_text(body.decode())
        assert "script" not in tags  # nothing to run: the page needs no JavaScript
        for want in (
            "jwks:{auth}", f"generation {info.generation}", f"ETag {info.etag}",
            "current key 2026-12-c", "published 2026-12-c, 2026-12-d, 2026-12-b",
            "PROMOTE-AFTER 3600000 ms (60 min), RETIRE-AFTER 7200000 ms (2 h)",
            f"next scheduled change {info.next_change.action} 2026-12-d at",
            "jwks:{other}", "other-1", "No key set at this name.",
            "No verifier has reported in the last ack TTL",
        ):
            assert want in text, (want, text)
        rows = re.findall(r"(2026-12-[a-d]) (ES256|RS256|ES384)? ?(next|current|previous|retired)",
                          text)
        assert [(k, s) for k, _, s in rows] == [
            ("2026-12-c", "current"), ("2026-12-d", "next"), ("2026-12-b", "previous"),
            ("2026-12-a", "retired")], rows
        # D will be promoted an hour after it was added, B retired two hours after demotion.
        assert re.search(r"2026-12-d ES384 next .*? promote at .*? \(in 59 min\)", text), text
        assert re.search(r"2026-12-b RS256 previous .*? retire at .*? \(in (119|120) min\)", text)
        status, headers, body = fetch(base + "/status", {})
        import urllib.request
        with urllib.request.urlopen(urllib.request.Request(base + "/status", method="HEAD"),
                                    timeout=5) as r:
            assert r.status == 200 and r.read() == b""
    finally:
        httpd.shutdown()


def test_the_status_page_is_off_with_status_false(server, tmp_path):
    history(server, KeyStore(tmp_path / "keys"))
    httpd, url = serve(make_app(redis_from_url(server.url()), KEY, status=False))
    try:
        assert fetch(url.rsplit("/.well-known", 1)[0] + "/status")[0] == 404
        assert fetch(url)[0] == 200
    finally:
        httpd.shutdown()


def test_an_unreachable_redis_is_a_503_and_a_refused_read_is_said_on_the_page(server, tmp_path):
    history(server, KeyStore(tmp_path / "keys"))
    server.client().execute_command("ACL", "SETUSER", "noaudit", "on", ">pw", "resetkeys",
                                    "%R~jwks:*", "-@all", "+jwks.info", "+jwks.get")
    client = redis_from_url(f"redis://noaudit:pw@127.0.0.1:{server.port}/0")
    httpd, url = serve(make_app(client, KEY))
    base = url.rsplit("/.well-known", 1)[0]
    try:
        status, _, body = fetch(base + "/status")
        text, _ = page_text(body.decode())
        assert status == 200 and "2026-12-c" in text
        assert "Retired keys are not shown: the audit trail could not be read (NoPermission" in text
        server.stop()
        status, headers, body = fetch(base + "/status")
        assert (status, body) == (503, b"redis unavailable\n") and headers["Retry-After"] == "1"
    finally:
        httpd.shutdown()


def test_kids_and_names_are_escaped():
    evil = '<script>alert(1)</script>"'
    info = KeySetInfo(generation=1, current=evil, keys=[
        KeyInfo(kid=evil, state="current", kty="EC", alg="ES256", use="sig", added_ms=1000,
                promoted_ms=2000, demoted_ms=None)],
        cache_ttl_ms=-2, counters={}, audit_length=2, derived_keys={}, etag='"e"',
        policy=Policy(0, 0, None))
    html = render([KeySetStatus(key="<b>k</b>", info=info)], now_ms=10_000)
    assert "<script" not in html and "<b>k" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;" in html


def test_timelines_rebuild_retired_keys_from_the_audit_trail():
    from jwks_redis.client import AuditEntry
    info = KeySetInfo(generation=3, current="b", keys=[
        KeyInfo("b", "current", "EC", "ES256", "sig", 2000, 3000, None)],
        cache_ttl_ms=-2, counters={}, audit_length=5, derived_keys={},
        policy=Policy(1000, 5000, NextChange("retire", "x", 9000)))
    audit = [AuditEntry("1000-0", {"action": "JWKS_KEY_ADDED", "kid": "a"}),
             AuditEntry("1000-1", {"action": "JWKS_KEY_PROMOTED", "kid": "a"}),
             AuditEntry("2000-0", {"action": "JWKS_KEY_ADDED", "kid": "b"}),
             AuditEntry("3000-0", {"action": "JWKS_KEY_PROMOTED", "kid": "b", "demoted": "a"}),
             AuditEntry("4000-0", {"action": "JWKS_KEY_RETIRED", "kid": "a", "was": "previous"})]
    rows = timelines(KeySetStatus("k", info, audit))
    assert [(r.kid, r.state, r.added_ms, r.promoted_ms, r.demoted_ms, r.retired_ms) for r in rows] == \
        [("b", "current", 2000, 3000, None, None), ("a", "retired", 1000, 1000, 3000, 4000)]


# --------------------------------------------------------------------------- a real browser


def chromium(args: list, tmp_path: Path) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
    return subprocess.run(
        [shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
         "--hide-scrollbars", *args],
        capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_the_status_page_in_a_headless_browser(server, tmp_path):
    """`jwks-endpoint` as deployed (with its KeyCache); chromium loads /status: the text is checked and a screenshot saved as tmp_path/status.png."""
    kids = history(server, KeyStore(tmp_path / "keys"))
    port = free_port()
    log = tmp_path / "endpoint.log"
    pid_file = tmp_path / "endpoint.pid"
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jwks_redis.endpoint", "--redis-url", server.url(), "--key",
             KEY, "--status-key", "jwks:{other}", "--bind", f"127.0.0.1:{port}",
             "--pid-file", str(pid_file)],
            stdout=f, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT / "python")})
    try:
        wait_until(lambda: b"Serving on" in log.read_bytes() or proc.poll() is not None, 30,
                   "the endpoint")
        assert proc.poll() is None, log.read_text()
        url = f"http://127.0.0.1:{port}/status"
        wait_until(lambda: b"subscribed, fresh" in fetch(url)[2], 10, "the KeyCache")
        # (--dump-dom serializes with the page's script engine, so JavaScript stays on here;
        # the DOM it dumps has no script element: nothing on the page needs it.)
        out = chromium(["--dump-dom", url], tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
        text, tags = page_text(out.stdout)
        assert "script" not in tags
        for want in ("JWKS status", "jwks:{auth}", "jwks:{other}", "Keys on a timeline",
                     "current key 2026-12-c", "next scheduled change promote 2026-12-d at",
                     "subscribed, fresh", "retired",
                     *(k["kid"] for k in kids.values())):
            assert want in text, (want, text)
        shot = tmp_path / "status.png"
        out = chromium(["--window-size=1280,1400", f"--screenshot={shot}", url], tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, len(data)
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert (width, height) == (1280, 1400)
        print(f"screenshot: {shot}")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    assert "Traceback" not in log.read_text(), log.read_text()


def test_no_status_turns_the_page_off_in_the_command(server, tmp_path):
    history(server, KeyStore(tmp_path / "keys"))
    port = free_port()
    log = tmp_path / "endpoint.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jwks_redis.endpoint", "--redis-url", server.url(), "--key",
             KEY, "--bind", f"127.0.0.1:{port}", "--no-status", "--no-keycache"],
            stdout=f, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT / "python")})
    try:
        wait_until(lambda: b"Serving on" in log.read_bytes() or proc.poll() is not None, 30,
                   "the endpoint")
        assert fetch(f"http://127.0.0.1:{port}/status")[0] == 404
        status, _, body = fetch(f"http://127.0.0.1:{port}/.well-known/jwks.json")
        assert status == 200 and json.loads(body)["keys"][0]["kid"] == "2026-12-c"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)

"""The recipes in the docs fit the programs they are for: each ACL role of docs/acl.md runs
its program as that user (jwks-endpoint with its KeyCache and status page, an issuer's
Signer, the Celery rotation task's first run with its policy); the install command in
docs/operations.md creates the path its `loadmodule` line names; the glibc floor the docs
state is the one the module links against. (tests/acl.rs checks each recipe grants nothing
more; tests/monitoring.rs runs redis_exporter as the exporter user.)"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jwt
import pytest
import redis

from conftest import ROOT, RedisServer, free_port, module_path, wait_until
from jwks_redis import Add, JwksClient, KeyCache, KeyStore, Promote, Signer

KEY = "jwks:{auth}"
ACL_DOC = ROOT / "docs" / "acl.md"
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.M | re.S)


def recipes() -> dict:
    out = {}
    for line in ACL_DOC.read_text().splitlines():
        if line.startswith("redis-cli ACL SETUSER "):
            out[line.split()[3]] = line
    return out


def apply(server, line: str, tmp_path: Path) -> str:
    """Runs a recipe verbatim in a shell whose redis-cli reaches the test server; returns
    the user's password."""
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    cli = shim / "redis-cli"
    cli.write_text(f'#!/bin/sh\nexec {shutil.which("redis-cli")} -p {server.port} "$@"\n')
    cli.chmod(0o755)
    out = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=10,
                         env={**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"})
    assert out.stdout.strip() == "OK", out.stdout + out.stderr
    return next(w.strip("'")[1:] for w in line.split() if w.strip("'").startswith(">"))


def acl_refusals(server, user: str) -> list:
    """The server's ACL LOG entries for `user`, less redis-py's `CLIENT SETINFO` on connect
    (Redis 7.2+ and Valkey log its refusal; redis-py ignores it; Redis 7.0 has no such
    subcommand, so a recipe cannot name it)."""
    entries = server.client().execute_command("ACL", "LOG")
    out = []
    for e in entries:
        d = dict(zip(e[::2], e[1::2])) if isinstance(e, list) else e
        d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
        if d.get("object") in ("client|setinfo", b"client|setinfo"):
            continue
        if d.get("username") in (user, user.encode()):
            out.append(d)
    return out


def bootstrap(server, keys: KeyStore, alg: str = "ES256") -> dict:
    jwk = keys.generate(alg)
    JwksClient(server.client()).rotate(KEY, [Add(jwk), Promote(jwk["kid"])])
    return jwk


def get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_the_endpoint_recipe_runs_jwks_endpoint_with_its_keycache_and_status_page(server, tmp_path):
    password = apply(server, recipes()["endpoint"], tmp_path)
    keys = KeyStore(tmp_path / "keys")
    a = bootstrap(server, keys)
    port = free_port()
    pid_file = tmp_path / "endpoint.pid"
    log = tmp_path / "endpoint.log"
    url = f"redis://endpoint:{password}@127.0.0.1:{server.port}/0"
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jwks_redis.endpoint", "--redis-url", url, "--key", KEY,
             "--bind", f"127.0.0.1:{port}", "--pid-file", str(pid_file)],
            cwd=ROOT / "python", stdout=f, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT / "python")})
    try:
        wait_until(lambda: b"Serving on" in log.read_bytes() or proc.poll() is not None, 30,
                   "the endpoint")
        assert proc.poll() is None, log.read_text()
        assert pid_file.read_text().strip() == str(proc.pid)
        base = f"http://127.0.0.1:{port}"
        status, page = wait_until(lambda: (lambda r: r if "subscribed, fresh" in r[1] else None)(
            get(f"{base}/status")), 10, "the KeyCache to subscribe")
        assert status == 200 and a["kid"] in page
        # A rotation reaches the endpoint through its KeyCache's subscription.
        b = keys.generate("RS256")
        done = JwksClient(server.client()).rotate(KEY, [Add(b), Promote(b["kid"])])
        wait_until(lambda: json.loads(get(f"{base}/.well-known/jwks.json")[1])["keys"][0]["kid"]
                   == b["kid"], 2, "the new document")  # the current key comes first
        status, page = get(f"{base}/status")
        assert f"generation {done.generation}" in page
        # Past the KeyCache's health interval (1 s): its PINGs are allowed too.
        time.sleep(2.5)
        assert get(f"{base}/status")[1].count("subscribed, fresh") == 1
        # The issuer side under the same role: a Signer's KeyCache confirms the current key.
        client = redis.Redis.from_url(url)
        with KeyCache(client, KEY) as cache:
            assert cache.wait_ready(5)
            token = Signer(cache, keys).sign({"sub": "recipe"})
            assert jwt.get_unverified_header(token)["kid"] == b["kid"]
            assert cache.snapshot.current_confirmed
    finally:
        if proc.poll() is None:
            os.kill(int(pid_file.read_text()), signal.SIGTERM)  # the documented stop
        proc.wait(timeout=20)
    text = log.read_text()
    assert acl_refusals(server, "endpoint") == []
    for bad in ("no permissions", "NOPERM", "NoPermission", "KEYCACHE_DISCONNECTED",
                "UNCONFIRMED", "Traceback"):
        assert bad not in text, text
    assert not pid_file.exists(), "the pid file outlived the endpoint"


def test_the_verifier_recipe_runs_an_acking_keycache_and_cannot_rotate(server, tmp_path):
    password = apply(server, recipes()["verifier"], tmp_path)
    keys = KeyStore(tmp_path / "keys")
    a = bootstrap(server, keys)
    client = redis.Redis(host="127.0.0.1", port=server.port, username="verifier",
                         password=password, socket_timeout=5)
    admin = JwksClient(server.client())
    with KeyCache(client, KEY, ack_id="recipe-verifier", ack_ttl=1.5) as cache:
        assert cache.wait_ready(5) and cache.wait_acked(5)
        tok = jwt.encode({"sub": "v"}, keys.private_key(a["kid"]), algorithm="ES256",
                         headers={"kid": a["kid"]})
        assert jwt.decode(tok, cache.get_signing_key_from_jwt(tok), algorithms=["ES256"])
        b = keys.generate()
        done = admin.rotate(KEY, [Add(b), Promote(b["kid"])])
        assert cache.wait_generation(done.generation, 2)
        wait_until(lambda: [(v["id"], v["generation"]) for v in JwksClient(client).verifiers(KEY)]
                   == [("recipe-verifier", done.generation)], 2, "the verifier's ack")
        assert cache.get_current_kid() == b["kid"] and cache.snapshot.current_confirmed
        time.sleep(1.0)  # past a re-ack and a health check or two
        s = cache.stats()
        assert s["ack_errors"] == 0 and s["acks"] >= 3, s
    assert acl_refusals(server, "verifier") == []
    # Reads and acks, never rotates: the module's write commands are refused.
    from jwks_redis import NoPermission
    verifier = JwksClient(client)
    for write in (lambda: verifier.rotate(KEY, [Promote(a["kid"])]),
                  lambda: verifier.invalidate(KEY),
                  lambda: verifier.policy(KEY, promote_after_ms=1000)):
        with pytest.raises(NoPermission):
            write()
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.set("jwks:{auth}:cache", "forged")
    assert admin.info(KEY).generation == done.generation


def test_the_rotator_recipe_runs_the_celery_tasks_first_run_with_its_policy(server, tmp_path,
                                                                            monkeypatch):
    password = apply(server, recipes()["rotator"], tmp_path)
    monkeypatch.setenv("JWKS_REDIS_URL", f"redis://rotator:{password}@127.0.0.1:{server.port}/0")
    monkeypatch.setenv("JWKS_BROKER_URL", server.url(1))
    monkeypatch.setenv("JWKS_RESULT_BACKEND", server.url(2))
    monkeypatch.setenv("JWKS_KEY_SET", KEY)
    monkeypatch.setenv("JWKS_SOURCE", "redis")  # other tests leave JWKS_* in os.environ
    monkeypatch.setenv("JWKS_DB_PATH", str(tmp_path / "keys.sqlite"))
    monkeypatch.setenv("JWKS_ALG", "ES256")
    monkeypatch.setenv("JWKS_KEY_DIR", str(tmp_path / "signing-keys"))
    monkeypatch.setenv("JWKS_ROTATE_EVERY", "0")
    monkeypatch.setenv("JWKS_PROMOTE_AFTER", "3600")
    monkeypatch.setenv("JWKS_RETIRE_AFTER", "7200")
    monkeypatch.syspath_prepend(str(ROOT / "python" / "examples"))
    import rotation
    rotation = importlib.reload(rotation)
    try:
        first = rotation.rotate_keys.apply().get(timeout=30)  # the task body, in process
        assert first["applied"] and first["ops"] == ["Add", "Promote"], first
        assert first["policy"] == {"promote_after_ms": 3600_000, "retire_after_ms": 7200_000}
        info = JwksClient(server.client()).info(KEY)
        assert (info.policy.promote_after_ms, info.policy.retire_after_ms) == (3600_000, 7200_000)
        second = rotation.rotate_keys.apply().get(timeout=30)
        assert second["applied"] and second["ops"] == ["Add"] and "policy" not in second
    finally:
        rotation.close_signer()
    assert acl_refusals(server, "rotator") == []


# --------------------------------------------------------------------------- install


def test_the_documented_install_command_creates_the_path_loadmodule_names(tmp_path):
    """docs/operations.md: the `sh {test=install}` block, with the system directory and the
    artifact replaced by test paths, then a server started with the page's loadmodule line."""
    page = (ROOT / "docs" / "operations.md").read_text()
    blocks = {info.strip(): body for info, body in FENCE.findall(page)}
    install = blocks["sh {test=install}"]
    conf = next(body for info, body in FENCE.findall(page)
                if info.strip() == "text" and body.startswith("loadmodule "))
    system = re.search(r"(/usr/lib/redis/modules)\b", install).group(1)
    assert system in conf
    root = tmp_path / "root"
    target = str(root) + system
    assert not Path(target).exists()
    # The artifact the page names: the module under test stands in for it.
    dist = tmp_path / "repo" / "target" / "dist"
    dist.mkdir(parents=True)
    shutil.copy(module_path(), dist / "libredis_jwks.so")
    script = install.replace(system, target).replace("sudo ", "")
    out = subprocess.run(["bash", "-c", "set -e\n" + script], cwd=tmp_path / "repo",
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (Path(target) / "libredis_jwks.so").exists()
    cfg = tmp_path / "redis.conf"
    cfg.write_text(conf.replace(system, target))
    # The page's loadmodule line loads the module (the harness loads none itself).
    srv = RedisServer(tmp_path, config=cfg, module=False)
    try:
        client = srv.client()
        names = [m[b"name"] if isinstance(m, dict) else m[1] for m in client.module_list()]
        assert b"jwks" in names, names
        assert client.config_get("jwks.cache-ttl") == {"jwks.cache-ttl": "3600"}
    finally:
        srv.stop()


def glibc_floor(text: str) -> str:
    m = re.search(r"glibc (?:≥|>=) ?(2\.\d+)", text)
    assert m, "no glibc floor stated"
    return m.group(1)


def test_the_glibc_floor_is_stated_next_to_the_artifact_and_is_what_the_module_needs():
    readme = (ROOT / "README.md").read_text()
    artifact = readme.split("## Release artifact", 1)[1].split("\n## ", 1)[0]
    ops = (ROOT / "docs" / "operations.md").read_text()
    install = ops.split("## Install into an existing Redis", 1)[1].split("\n## ", 1)[0]
    floor = glibc_floor(artifact)
    assert glibc_floor(install) == floor
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump not installed")
    out = subprocess.run([objdump, "-T", module_path()], capture_output=True, text=True,
                         check=True).stdout
    needed = max((tuple(map(int, v.split("."))) for v in re.findall(r"GLIBC_(\d+\.\d+)", out)))
    assert needed == tuple(map(int, floor.split("."))), (needed, floor)

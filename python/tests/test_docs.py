"""docs/python.md as a user follows it: every ```sh {test=python} block runs verbatim, in
order, in a fresh virtualenv with the package installed by the doc's own pip command, from
a copy of the repository's python/ (only the Redis port, the HTTP port and the key
directory are replaced). Long-running commands (the worker, the endpoint) run in the
background while the following blocks use them. Every ```python block runs too."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

from conftest import ROOT, free_port, module_path, wait_until
from jwks_redis import JwksClient

DOC = ROOT / "docs" / "python.md"
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.M | re.S)


def blocks(info_prefix: str) -> list:
    return [body for info, body in FENCE.findall(DOC.read_text()) if info.strip() == info_prefix]


def test_every_shell_block_is_marked_for_testing():
    for info, _ in FENCE.findall(DOC.read_text()):
        lang = info.strip().split(" ")[0]
        assert lang in ("python", "text") or info.strip() == "sh {test=python}", info


class Shell:
    """Runs blocks one after another like one terminal: the environment a block exports is
    there for the next ones; each block starts at the (copied) repository root."""

    def __init__(self, work: Path, venv: Path, subs: dict, base_env: dict):
        self.work, self.subs = work, subs
        self.state = work / ".doc-state"
        env = {k: v for k, v in base_env.items()
               if not k.startswith("JWKS_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        if "JWKS_SERVER_BIN" in base_env:
            env["JWKS_SERVER_BIN"] = base_env["JWKS_SERVER_BIN"]
        # The doc's benchmark run loads the module under test, wherever cargo built it.
        env["JWKS_MODULE"] = module_path()
        env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
        env["VIRTUAL_ENV"] = str(venv)
        self.env = env
        self.state.write_text("")
        self.background: list = []

    def script(self, body: str, save: bool) -> str:
        for old, new in self.subs.items():
            body = body.replace(old, new)
        tail = f'\nexport -p > "{self.state}"\n' if save else "\n"
        return f'set -eo pipefail\n. "{self.state}"\ncd "{self.work}"\n{body}{tail}'

    def run(self, body: str, timeout: float = 300) -> str:
        out = subprocess.run(["bash", "-c", self.script(body, True)], env=self.env,
                             capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, f"{body}\n--- stdout\n{out.stdout}\n--- stderr\n{out.stderr}"
        return out.stdout

    def start(self, body: str, log: Path) -> subprocess.Popen:
        f = open(log, "wb")
        proc = subprocess.Popen(["bash", "-c", self.script(body, False)], env=self.env,
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        self.background.append((proc, f))
        return proc

    def stop(self) -> None:
        for proc, f in reversed(self.background):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            f.close()


def test_the_doc_runs_verbatim(server, tmp_path):
    work, venv = tmp_path / "repo", tmp_path / "venv"
    shutil.copytree(ROOT / "python", work / "python",
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests"))
    (work / "bench").symlink_to(ROOT / "bench")
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True, timeout=120)
    # Pin what pip resolves to the versions the suite tests (constraints take no extras).
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(re.sub(r"\[[^]]*\]", "", (ROOT / "python" / "requirements.txt").read_text()))
    http_port = free_port()
    key_dir = tmp_path / "signing-keys"
    shell = Shell(work, venv, {
        "127.0.0.1:6379": f"127.0.0.1:{server.port}",
        "127.0.0.1:8000": f"127.0.0.1:{http_port}",
        "/var/lib/auth/signing-keys": str(key_dir),
    }, {**os.environ, "PIP_CONSTRAINT": str(constraints), "PIP_DISABLE_PIP_VERSION_CHECK": "1"})

    sh = blocks("sh {test=python}")
    handled = []

    def block(prefix: str) -> str:
        body = sh[len(handled)]
        assert body.startswith(prefix), f"doc block {len(handled)} is now:\n{body}"
        handled.append(body)
        return body

    jwks = JwksClient(server.client())
    key = "jwks:{auth}"
    try:
        shell.run(block("pip install"))
        shell.run(block("export JWKS_REDIS_URL"))
        worker_log = tmp_path / "worker.log"
        worker = shell.start(block("cd python/examples && celery -A rotation worker"), worker_log)
        wait_until(lambda: b"ready." in worker_log.read_bytes() or worker.poll() is not None,
                   60, "the worker")
        assert worker.poll() is None, worker_log.read_text()
        out = shell.run(block("cd python/examples && celery -A rotation call"))
        assert re.fullmatch(r"[0-9a-f-]{36}\n", out), out
        info = wait_until(lambda: jwks.info(key), 30, "the bootstrap")
        assert info.current and (info.policy.promote_after_ms, info.policy.retire_after_ms) == \
            (3600_000, 7200_000)
        assert (key_dir / f"{info.current}.pem").exists()
        out = shell.run(block("redis-cli -u"))
        assert "promote_after_ms" in out and "3600000" in out, out
        endpoint_log = tmp_path / "endpoint.log"
        endpoint = shell.start(block("jwks-endpoint "), endpoint_log)
        wait_until(lambda: b"Serving on" in endpoint_log.read_bytes() or endpoint.poll() is not None,
                   30, "the endpoint")
        assert endpoint.poll() is None, endpoint_log.read_text()
        out = shell.run(block("curl -si"))
        assert out.startswith("HTTP/1.1 200") and info.current in out, out
        assert re.search(r"Cache-Control: public, max-age=\d+", out)
        assert re.search(r"^etag: \"", out, re.M | re.I), out
        out = shell.run(block("curl -sf http://127.0.0.1:8000/status"))
        assert out == f"current key</dt><dd>{info.current}\n", out
        out = shell.run(block("python3 -c 'from jwks_redis import invalidate_jwks_cache_sync"))
        assert out == "True\n"
        assert jwks.audit(key)[-1].fields["reason"] == "deploy"
        out = shell.run(block("python3 bench/keycache.py --processes 3"))
        assert "KeyCache (events)" in out
        assert len(handled) == len(sh), "a shell block in the doc is not run by this test"

        # The Python blocks, with the same environment, in the same virtualenv.
        kid = info.current
        checks = {
            "key = cache.get_signing_key_from_jwt(token)": f"""
from jwks_redis import KeyStore
tok = jwt.encode({{"sub": "doc"}}, KeyStore(os.environ["JWKS_KEY_DIR"]).private_key({kid!r}),
                 algorithm="ES256", headers={{"kid": {kid!r}}})
assert verify(tok)["sub"] == "doc"
cache.close()
""",
            "app = make_app(": "assert callable(app)\n",
            'ack_id="billing-api:worker-1"': """
assert stats["ack_errors"] == 0 and stats["acked_generation"] == cache.generation
assert any(v["id"] == "billing-api:worker-1" for v in JwksClient(client).verifiers(key))
""",
            "signer = Signer(": """
assert jwt.get_unverified_header(before)["alg"] == "ES256"
assert jwt.get_unverified_header(after)["alg"] == "RS256"
assert signer.current() == (rs["kid"], "RS256")
""",
        }
        outputs = {}
        for i, body in enumerate(blocks("python")):
            extra = next((v for k, v in checks.items() if k in body), "")
            path = tmp_path / f"doc_block_{i}.py"
            path.write_text(body + extra)
            outputs[i] = shell.run(f'cd python/examples && python3 "{path}"', timeout=60)
            if "jwks.info(" in body:
                # The Clients example on a fresh Redis: no key set yet, no crash.
                out = shell.run(f'cd python/examples && JWKS_KEY_SET="jwks:{{fresh}}" python3 "{path}"',
                                timeout=60)
                assert out == "no key set yet\n", out
        quick = next(i for i, b in enumerate(blocks("python")) if "signer = Signer(" in b)
        lines = outputs[quick].splitlines()
        assert lines[2] == "alice bob" and lines[3].startswith("rejected: ") and lines[4] == "bob", lines
        acking = next(i for i, b in enumerate(blocks("python")) if "ack_id=" in b)
        assert f"billing-api:worker-1 holds generation {info.generation} current" in \
            outputs[acking], outputs[acking]
        changed = next(i for i, b in enumerate(blocks("python")) if "on_change=" in b)
        assert f"generation {info.generation} current {info.current}" in outputs[changed]
    finally:
        shell.stop()
    # Stopping the worker and the endpoint left no traceback behind.
    for log in (worker_log, endpoint_log):
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]

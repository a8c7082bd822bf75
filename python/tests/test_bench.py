"""bench/keycache.py's smoke mode runs (so the benchmark cannot rot); it measures, the
numbers are not asserted beyond every process having seen every rotation."""

import json
import os
import subprocess
import sys

from conftest import ROOT, module_path


def test_keycache_benchmark_smoke_run(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "JWKS_MODULE": module_path()}
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "keycache.py"), "--processes", "3",
                          "--rotations", "5", "--json", str(out)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(out.read_text())
    assert report["keycache"]["n"] == 15 and report["keycache"]["never_held"] == 0
    assert "p99_ms" in report["pyjwkclient_default_lifespan"]
    assert "KeyCache (events)" in run.stdout

#!/usr/bin/env bash
# Runs the whole test suite: formatting and lint gates, unit tests of the pure core, and
# integration tests against real servers (Debian's redis-server, then Valkey 9) started on
# free loopback ports, plus a tiny benchmark smoke run so bench/ cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
python3 -m pip install -q --disable-pip-version-check -r requirements-test.txt -r python/requirements.txt 2>&1 \
  | grep -v "Running pip as the 'root' user" || true

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# Builds the cdylib the integration tests load, then runs unit + integration tests.
cargo build

echo "== redis-server: $(redis-server --version)"
cargo test --all-targets
(cd python && python3 -m pytest -q tests)

VALKEY="$(scripts/valkey-bin.sh)"
echo "== valkey-server: $("$VALKEY" --version)"
JWKS_SERVER_BIN="$VALKEY" cargo test --tests
(cd python && JWKS_SERVER_BIN="$VALKEY" python3 -m pytest -q tests)

echo "== benchmark smoke run (tiny counts, no timings asserted)"
cargo build --release
python3 bench/bench.py --rounds 1 --reads 2000 --writes 2000 --rotations 200 --pairs 500 \
  --audit-invalidations 2000 --json "$(mktemp -d)/bench.json" >/dev/null
python3 bench/instructions.py -n 50 --json "$(mktemp -d)/instructions.json" >/dev/null
echo "bench smoke run: ok"

echo "== valgrind (Valkey with libc malloc): leaks and memory errors from the module"
scripts/valgrind.sh --test rotation --test rejections --test failure_path --test replication --test acl

echo "== fuzzing the pure core (10 s per target)"
scripts/fuzz.sh 10

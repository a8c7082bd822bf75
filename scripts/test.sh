#!/usr/bin/env bash
# Runs the whole test suite: formatting and lint gates, unit tests of the pure core, and
# integration tests against real servers (Debian's redis-server, then Valkey 9) started on
# free loopback ports, the docs' examples, the Python package, a benchmark smoke run so
# bench/ cannot rot, valgrind and fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
python3 -m pip install -q --disable-pip-version-check -r requirements-test.txt -r python/requirements.txt 2>&1 \
  | grep -v "Running pip as the 'root' user" || true

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# The cdylib the integration tests load (debug), and the release build the docs' examples
# and the benchmarks use.
cargo build
cargo build --release

echo "== redis-server: $(redis-server --version)"
cargo test --all-targets
(cd python && python3 -m pytest -q tests)

VALKEY="$(scripts/valkey-bin.sh)"
echo "== valkey-server: $("$VALKEY" --version)"
JWKS_SERVER_BIN="$VALKEY" cargo test --tests
(cd python && JWKS_SERVER_BIN="$VALKEY" python3 -m pytest -q tests)

echo "== benchmark smoke run (tiny counts, no timings asserted)"
python3 bench/bench.py --rounds 1 --reads 2000 --writes 2000 --rotations 200 --pairs 500 \
  --audit-invalidations 2000 --key-sets 200 --scheduled 20 --json "$(mktemp -d)/bench.json" >/dev/null
python3 bench/instructions.py -n 50 --json "$(mktemp -d)/instructions.json" >/dev/null
python3 bench/keycache.py --processes 3 --rotations 5 --json "$(mktemp -d)/keycache.json" >/dev/null
echo "bench smoke run: ok"

echo "== release artifact: built, stripped, and it loads"
scripts/build-release.sh
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --daemonize yes --logfile "$(mktemp)" \
  --loadmodule "$PWD/target/dist/libredis_jwks.so"
for _ in $(seq 50); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$port" MODULE LIST | grep -qx jwks
redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true

echo "== valgrind (Valkey with libc malloc): leaks and memory errors from the module"
scripts/valgrind.sh --test rotation --test rejections --test failure_path --test replication --test acl --test events --test names

echo "== fuzzing the pure core (10 s per target)"
scripts/fuzz.sh 10

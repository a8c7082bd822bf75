#!/usr/bin/env bash
# Builds the module in release mode and runs the benchmarks (bench/bench.py --help).
# Prints a table and writes bench/out/results.json. Asserts no timings.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
python3 -m pip install -q -r bench/requirements.txt
cargo build --release
exec python3 bench/bench.py "$@"

#!/usr/bin/env bash
# Runs the whole test suite: formatting and lint gates, unit tests of the pure core, and
# integration tests against real servers started on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# Builds the cdylib the integration tests load, then runs unit + integration tests.
cargo build
cargo test --all-targets

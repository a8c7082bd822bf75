#!/usr/bin/env bash
# Builds the module (release) and starts Redis with it loaded from redis.conf.example.
# Extra arguments go to redis-server, e.g. scripts/run.sh --port 6380
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release
exec redis-server redis.conf.example "$@"

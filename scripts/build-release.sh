#!/usr/bin/env bash
# Builds the release artifact: a stripped module (target/release/libredis_jwks.so) with its
# debug info kept beside it (libredis_jwks.so.debug, linked by .gnu_debuglink), plus a
# SHA-256 sum. Prints the artifact's path, version and size.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
so=target/release/libredis_jwks.so
objcopy --only-keep-debug "$so" "$so.debug"
objcopy --strip-debug --strip-unneeded --add-gnu-debuglink="$so.debug" "$so"
sha256sum "$so" > "$so.sha256"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
echo "redis-jwks $version: $so ($(stat -c %s "$so") bytes; debug info in $so.debug)"

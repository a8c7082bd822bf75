#!/usr/bin/env bash
# Builds the release artifact in target/dist/ (or $CARGO_TARGET_DIR/dist/): libredis_jwks.so
# stripped, its debug info in libredis_jwks.so.debug (linked by .gnu_debuglink, so debuggers
# and valgrind find it), and a SHA-256 sum. Prints the artifact's path, version and size.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target/dist"
so="$target/dist/libredis_jwks.so"
cp "$target/release/libredis_jwks.so" "$so"
objcopy --only-keep-debug "$so" "$so.debug"
objcopy --strip-debug --strip-unneeded "$so"
(cd "$target/dist" && objcopy --add-gnu-debuglink=libredis_jwks.so.debug libredis_jwks.so)
(cd "$target/dist" && sha256sum libredis_jwks.so > libredis_jwks.so.sha256)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
echo "redis-jwks $version: $so ($(stat -c %s "$so") bytes; debug info in $so.debug)"

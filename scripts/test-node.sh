#!/usr/bin/env bash
# The Node package (node/): installs its dependencies exactly as package-lock.json pins them
# (npm ci), runs its tests with `node --test` against real servers ($JWKS_SERVER_BIN,
# default redis-server, loading $JWKS_MODULE, default target/debug/libredis_jwks.so under
# $CARGO_TARGET_DIR or ./target), then checks that the `npm pack` archive installs in a
# fresh directory and loads with both `require` and `import`. Leaves git status clean
# (node/node_modules is ignored; the archive goes to a temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export JWKS_SERVER_BIN="${JWKS_SERVER_BIN:-redis-server}"
export JWKS_MODULE="${JWKS_MODULE:-${CARGO_TARGET_DIR:-$root/target}/debug/libredis_jwks.so}"
[ -f "$JWKS_MODULE" ] || { echo "test-node.sh: no module at $JWKS_MODULE (cargo build, or set JWKS_MODULE)" >&2; exit 1; }
command -v node >/dev/null && node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
  || { echo "test-node.sh: Node.js 20 or later is required" >&2; exit 1; }
echo "== node $(node --version), npm $(npm --version), $("$JWKS_SERVER_BIN" --version | head -c 60)"

cd node
npm ci --no-audit --no-fund --loglevel=error
node --test --test-concurrency=1 test/*.test.mjs

echo "== npm pack: the archive installs in a fresh directory and loads"
tmp=$(mktemp -d /tmp/node-pack.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
tgz=$(npm pack --silent --pack-destination "$tmp")
cd "$tmp"
npm init -y >/dev/null
npm install --no-audit --no-fund --prefer-offline --loglevel=error "./$tgz" ioredis@5 >/dev/null
node -e 'const { KeyCache, eventsChannel } = require("jwks-redis"); if (typeof KeyCache !== "function" || eventsChannel("jwks:{a}") !== "jwks:{a}:events") process.exit(1)'
node --input-type=module -e 'import { KeyCache } from "jwks-redis"; import cjs from "jwks-redis"; if (KeyCache !== cjs.KeyCache) process.exit(1)'
test -f node_modules/jwks-redis/lib/index.d.ts && test -f node_modules/jwks-redis/lib/index.d.mts
echo "node package: ok"

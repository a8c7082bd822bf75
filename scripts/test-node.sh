#!/usr/bin/env bash
# The Node package (node/): installs its dependencies exactly as package-lock.json pins them
# (npm ci), runs its tests with `node --test` against real servers ($JWKS_SERVER_BIN,
# default redis-server, loading $JWKS_MODULE, default target/debug/libredis_jwks.so under
# $CARGO_TARGET_DIR or ./target), then checks that the `npm pack` archive installs in a
# fresh directory, works from both `require` and `import`, and passes the KeyCache, ack and
# cluster tests with ioredis 6 (the suite runs with the locked ioredis 5). Leaves git status clean
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

echo "== npm pack: the archive installs in a fresh directory and works (require, import)"
tmp=$(mktemp -d /tmp/node-pack.XXXXXX)
port=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')
cleanup() {
  redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
tgz=$(npm pack --silent --pack-destination "$tmp")
"$JWKS_SERVER_BIN" --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --dir "$tmp" --logfile server.log --loadmodule "$JWKS_MODULE" >/dev/null
for _ in $(seq 100); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.1; done
cd "$tmp"
npm init -y >/dev/null
# ioredis 6 here (the suite above ran with 5, as package-lock.json pins it).
npm install --no-audit --no-fund --prefer-offline --loglevel=error "./$tgz" ioredis@6 jose >/dev/null
test -f node_modules/jwks-redis/lib/index.d.ts && test -f node_modules/jwks-redis/lib/index.d.mts
redis-cli -p "$port" JWKS.ROTATE 'jwks:{pack}' ADD \
  '{"kty":"EC","crv":"P-256","kid":"a","x":"PtETt4g7TFkGODedsMIc2hZ0LtAlUEi_QzOR03S8IdE","y":"kJkgmszEyKIkyEOvpPTGigkNBNpemIna4vju_OgqN0A"}' \
  PROMOTE a >/dev/null
export PORT=$port
node -e '
const Redis = require("ioredis");
const { KeyCache } = require("jwks-redis");
(async () => {
  const redis = new Redis(Number(process.env.PORT));
  const cache = await new KeyCache(redis, "jwks:{pack}").ready();
  if (cache.currentKid !== "a" || !(await cache.getSigningKey("a"))) process.exit(1);
  await cache.close();
  redis.disconnect();
})();'
node --input-type=module -e '
import Redis from "ioredis";
import cjs, { KeyCache } from "jwks-redis";
if (KeyCache !== cjs.KeyCache) process.exit(1);
const redis = new Redis(Number(process.env.PORT));
const cache = await new KeyCache(redis, "jwks:{pack}").ready();
if (cache.generation !== 1) process.exit(1);
await cache.close();
redis.disconnect();'
echo "== the packed package with ioredis 6: the KeyCache, ack and cluster tests"
cp -r "$root/node/test" test
ln -s node_modules/jwks-redis/lib lib
JWKS_REPO_ROOT="$root" node --test --test-concurrency=1 test/keycache.test.mjs test/ack.test.mjs test/cluster.test.mjs
echo "node package: ok"

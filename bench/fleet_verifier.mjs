// One verifier process of bench/fleet_node.mjs and bench/confirm_node.mjs (forked by
// fleet_common.mjs's startFleet): a KeyCache (node/lib) on a Redis (standalone) or a Cluster
// client, recording every change it makes (generation, hrtime, kids held) and every log line
// it writes, and reporting them when told to stop.
//
//   argv: JSON { key, target: { port } | { cluster: [{ host, port }] }, options }, index

import { Redis, pkg, clock, ROOT } from './fleet_common.mjs';
import { join } from 'node:path';

const { key, target, options } = JSON.parse(process.argv[2]);
const index = Number(process.argv[3]);
const { KeyCache } = pkg(join(ROOT, 'node', 'lib', 'index.js'));

const logs = [];
// JWKS_BENCH_TRACE=1: also log when the cache's reconnect steps start and end (the
// KeyCache's internals, wrapped here, not changed), to see where a reconnect spends its time.
if (process.env.JWKS_BENCH_TRACE) {
  for (const name of ['_refreshTopology', '_openSession', '_nodeClient', '_load']) {
    const orig = KeyCache.prototype[name];
    KeyCache.prototype[name] = function traced(...a) {
      const t = clock();
      const p = orig.apply(this, a);
      const end = (ok) => (name === '_load' && a[0] === 'event' && ok === 'ok') || logs.push([clock(), 'trace', `TRACE ${name}(${a.join(',')}) ${ok} after ${(clock() - t).toFixed(1)} ms`]);
      if (p && typeof p.then === 'function') p.then(() => end('ok'), (e) => end(`failed: ${e && e.message}`));
      return p;
    };
  }
}

const held = [];
const log = (level) => (...a) => logs.push([clock(), level, a.join(' ')]);
const client = target.cluster
  ? new Redis.Cluster(target.cluster, { redisOptions: { enableReadyCheck: false } })
  : new Redis({ host: '127.0.0.1', port: target.port });
client.on('error', () => {});
const cache = new KeyCache(client, key, {
  ackId: `bench-verifier-${index}`,
  ...options,
  logger: { info: log('info'), warn: log('warn') },
  onChange: (s) => {
    held.push([s.generation, clock(), s.kids]);
    if (process.connected) process.send({ gen: s.generation });
  },
});

let stopping = false;
process.on('message', async (m) => {
  if (!m.stop || stopping) return;
  stopping = true;
  const stats = cache.stats();
  await cache.close();
  client.disconnect();
  process.send({ report: { held, stats, logs } }, () => process.disconnect());
});
process.on('disconnect', () => { if (!stopping) process.exit(0); }); // the driver is gone

await cache.ready(60000);
process.send({ ready: true, gen: cache.generation });

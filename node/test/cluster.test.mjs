// KeyCache on a 3-primary Redis Cluster (ioredis Cluster): it reads and subscribes on the
// primary owning the channel's slot, and follows the slot when it moves.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { KeyCache } from '../lib/index.js';
import { Cluster, KeyStore, bootstrap, rotate, waitUntil } from './helpers.mjs';

const quiet = { info() {}, warn() {} };
let cluster;
before(async () => { cluster = await Cluster.start(3); });
after(async () => { await cluster.stop(); });

test('subscribes on the slot owner and follows a slot move', async () => {
  const keys = new KeyStore();
  const rc = cluster.client();
  for (const name of ['jwks:{billing}', 'plain-a']) await bootstrap(rc, keys, name);
  const a = new KeyCache(rc, 'jwks:{billing}', { logger: quiet });
  const b = new KeyCache(cluster.client({ lazyConnect: true }), 'plain-a', { logger: quiet, backoff: [20, 200] });
  try {
    await Promise.all([a.ready(), b.ready()]);
    for (const cache of [a, b]) {
      const owner = await cluster.owner(cache.channel);
      assert.equal(Number((await owner.client().call('PUBSUB', 'SHARDNUMSUB', cache.channel))[1]), 1);
      const n = await keys.generate();
      const g = (await rotate(rc, cache.key, 'ADD', n, 'PROMOTE', n.kid)).generation;
      await waitUntil(() => cache.generation === g, 2000, `${cache.key} event`);
      assert.equal(cache.currentKid, n.kid);
    }
    // Move plain-a's slot to another primary: the old owner ends the subscription
    // (SUNSUBSCRIBE), the cache resubscribes on the new owner, reloads in full and follows.
    const src = await cluster.owner(b.key);
    const dst = cluster.nodes.find((n) => n !== src);
    await cluster.moveSlot(b.key, src, dst);
    await waitUntil(() => b.stats().reconnects >= 1 && b.connected, 5000, 'resubscribe');
    await waitUntil(async () => Number((await dst.client().call('PUBSUB', 'SHARDNUMSUB', b.channel))[1]) === 1,
      5000, 'the subscription on the new owner');
    const n = await keys.generate();
    const g = (await rotate(rc, b.key, 'ADD', n)).generation;
    await waitUntil(() => b.generation === g, 3000, 'the event from the new owner');
    assert.equal((await b.getJwk(n.kid)).kid, n.kid);
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
});

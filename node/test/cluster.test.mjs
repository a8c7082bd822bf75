// KeyCache on a 3-primary Redis Cluster (ioredis Cluster): it reads and subscribes on the
// primary owning the channel's slot, and follows the slot when it moves.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { KeyCache } from '../lib/index.js';
import { Cluster, KeyStore, ROOT, bootstrap, rotate, verifiers, waitUntil } from './helpers.mjs';

const quiet = { info() {}, warn() {} };
let cluster;
before(async () => { cluster = await Cluster.start(3); });
after(async () => { await cluster.stop(); });

test('subscribes on the slot owner and follows a slot move', async () => {
  const keys = new KeyStore();
  const rc = cluster.client();
  for (const name of ['jwks:{billing}', 'plain-a']) await bootstrap(rc, keys, name);
  const a = new KeyCache(rc, 'jwks:{billing}', { logger: quiet });
  // No health PING within the test: the server's SUNSUBSCRIBE itself must end the session.
  const b = new KeyCache(cluster.client({ lazyConnect: true }), 'plain-a',
    { logger: quiet, backoff: [20, 200], healthInterval: 60000 });
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
    await waitUntil(() => b.stats().reconnects >= 1 && b.connected, 2000, 'resubscribe');
    await waitUntil(async () => Number((await dst.client().call('PUBSUB', 'SHARDNUMSUB', b.channel))[1]) === 1,
      5000, 'the subscription on the new owner');
    const n = await keys.generate();
    const g = (await rotate(rc, b.key, 'ADD', n)).generation;
    await waitUntil(() => b.generation === g, 3000, 'the event from the new owner');
    assert.equal((await b.getJwk(n.kid)).kid, n.kid);
    // Its acks follow the slot too: the new owner lists it with the generation it holds.
    await waitUntil(async () => {
      const listed = await verifiers(dst.client(), b.key);
      return listed.some((v) => v.id === b.ackId && v.generation === g);
    }, 3000, "the ack on the slot's new owner");
    assert.equal(a.stats().ackErrors, 0);
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
});

test("docs/node.md's ACL user, plus cluster|slots and cluster|info, runs a KeyCache on a Cluster client", async () => {
  // The recipe's rules, as the docs write them (single-quoted words unquoted).
  const line = readFileSync(join(ROOT, 'docs', 'node.md'), 'utf8').match(/ACL SETUSER (node_verifier .*)/)[1];
  const rules = line.match(/'[^']*'|\S+/g).map((w) => w.replace(/^'(.*)'$/, '$1'));
  for (const n of cluster.nodes) await n.client().call('ACL', 'SETUSER', ...rules, '+cluster|slots', '+cluster|info');
  const keys = new KeyStore();
  const admin = cluster.client();
  await bootstrap(admin, keys, 'jwks:{acl}');
  const rc = cluster.client({ redisOptions: { username: 'node_verifier', password: 'verifier-secret', enableReadyCheck: false } });
  const cache = new KeyCache(rc, 'jwks:{acl}', { logger: quiet, healthInterval: 100 });
  try {
    await cache.ready();
    const n = await keys.generate();
    const g = (await rotate(admin, 'jwks:{acl}', 'ADD', n, 'PROMOTE', n.kid)).generation;
    await waitUntil(() => cache.generation === g, 2000, 'the event');
    assert.equal((await cache.getJwk(n.kid)).kid, n.kid);
    await new Promise((res) => setTimeout(res, 300)); // a few health PINGs
    const s = cache.stats();
    assert.equal(s.reconnects, 0);
    assert.equal(s.loadErrors, 0);
    await assert.rejects(rc.set('jwks:{acl}:x', '1'), /NOPERM/);
  } finally {
    await cache.close();
  }
});

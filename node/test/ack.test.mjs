// KeyCache acks (issue #21) against a real server: JWKS.ACK after every load and every
// ackTtlMs/3, seen in JWKS.VERIFIERS; acks that fail (no +jwks.ack, READONLY on a replica)
// never touch verification; an ack's reply that is newer than what is held reloads (an event
// that did not reach the cache). Timings are ms-scale; every wait is bounded.
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { hostname } from 'node:os';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { jwtVerify } from 'jose';
import { KeyCache, UnknownSigningKey } from '../lib/index.mjs';
import { KeyStore, Server, bootstrap, commandCalls, rotate, verifiers, waitUntil } from './helpers.mjs';

const KEY = 'jwks:{auth}';
const quiet = { info() {}, warn() {} };
let server;
let r;
let keys;
const caches = [];
const open = (options = {}, client = server.client()) => {
  const c = new KeyCache(client, KEY, { logger: quiet, ...options });
  caches.push(c);
  return c;
};

const verifier = async (id) => (await verifiers(r, KEY)).find((v) => v.id === id);

beforeEach(async () => {
  server = await Server.start();
  r = server.client();
  keys = new KeyStore();
});
afterEach(async () => {
  await Promise.all(caches.splice(0).map((c) => c.close()));
  await server.stop();
});

test('acks after every load: JWKS.VERIFIERS lists the cache with the generation it holds', async () => {
  const first = await bootstrap(r, keys, KEY);
  const cache = await open().ready();
  assert.match(cache.ackId, new RegExp(`^${hostname().replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:${process.pid}:\\d+$`));
  const other = open();
  assert.notEqual(other.ackId, cache.ackId, 'one id per cache');
  let v = await waitUntil(() => verifier(cache.ackId), 2000, 'the first ack');
  assert.equal(v.generation, 1);
  assert.equal(v.current, 1);
  assert.ok(v.ttl_ms > 25000 && v.ttl_ms <= 30000, `ttl_ms ${v.ttl_ms}`); // the default 30 s
  // A rotation: the reload after its event acks the new generation.
  const b = await keys.generate();
  const g = (await rotate(r, KEY, 'ADD', b, 'PROMOTE', b.kid, 'RETIRE', first)).generation;
  await waitUntil(async () => (await verifier(cache.ackId))?.generation === g, 2000, 'the ack of the new generation');
  v = await verifier(cache.ackId);
  assert.equal(v.current, 1);
  assert.ok(v.age_ms < 1000, `age_ms ${v.age_ms}`);
  const s = cache.stats();
  assert.ok(s.acks >= 2, `acks ${s.acks}`);
  assert.equal(s.ackErrors, 0);
  assert.equal(s.ackedGeneration, g);
  assert.equal(s.ackId, cache.ackId);
  assert.equal(s.ackReloads, 0);
  // A chosen id; and a cache with ack: false sends none.
  const named = await open({ ackId: 'api-7' }).ready();
  await waitUntil(() => verifier('api-7'), 2000, "the named cache's ack");
  const acks = await commandCalls(r, 'jwks.ack');
  const silent = await open({ ack: false }).ready();
  await rotate(r, KEY, 'ADD', await keys.generate());
  await waitUntil(() => silent.generation === g + 1 && named.stats().ackedGeneration === g + 1
    && cache.stats().ackedGeneration === g + 1 && other.stats().ackedGeneration === g + 1, 2000, 'the next generation');
  assert.equal(silent.stats().acks, 0);
  assert.equal(silent.stats().ackId, null);
  assert.equal((await verifiers(r, KEY)).length, 3); // cache, the unnamed second one, api-7
  assert.equal((await commandCalls(r, 'jwks.ack')) - acks, 3); // one each, none from silent
});

test('re-acks every ackTtlMs/3 keep the cache live; a closed cache expires', async () => {
  await bootstrap(r, keys, KEY);
  const cache = await open({ ackTtlMs: 1500 }).ready();
  await waitUntil(() => verifier(cache.ackId), 2000, 'the first ack');
  const acks = await commandCalls(r, 'jwks.ack');
  const t0 = performance.now();
  // Three TTLs without any change: still listed, acked within the last ~500 ms each time.
  while (performance.now() - t0 < 4500) {
    const v = await verifier(cache.ackId);
    assert.ok(v, `expired after ${performance.now() - t0} ms`);
    assert.ok(v.age_ms < 1200, `age_ms ${v.age_ms}`);
    assert.ok(v.ttl_ms > 0 && v.ttl_ms <= 1500);
    await sleep(100);
  }
  const sent = (await commandCalls(r, 'jwks.ack')) - acks;
  assert.ok(sent >= 7 && sent <= 11, `${sent} acks in 4.5 s`); // one per 500 ms
  await cache.close();
  const closed = performance.now();
  await waitUntil(async () => !(await verifier(cache.ackId)), 2500, 'the expiry');
  assert.ok(performance.now() - closed <= 1700);
  assert.equal((await commandCalls(r, 'jwks.ack')) - acks, sent, 'no ack after close');
});

test('a user without +jwks.ack verifies tokens; the refused acks are counted, logged once', async () => {
  const first = await bootstrap(r, keys, KEY);
  await r.call('ACL', 'SETUSER', 'no_ack', 'on', '>pw', 'resetkeys', '%R~jwks:*', 'resetchannels', '&jwks:*',
    '-@all', '+jwks.get', '+jwks.key', '+ssubscribe', '+ping');
  const warnings = [];
  const cache = await open({ ackTtlMs: 1500, logger: { info() {}, warn: (m) => warnings.push(m) } },
    server.client({ username: 'no_ack', password: 'pw', enableReadyCheck: false })).ready();
  const { payload } = await jwtVerify(await keys.token(first), cache.getKey);
  assert.equal(payload.sub, 'u');
  const b = await keys.generate();
  const g = (await rotate(r, KEY, 'ADD', b, 'PROMOTE', b.kid, 'RETIRE', first)).generation;
  await waitUntil(() => cache.generation === g, 2000, 'the rotation');
  assert.equal((await jwtVerify(await keys.token(b.kid), cache.getKey)).payload.sub, 'u');
  await assert.rejects(jwtVerify(await keys.token(first), cache.getKey), UnknownSigningKey);
  await waitUntil(() => cache.stats().ackErrors >= 4, 3000, 'periodic acks, refused');
  const s = cache.stats();
  assert.match(s.lastAckError, /NOPERM/);
  assert.equal(s.acks, 0);
  assert.equal(s.ackedGeneration, null);
  assert.equal(s.loadErrors, 0);
  assert.ok(s.connected && s.fresh);
  const ackWarnings = warnings.filter((w) => w.startsWith('KEYCACHE_ACK_FAILED'));
  assert.equal(ackWarnings.length, 1, warnings.join('\n'));
  assert.match(ackWarnings[0], /NOPERM/);
  assert.deepEqual(await verifiers(r, KEY), []);
});

test('an ack reply newer than what is held reloads: events lost on a live subscription', async () => {
  await bootstrap(r, keys, KEY);
  const cache = open({ ackTtlMs: 1500 });
  cache._onEvent = () => {}; // lose every event on the way (the subscription stays up)
  await cache.ready();
  await waitUntil(() => cache.stats().acks >= 1, 2000, 'the first ack');
  const t0 = performance.now();
  const b = await keys.generate();
  const g = (await rotate(r, KEY, 'ADD', b, 'PROMOTE', b.kid)).generation;
  await waitUntil(() => cache.generation === g, 2000, 'the reload the ack reply asked for');
  const took = performance.now() - t0;
  // The next periodic ack comes at most 500 ms (ackTtlMs/3) after the last one; its reply
  // (generation 2) asks for a reload refreshGrace (100 ms) later.
  assert.ok(took < 1000, `converged after ${took} ms`);
  assert.equal(cache.currentKid, b.kid);
  const s = cache.stats();
  assert.equal(s.ackReloads, 1);
  assert.equal(s.missedEvents, 1);
  assert.equal(s.events, 0);
  assert.equal(s.reconnects, 0);
  await waitUntil(async () => (await verifier(cache.ackId))?.generation === g, 1000, 'the ack of the reload');
});

test('an ack reply newer than what is held reloads: the subscriber killed right before a rotation', async () => {
  await bootstrap(r, keys, KEY);
  // Resubscribing (which reloads in full) waits 2.5-5 s: the ack is what finds the change.
  const cache = await open({ ackTtlMs: 1500, backoff: [5000, 5000] }).ready();
  await waitUntil(() => cache.stats().acks >= 1, 2000, 'the first ack');
  const b = await keys.generate();
  const t0 = performance.now();
  const [[, killed], [, reply]] = await r.pipeline().client('KILL', 'TYPE', 'pubsub')
    .call('JWKS.ROTATE', KEY, 'ADD', JSON.stringify(b), 'PROMOTE', b.kid).exec();
  assert.equal(killed, 1);
  const g = reply[reply.indexOf('generation') + 1];
  await waitUntil(() => cache.generation === g, 2000, 'the reload the ack reply asked for');
  assert.ok(performance.now() - t0 < 1000, `converged after ${performance.now() - t0} ms`);
  const s = cache.stats();
  assert.equal(s.connected, false); // still waiting to resubscribe
  assert.equal(s.reconnects, 0);
  assert.equal(s.ackReloads, 1);
  assert.equal(s.missedEvents, 1);
  assert.equal((await cache.getJwk(b.kid)).kid, b.kid);
});

test('a replica refuses acks (READONLY): counted, and the cache verifies from it', async () => {
  await r.config('SET', 'repl-diskless-sync-delay', '0');
  const first = await bootstrap(r, keys, KEY);
  const replica = await Server.start(['--replicaof', '127.0.0.1', String(server.port)]);
  try {
    const rc = replica.client();
    await waitUntil(async () => (await rc.info('replication')).includes('master_link_status:up'), 20000, 'link up');
    const cache = await open({}, replica.client()).ready();
    await waitUntil(() => cache.generation === 1 && cache.stats().ackErrors === 1, 2000, 'the refused ack');
    assert.match(cache.stats().lastAckError, /READONLY/);
    assert.equal((await jwtVerify(await keys.token(first), cache.getKey)).payload.sub, 'u');
    assert.deepEqual(await verifiers(r, KEY), []);
    await cache.close();
  } finally {
    await replica.stop();
  }
});

test('options are checked; a closed cache leaves no timer behind (the process exits)', async () => {
  const client = server.client({ lazyConnect: true });
  assert.throws(() => new KeyCache(client, KEY, { ackId: '' }), TypeError);
  assert.throws(() => new KeyCache(client, KEY, { ackId: 'a\nb' }), TypeError);
  assert.throws(() => new KeyCache(client, KEY, { ackId: 'x'.repeat(129) }), TypeError);
  assert.throws(() => new KeyCache(client, KEY, { ackTtlMs: 999 }), RangeError);
  assert.throws(() => new KeyCache(client, KEY, { ackTtlMs: 3600001 }), RangeError);
  assert.throws(() => new KeyCache(client, KEY, { ackTtlMs: 1500.5 }), RangeError);
  await bootstrap(r, keys, KEY);
  // A process with a cache acking every 20 minutes: after close() and disconnecting its
  // client it must exit at once.
  const lib = fileURLToPath(new URL('../lib/index.js', import.meta.url));
  const program = `
const Redis = require('ioredis');
const { KeyCache } = require(${JSON.stringify(lib)});
(async () => {
  const redis = new Redis(${server.port}, '127.0.0.1');
  const cache = await new KeyCache(redis, ${JSON.stringify(KEY)}, { ackTtlMs: 3600000 }).ready();
  for (let i = 0; i < 400 && cache.stats().acks < 1; i++) await new Promise((res) => setTimeout(res, 5));
  await cache.close();
  redis.disconnect();
  console.log('closed', cache.stats().ackedGeneration);
})();`;
  const t0 = performance.now();
  const { stdout } = await promisify(execFile)(process.execPath, ['-e', program],
    { timeout: 10000, cwd: fileURLToPath(new URL('..', import.meta.url)) });
  assert.equal(stdout.trim(), 'closed 1');
  assert.ok(performance.now() - t0 < 5000);
});

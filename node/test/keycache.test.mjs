// KeyCache against a real server (and a replica): rotations verified with jose, single
// flight, the miss rate limit, reconnects, the TTL safety net, fail-closed lookups, a hung
// server. Timings are ms-scale; every wait is bounded.
import { test, before, after, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { jwtVerify, SignJWT } from 'jose';
import { KeyCache, KeyCacheError, KeyCacheStale, UnknownSigningKey } from '../lib/index.mjs';
import { KeyStore, Server, bootstrap, commandCalls, json, rotate, waitUntil } from './helpers.mjs';

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

beforeEach(async () => {
  server = await Server.start();
  r = server.client();
  keys = new KeyStore();
});
afterEach(async () => {
  await Promise.all(caches.splice(0).map((c) => c.close()));
  await server.stop();
});

test('follows rotations within milliseconds and verifies tokens with jose across them', async () => {
  const first = await bootstrap(r, keys, KEY);
  const cache = await open().ready();
  assert.equal(cache.generation, 1);
  assert.equal(cache.currentKid, first);
  const { payload } = await jwtVerify(await keys.token(first), cache.getKey);
  assert.equal(payload.sub, 'u');
  let prev = first;
  const lags = [];
  const seen = [];
  for (let i = 0; i < 10; i++) {
    const b = await keys.generate(['ES256', 'RS256', 'EdDSA', 'PS256'][i % 4]);
    const t0 = performance.now();
    const g = (await rotate(r, KEY, 'ADD', b, 'PROMOTE', b.kid, 'RETIRE', prev)).generation;
    await waitUntil(() => cache.generation === g, 2000, 'the new generation');
    lags.push(performance.now() - t0);
    assert.equal(cache.currentKid, b.kid);
    const { payload, protectedHeader } = await jwtVerify(await keys.token(b.kid), cache.getKey);
    assert.equal(payload.sub, 'u');
    if (!seen.includes(protectedHeader.alg)) seen.push(protectedHeader.alg);
    // The retired key's tokens are refused from the reload after its event on.
    await assert.rejects(jwtVerify(await keys.token(prev), cache.getKey), UnknownSigningKey);
    prev = b.kid;
  }
  assert.ok(Math.max(...lags) < 500, `lags ${lags}`);
  const s = cache.stats();
  assert.equal(s.events, 10);
  assert.equal(s.reconnects, 0);
  assert.equal(s.missedEvents, 0);
  assert.ok(s.connected && s.fresh);
  const last = cache.recentEvents().at(-1).message;
  assert.equal(last.event, 'rotated');
  assert.equal(last.generation, cache.generation);
  assert.equal(last.current, prev);
  // A token without kid; a token whose alg is not its key's; a deleted key set.
  const { privateKey, alg } = keys.keys.get(prev);
  const noKid = await new SignJWT({ a: 1 }).setProtectedHeader({ alg }).sign(privateKey);
  await assert.rejects(jwtVerify(noKid, cache.getKey), KeyCacheError);
  await assert.rejects(cache.getKey({ kid: prev, alg: alg === 'ES256' ? 'RS256' : 'ES256' }), UnknownSigningKey);
  assert.deepEqual(seen.sort(), ['ES256', 'EdDSA', 'PS256', 'RS256']);
  await r.del(KEY);
  await waitUntil(() => cache.snapshot.exists === false, 2000, 'the deletion');
  assert.equal(cache.currentKid, null);
  await assert.rejects(cache.getSigningKey(prev), (e) => e.code === 'ERR_JWKS_NO_MATCHING_KEY');
});

test('a next key is held before it signs; currentKid follows the events', async () => {
  const a = await keys.generate();
  await rotate(r, KEY, 'ADD', a); // a set with only a next key: no current yet
  const changes = [];
  const cache = open({ onChange: (s) => changes.push(s.generation) });
  await cache.ready();
  const b = await keys.generate();
  await rotate(r, KEY, 'PROMOTE', a.kid, 'ADD', b);
  await waitUntil(() => cache.generation === 2, 2000, 'generation 2');
  assert.equal(cache.currentKid, a.kid);
  assert.deepEqual(cache.snapshot.kids, [a.kid, b.kid]);
  assert.equal((await cache.getJwk(b.kid)).kid, b.kid);
  assert.equal((await cache.getSigningKeys()).length, 2);
  assert.deepEqual(changes, [1, 2]);
});

test('events and concurrent reloads coalesce (single flight)', async () => {
  await bootstrap(r, keys, KEY);
  const cache = await open().ready();
  // 20 changes in one transaction: 20 events arrive together, one or two reloads.
  let calls = await commandCalls(r, 'jwks.get');
  const multi = r.multi();
  for (let i = 0; i < 20; i++) multi.call('JWKS.ROTATE', KEY, 'ADD', json(await keys.generate()));
  await multi.exec();
  await waitUntil(() => cache.generation === 21, 2000, 'generation 21');
  await sleep(50);
  assert.equal(cache.stats().events, 20);
  assert.ok((await commandCalls(r, 'jwks.get')) - calls <= 2);
  // 16 reloads asked for at once: one JWKS.GET serves them all.
  calls = await commandCalls(r, 'jwks.get');
  const coalesced = cache.stats().coalesced;
  await Promise.all(Array.from({ length: 16 }, () => cache.refresh()));
  assert.equal((await commandCalls(r, 'jwks.get')) - calls, 1);
  assert.ok(cache.stats().coalesced - coalesced >= 15);
});

test('unknown kids cannot stampede Redis: rate-limited JWKS.KEY lookups', async () => {
  await bootstrap(r, keys, KEY);
  const cache = await open({ missInterval: 300 }).ready();
  const [gets, lookups] = [await commandCalls(r, 'jwks.get'), await commandCalls(r, 'jwks.key')];
  const t0 = performance.now();
  const results = await Promise.allSettled(Array.from({ length: 800 }, (_, i) => cache.getSigningKey(`garbage-${i}`)));
  const elapsed = performance.now() - t0;
  assert.ok(results.every((x) => x.status === 'rejected' && x.reason instanceof UnknownSigningKey));
  assert.ok((await commandCalls(r, 'jwks.key')) - lookups <= 1 + Math.floor(elapsed / 300));
  assert.equal(await commandCalls(r, 'jwks.get'), gets); // no reloads for garbage
  await sleep(310);
  await assert.rejects(cache.getSigningKey('garbage-again'), UnknownSigningKey);
  const s = cache.stats();
  assert.equal(s.misses, 801);
  assert.ok(s.missLookups <= 2 + Math.floor(elapsed / 300));
  assert.equal(s.missLoads, 0);
});

test('negative cache: a kid found absent is refused without lookups for negativeTtl', async () => {
  await bootstrap(r, keys, KEY);
  const cache = await open({ missInterval: 0, negativeTtl: 300 }).ready();
  const lookups = await commandCalls(r, 'jwks.key');
  for (let i = 0; i < 3; i++) await assert.rejects(cache.getSigningKey('nope'), UnknownSigningKey);
  assert.equal((await commandCalls(r, 'jwks.key')) - lookups, 1);
  assert.equal(cache.stats().negativeHits, 2);
  await sleep(310);
  await assert.rejects(cache.getSigningKey('nope'), UnknownSigningKey);
  assert.equal((await commandCalls(r, 'jwks.key')) - lookups, 2);
});

test('a key published while events were lost is found by one lookup and a full reload', async () => {
  await bootstrap(r, keys, KEY);
  const cache = await open({ missInterval: 200, backoff: [600, 600] }).ready();
  // The subscription is dropped (and comes back only after 300-600 ms), so the event of
  // this change is lost: the only way to learn the new key now is the miss lookup.
  const b = await keys.generate();
  await r.client('KILL', 'TYPE', 'pubsub');
  await rotate(r, KEY, 'ADD', b);
  assert.equal((await cache.getJwk(b.kid)).kid, b.kid);
  const s = cache.stats();
  assert.equal(s.missLookups, 1);
  assert.equal(s.missLoads, 1);
  assert.equal(s.missedEvents, 1);
  assert.equal(cache.generation, 2);
});

test('reconnects and server restarts reload in full', async () => {
  await bootstrap(r, keys, KEY);
  const cache = await open({ backoff: [20, 200] }).ready();
  const events = cache.stats().events;
  // Kill the subscription and change the key set in the same round trip: its event goes
  // to nobody; the reload after resubscribing must bring the change.
  await r.pipeline().client('KILL', 'TYPE', 'pubsub').call('JWKS.ROTATE', KEY, 'ADD', json(await keys.generate())).exec();
  await waitUntil(() => cache.generation === 2, 3000, 'the reload after reconnecting');
  let s = cache.stats();
  assert.equal(s.reconnects, 1);
  assert.equal(s.events, events);
  // A restarted server (nothing persisted: the key set is gone).
  await server.kill();
  await server.start();
  await waitUntil(() => cache.snapshot.exists === false, 5000, 'the reload after the restart');
  s = cache.stats();
  assert.ok(s.reconnects >= 2 && s.connected);
});

test('the TTL safety net catches a change whose event was lost', async () => {
  await r.config('SET', 'jwks.cache-ttl', '1');
  const kid = await bootstrap(r, keys, KEY);
  const cache = open({ refreshGrace: 50 });
  cache._onEvent = () => {}; // lose every event on the way (the module announces them all)
  await cache.ready();
  const ttl = cache.snapshot.expiresAt - performance.now();
  assert.ok(ttl > 0 && ttl <= 1000, `ttl ${ttl}`);
  await r.flushall();
  await sleep(100);
  assert.equal((await cache.getJwk(kid)).kid, kid); // not known yet
  await waitUntil(() => cache.snapshot.exists === false, 2000, 'the TTL reload');
  const s = cache.stats();
  assert.ok(s.ttlLoads >= 1);
  assert.equal(s.missedEvents, 1);
});

test('a generation that skips one is counted and reloaded', async () => {
  const first = await bootstrap(r, keys, KEY);
  const cache = open();
  let drop = true;
  const real = cache._onEvent.bind(cache);
  cache._onEvent = (...args) => { if (!drop) real(...args); drop = false; };
  await cache.ready();
  const b = await keys.generate();
  await rotate(r, KEY, 'ADD', b); // generation 2: its event is lost
  await rotate(r, KEY, 'PROMOTE', b.kid, 'RETIRE', first); // 3
  await waitUntil(() => cache.generation === 3, 2000, 'generation 3');
  assert.equal(cache.stats().generationGaps, 1);
  assert.equal(cache.currentKid, b.kid);
});

test('lookups wait for the reload after an event and fail closed', async () => {
  const first = await bootstrap(r, keys, KEY);
  const cache = await open({ staleWait: 200 }).ready();
  // Hold every reload back: a lookup after the event was read must not answer from the
  // old copy.
  let release;
  const gate = new Promise((res) => { release = res; });
  cache._loadChain = cache._loadChain.then(() => gate);
  const b = await keys.generate();
  await rotate(r, KEY, 'ADD', b, 'PROMOTE', b.kid, 'RETIRE', first);
  await waitUntil(() => cache.stats().events === 1, 2000, 'the event');
  const t0 = performance.now();
  await assert.rejects(cache.getSigningKey(first), KeyCacheStale);
  const waited = performance.now() - t0;
  assert.ok(waited > 150 && waited < 1000, `waited ${waited}`);
  assert.equal(cache.fresh, false);
  release();
  await waitUntil(() => cache.generation === 2, 2000, 'the reload');
  await assert.rejects(cache.getSigningKey(first), UnknownSigningKey);
  assert.equal((await cache.getJwk(b.kid)).kid, b.kid);
  assert.equal(cache.stats().staleRefusals, 1);
});

test('a hung server keeps the keys, unless maxStale', async () => {
  await r.config('SET', 'jwks.cache-ttl', '1');
  const kid = await bootstrap(r, keys, KEY);
  const tolerant = open({ timeout: 200, healthInterval: 200 });
  const strict = open({ timeout: 200, healthInterval: 200, maxStale: 0 });
  await Promise.all([tolerant.ready(), strict.ready()]);
  server.pause();
  try {
    await waitUntil(() => !tolerant.connected && !strict.connected, 3000, 'PING timeouts');
    await sleep(Math.max(0, strict.snapshot.expiresAt - performance.now()) + 50);
    assert.equal((await tolerant.getJwk(kid)).kid, kid);
    await assert.rejects(strict.getSigningKey(kid), KeyCacheStale);
  } finally {
    server.resume();
  }
  await waitUntil(() => strict.connected && strict.fresh, 5000, 'recovery');
  assert.equal((await strict.getJwk(kid)).kid, kid);
});

test('ready() rejects with the cause when the module is not loaded; close() ends it', async () => {
  const bare = await Server.start([], { module: false });
  try {
    const cache = new KeyCache(bare.client(), KEY, { logger: quiet });
    await assert.rejects(cache.ready(500), /not ready within 500 ms: .*unknown command/i);
    await cache.close();
    assert.equal(cache.connected, false);
  } finally {
    await bare.stop();
  }
});

test('a replica: reads and subscribes there', async () => {
  await r.config('SET', 'repl-diskless-sync-delay', '0');
  await bootstrap(r, keys, KEY);
  const replica = await Server.start(['--replicaof', '127.0.0.1', String(server.port)]);
  try {
    const rc = replica.client();
    await waitUntil(async () => (await rc.info('replication')).includes('master_link_status:up'), 20000, 'link up');
    const cache = await open({}, replica.client()).ready();
    await waitUntil(() => cache.generation === 1, 2000, 'replicated state');
    const before = await commandCalls(rc, 'jwks.get');
    const primaryBefore = await commandCalls(r, 'jwks.get');
    const b = await keys.generate();
    const g = (await rotate(r, KEY, 'ADD', b, 'PROMOTE', b.kid)).generation;
    await waitUntil(() => cache.generation === g, 2000, "the replica's event");
    assert.equal(cache.currentKid, b.kid);
    assert.ok((await commandCalls(rc, 'jwks.get')) > before);
    assert.equal(await commandCalls(r, 'jwks.get'), primaryBefore);
    assert.equal(Number((await rc.call('PUBSUB', 'SHARDNUMSUB', cache.channel))[1]), 1);
    await cache.close();
  } finally {
    await replica.stop();
  }
});

test('no cache hands out a key after it read the event of its retirement', async () => {
  let prev = await bootstrap(r, keys, KEY);
  const fleet = await Promise.all(Array.from({ length: 4 }, () => open().ready()));
  const retired = []; // [kid, generation that retired it]
  let stop = false;
  let probes = 0;
  let accepted = 0;
  const probe = async (cache) => {
    while (!stop) {
      for (const [kid, g] of retired.slice(-3)) {
        // Read before the lookup: if the event was already read, the lookup must refuse.
        const seen = cache.recentEvents().some((e) => e.message.generation >= g);
        const got = await cache.getJwk(kid).then(() => true, () => false);
        probes += 1;
        if (got) accepted += 1;
        assert.ok(!(got && seen), `${kid} handed out after generation ${g}'s event`);
      }
      await new Promise((res) => setImmediate(res));
    }
  };
  const probing = fleet.map(probe);
  for (let i = 0; i < 15; i++) {
    const b = await keys.generate();
    const { generation } = await rotate(r, KEY, 'ADD', b, 'PROMOTE', b.kid, 'RETIRE', prev);
    retired.push([prev, generation]);
    prev = b.kid;
    await new Promise((res) => setTimeout(res, 30 + Math.random() * 40));
  }
  await waitUntil(() => fleet.every((c) => c.generation === 16), 2000, 'the last generation');
  stop = true;
  await Promise.all(probing);
  assert.ok(probes > 100, `only ${probes} probes`);
  for (const c of fleet) {
    for (const [kid] of retired) await assert.rejects(c.getJwk(kid), UnknownSigningKey);
  }
});

test('currentKid follows the lifecycle policy: a promotion Redis makes on schedule', async () => {
  const first = await bootstrap(r, keys, KEY);
  await r.call('JWKS.POLICY', KEY, 'PROMOTE-AFTER', '300', 'RETIRE-AFTER', '300');
  const cache = await open().ready();
  const b = await keys.generate();
  const t0 = performance.now();
  await rotate(r, KEY, 'ADD', b);
  await waitUntil(() => cache.snapshot.kids.includes(b.kid), 1000, 'the next key');
  assert.equal(cache.currentKid, first); // held before it signs
  await waitUntil(() => cache.currentKid === b.kid, 3000, 'the scheduled promotion');
  assert.ok(performance.now() - t0 >= 290, 'not before PROMOTE-AFTER');
  assert.equal(cache.recentEvents().at(-1).message.reason, 'policy');
  await waitUntil(() => !cache.snapshot.kids.includes(first), 3000, 'the scheduled retirement');
  await assert.rejects(cache.getJwk(first), UnknownSigningKey);
});

test('health PINGs on a quiet subscription keep it (no resubscribes)', async () => {
  await bootstrap(r, keys, KEY);
  const cache = await open({ healthInterval: 50 }).ready();
  const pings = await commandCalls(r, 'ping');
  await sleep(400);
  assert.ok((await commandCalls(r, 'ping')) - pings >= 3);
  const s = cache.stats();
  assert.equal(s.reconnects, 0);
  assert.ok(s.connected && s.fresh);
});

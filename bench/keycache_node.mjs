#!/usr/bin/env node
// How fast a fleet of Node verifiers learns of a rotation: jwks-redis's KeyCache vs jose's
// createRemoteJWKSet. The Node counterpart of bench/keycache.py.
//
// Starts its own redis-server ($JWKS_SERVER_BIN) with the module ($JWKS_MODULE, else
// target/release or target/debug) on a free loopback port (node/test/harness.mjs), then two
// phases with the same kind of rotation (each one JWKS.ROTATE: ADD a new key, PROMOTE it,
// RETIRE the key before the previous one), --processes verifier processes each:
//
// 1. KeyCache: each process holds a KeyCache; for every rotation and process, the time from
//    the JWKS.ROTATE reply (as the rotating client saw it) to the moment that process holds
//    the new generation. process.hrtime is CLOCK_MONOTONIC, so the processes' times compare.
// 2. Baseline: each process holds createRemoteJWKSet (its defaults: cacheMaxAge 10 min,
//    cooldownDuration 30 s) on a local JWKS endpoint served from JWKS.GET, and every --poll
//    ms looks up the current kid (the driver tells it after each rotation), as a verifier
//    whose issuer signs with a key at once would. A process holds a generation from its first
//    fetch after the reply; a rotation no fetch of the run followed is counted at the moment
//    jose would fetch next: last fetch + cooldown (a token of the new kid arrives at once).
//    Also printed: the model for a verifier that sees no token of the new key (the issuer
//    waits PROMOTE-AFTER), which fetches at cache expiry, uniformly spread over 10 min.
//
// Both phases report the Redis commands the fleet sent and the lookups that failed. Prints a
// table and JSON (--json FILE to keep it). Asserts nothing. Smoke run (CI):
//
//     node bench/keycache_node.mjs --processes 3 --rotations 5

import { fork } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer as httpServer } from 'node:http';
import { createRequire } from 'node:module';
import { cpus } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { Server, modulePath, serverBin } from '../node/test/harness.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = createRequire(join(ROOT, 'node', 'package.json'));
const Redis = pkg('ioredis');
const KEY = 'jwks:{bench}';
const COOLDOWN_MS = 30e3; // createRemoteJWKSet's defaults
const MAX_AGE_MS = 600e3;
const clock = () => Number(process.hrtime.bigint()) / 1e6;

// ------------------------------------------------------------------------ the verifiers

async function child(kind, target) {
  const held = [];
  let failures = 0;
  let lookups = 0;
  let stop = false;
  let kid = null;
  process.on('message', (m) => {
    if (m.kid) kid = m.kid;
    if (m.stop) stop = true;
  });
  process.on('disconnect', () => process.exit(0)); // the driver is gone
  if (kind === 'keycache') {
    const { KeyCache } = pkg(join(ROOT, 'node', 'lib', 'index.js'));
    const client = new Redis({ host: '127.0.0.1', port: Number(target) });
    const cache = new KeyCache(client, KEY, { onChange: (s) => held.push([s.generation, clock()]) });
    await cache.ready(30000);
    process.send({ ready: true });
    while (!stop) await sleep(20);
    const stats = cache.stats();
    const t0 = clock();
    await cache.close();
    client.disconnect();
    process.send({ held, stats, failures, lookups, closeMs: clock() - t0 });
  } else {
    const { createRemoteJWKSet } = await import(pathToFileURL(pkg.resolve('jose')));
    const realFetch = globalThis.fetch;
    globalThis.fetch = async (...args) => {
      const response = await realFetch(...args);
      held.push([Number(response.headers.get('x-generation')), clock()]);
      return response;
    };
    const jwks = createRemoteJWKSet(new URL(target));
    await jwks.reload();
    process.send({ ready: true });
    while (!stop) {
      if (kid) {
        lookups += 1;
        try {
          await jwks({ alg: 'ES256', kid });
        } catch {
          failures += 1; // unknown kid within the cooldown: the token is refused
        }
      }
      await sleep(args.poll * (0.5 + Math.random()));
    }
    process.send({ held, failures, lookups });
  }
  process.disconnect();
}

// ------------------------------------------------------------------------ the driver

function publicJwk(kid) {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return JSON.stringify({ ...publicKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'ES256' });
}

async function commandstats(client) {
  const out = {};
  for (const m of (await client.info('commandstats')).matchAll(/cmdstat_([^:]+):calls=(\d+)/g)) out[m[1]] = Number(m[2]);
  return out;
}

function delta(before, after) {
  return Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - (before[k] || 0)]).filter(([, v]) => v > 0));
}

async function endpoint(client) {
  const server = httpServer(async (req, res) => {
    const meta = await client.call('JWKS.GET', KEY, 'META');
    const m = {};
    for (let i = 0; i < meta.length; i += 2) m[meta[i]] = meta[i + 1];
    res.writeHead(200, { 'content-type': 'application/json', etag: m.etag, 'x-generation': String(m.generation),
      'cache-control': `public, max-age=${Math.floor(Number(m.ttl_ms) / 1000)}` });
    res.end(m.document);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return server;
}

async function phase(kind, server, args, keys, startGen) {
  let http = null;
  let target = String(server.port);
  if (kind !== 'keycache') {
    http = await endpoint(server.admin);
    target = `http://127.0.0.1:${http.address().port}/.well-known/jwks.json`;
  }
  const before = await commandstats(server.admin);
  const children = [];
  for (let i = 0; i < args.processes; i++) {
    const c = fork(fileURLToPath(import.meta.url), ['--child', kind, '--target', target, '--poll', String(args.poll)]);
    const ready = new Promise((res, rej) => {
      c.once('message', res);
      c.once('exit', (code) => rej(new Error(`${kind}: a verifier exited (${code})`)));
    });
    children.push({ c, ready, done: null });
  }
  const startup = cancellableTimeout(120000, `${kind}: verifiers not ready within 120 s`);
  try {
    await Promise.race([Promise.all(children.map((x) => x.ready)), startup.promise]);
  } catch (e) {
    for (const x of children) x.c.kill();
    throw e;
  } finally {
    startup.cancel();
  }
  for (const x of children) x.done = new Promise((res) => x.c.on('message', (m) => m.held && res(m)));
  const started = await commandstats(server.admin);
  const replies = {};
  let gen = startGen;
  for (let i = 0; i < args.rotations; i++) {
    const [newKid, newJwk] = keys[i + 2];
    await server.admin.call('JWKS.ROTATE', KEY, 'ADD', newJwk, 'PROMOTE', newKid, 'RETIRE', keys[i][0]);
    gen += 1;
    replies[gen] = clock();
    for (const x of children) x.c.send({ kid: newKid });
    await sleep(args.interval * (0.5 + Math.random()));
  }
  await sleep(Math.max(500, args.interval));
  const after = await commandstats(server.admin);
  after['jwks.rotate'] -= args.rotations;
  after.info -= 1;
  for (const x of children) x.c.send({ stop: true });
  // Bounded: a verifier that does not report is named, not waited for forever.
  let watchdog;
  const late = new Promise((_, reject) => {
    watchdog = setTimeout(() => {
      const missing = children.filter((x) => !x.reported).map((x) => x.c.pid);
      reject(new Error(`${kind}: verifiers ${missing.join(' ')} did not report within 60 s of stop`));
    }, 60000);
  });
  for (const x of children) x.done.then(() => { x.reported = true; });
  let results;
  try {
    results = await Promise.race([Promise.all(children.map((x) => x.done)), late]);
  } finally {
    clearTimeout(watchdog);
    for (const x of children) if (x.c.exitCode === null) x.c.kill();
    if (http) http.close();
  }
  before.info = (before.info || 0) + 1;
  return { replies, results, startup: delta(before, started), during: delta(started, after), endGen: gen };
}

function cancellableTimeout(ms, message) {
  let timer;
  const promise = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(message)), ms); });
  return { promise, cancel: () => clearTimeout(timer) };
}

const pct = (values, q) => {
  const s = [...values].sort((a, b) => a - b);
  if (!s.length) return NaN;
  const k = (s.length - 1) * q;
  const lo = Math.floor(k);
  const hi = Math.min(lo + 1, s.length - 1);
  return s[lo] + (s[hi] - s[lo]) * (k - lo);
};
const summary = (lags) => ({ n: lags.length, p50_ms: +pct(lags, 0.5).toFixed(3), p99_ms: +pct(lags, 0.99).toFixed(3),
  max_ms: +Math.max(...lags).toFixed(3), min_ms: +Math.min(...lags).toFixed(3) });

function lags(ph, model) {
  const out = [];
  let never = 0;
  let seen = 0;
  for (const r of ph.results) {
    for (const [g, tReply] of Object.entries(ph.replies)) {
      const t = r.held.find(([gen]) => gen >= Number(g));
      if (t) {
        seen += 1;
        out.push(t[1] - tReply);
      } else if (model) {
        const last = Math.max(...r.held.filter(([, at]) => at < tReply).map(([, at]) => at));
        out.push(Math.max(tReply, last + COOLDOWN_MS) - tReply);
      } else {
        never += 1;
      }
    }
  }
  return { lags: out, never, seen };
}

const args = parseArgs({
  options: {
    processes: { type: 'string', default: '50' },
    rotations: { type: 'string', default: '100' },
    interval: { type: 'string', default: '100' },
    poll: { type: 'string', default: '50' },
    'no-baseline': { type: 'boolean', default: false },
    json: { type: 'string' },
    child: { type: 'string' },
    target: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
}).values;
for (const k of ['processes', 'rotations', 'interval', 'poll']) args[k] = Number(args[k]);

if (args.help) {
  console.log('node bench/keycache_node.mjs [--processes 50] [--rotations 100] [--interval 100 (ms)] [--poll 50 (ms)] [--no-baseline] [--json FILE]');
} else if (args.child) {
  await child(args.child, args.target);
} else {
  const bin = serverBin();
  const module = modulePath(['release', 'debug']);
  const server = await Server.start([], { module, dirPrefix: 'node-jwks-bench-' });
  let report;
  try {
    const keys = Array.from({ length: 2 * args.rotations + 2 }, (_, i) => [`k${i}`, publicJwk(`k${i}`)]);
    await server.admin.call('JWKS.ROTATE', KEY, 'ADD', keys[0][1], 'PROMOTE', keys[0][0], 'ADD', keys[1][1], 'PROMOTE', keys[1][0]);
    report = { processes: args.processes, rotations: args.rotations, interval_ms: args.interval, server: bin, module,
      cpus: cpus().length, node: process.version };
    const kc = await phase('keycache', server, args, keys, 1);
    const k = lags(kc, false);
    report.keycache = { ...summary(k.lags), never_held: k.never, commands_startup: kc.startup,
      commands_during_rotations: kc.during,
      reloads_per_process: +(kc.results.reduce((a, r) => a + r.stats.loads, 0) / args.processes).toFixed(2),
      close_ms_max: +Math.max(...kc.results.map((r) => r.closeMs)).toFixed(1) };
    if (!args['no-baseline']) {
      const base = await phase('jose', server, args, keys.slice(args.rotations), kc.endGen);
      const b = lags(base, true);
      report.jose_remote_jwkset = { ...summary(b.lags), cooldown_ms: COOLDOWN_MS, cache_max_age_ms: MAX_AGE_MS,
        rotations_seen_by_a_fetch_in_the_run: b.seen,
        fetches: base.results.reduce((a, r) => a + r.held.length, 0),
        lookups: base.results.reduce((a, r) => a + r.lookups, 0),
        failed_lookups: base.results.reduce((a, r) => a + r.failures, 0),
        no_new_kid_model_ms: { p50_ms: MAX_AGE_MS * 0.5, p99_ms: MAX_AGE_MS * 0.99, max_ms: MAX_AGE_MS },
        commands_during_rotations: base.during };
    }
  } catch (e) {
    console.error(`keycache_node: ${e.stack}`);
    process.exitCode = 1;
  } finally {
    await server.stop();
  }
  if (process.exitCode) process.exit();
  table(report);
  const text = JSON.stringify(report, null, 2);
  console.log(text);
  if (args.json) writeFileSync(args.json, `${text}\n`);
}

function table(r) {
  const ms = (v) => `${v.toFixed(2).padStart(9)} ms`;
  const s = (v) => `${(v / 1000).toFixed(1).padStart(10)} s`;
  console.log(`\n${r.processes} verifier processes, ${r.rotations} rotations, ${r.cpus} CPUs, ${basename(r.server)}, node ${r.node}`);
  console.log('time from the JWKS.ROTATE reply to the process holding the new generation');
  console.log(`${''.padEnd(44)} ${'p50'.padStart(12)} ${'p99'.padStart(12)} ${'max'.padStart(12)}`);
  const k = r.keycache;
  console.log(`${'KeyCache (events)'.padEnd(44)} ${ms(k.p50_ms)} ${ms(k.p99_ms)} ${ms(k.max_ms)}`);
  const b = r.jose_remote_jwkset;
  if (b) {
    const fmt = (v) => (v < 10000 ? ms(v) : s(v));
    console.log(`${'createRemoteJWKSet, new-kid tokens (run)'.padEnd(44)} ${fmt(b.p50_ms)} ${fmt(b.p99_ms)} ${fmt(b.max_ms)}`);
    const m = b.no_new_kid_model_ms;
    console.log(`${'createRemoteJWKSet, no new-kid token (model)'.padEnd(44)} ${s(m.p50_ms)} ${s(m.p99_ms)} ${s(m.max_ms)}`);
    console.log(`createRemoteJWKSet lookups of the current kid refused: ${b.failed_lookups} of ${b.lookups}`);
  }
  console.log('Redis commands the fleet sent during the rotations (INFO commandstats delta):');
  console.log(`  KeyCache: ${JSON.stringify(k.commands_during_rotations)} (reloads per process: ${k.reloads_per_process})`);
  if (b) console.log(`  createRemoteJWKSet (through the endpoint): ${JSON.stringify(b.commands_during_rotations)}`);
  console.log();
}

// Shared by bench/fleet_node.mjs and bench/confirm_node.mjs: servers and a Redis Cluster on
// free loopback ports with the module (node/test/harness.mjs, the harness the Node tests
// use too, with the benchmarks' defaults), a fleet of forked KeyCache verifier processes
// (bench/fleet_verifier.mjs), keys, percentiles. Times are process.hrtime (CLOCK_MONOTONIC,
// so the processes' times compare).

import { fork } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { Cluster, Server, modulePath, waitUntil as harnessWaitUntil } from '../node/test/harness.mjs';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const pkg = createRequire(join(ROOT, 'node', 'package.json'));
export const Redis = pkg('ioredis');
export const clock = () => Number(process.hrtime.bigint()) / 1e6;
export { sleep };
export { serverBin } from '../node/test/harness.mjs';

// The benchmarks measure the release build when there is one.
const PROFILES = ['release', 'debug'];
export const moduleDefault = () => modulePath(PROFILES);

/** One redis-server with the module on a free loopback port (node/test/harness.mjs). */
export const startServer = (extra = []) => Server.start(extra, { profiles: PROFILES, dirPrefix: 'jwks-fleet-bench-' });

/** A Redis Cluster on loopback: `primaries` primaries with `replicas` replicas each, every
 * node loading the module (node/test/harness.mjs's Cluster: owner, primaries, moveSlot,
 * failover). Replication is diskless, without delay, so replicas attach at once. */
export const startCluster = (primaries = 3, replicas = 1) => Cluster.start(primaries, {
  replicas, profiles: PROFILES, dirPrefix: 'jwks-fleet-bench-',
  extra: ['--repl-diskless-sync', 'yes', '--repl-diskless-sync-delay', '0'],
});

/** Polls every 5 ms; a predicate that throws counts as false (a node between roles). */
export const waitUntil = (predicate, timeout = 5000, what = 'condition') =>
  harnessWaitUntil(predicate, timeout, what, { interval: 5, retryErrors: true });

export function publicJwk(kid) {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return JSON.stringify({ ...publicKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'ES256' });
}

/** JWKS.ROTATE's (or JWKS.INFO's) flat reply as an object. */
export function asMap(reply) {
  if (!Array.isArray(reply)) return reply;
  const out = {};
  for (let i = 0; i + 1 < reply.length; i += 2) out[String(reply[i])] = reply[i + 1];
  return out;
}

/**
 * Forks `n` verifier processes (bench/fleet_verifier.mjs), each holding one KeyCache on
 * `key` through `target` ({ cluster: seeds } or { port }), with `options` for the KeyCache.
 * Resolves once every one has loaded. Each process reports { gen, at } on every change;
 * fleet.latest[i] is the generation process i holds. fleet.stop() collects each process's
 * record: { held: [[generation, at, kids]], stats, logs: [[at, level, line]] }.
 */
export async function startFleet(n, key, target, options = {}, readyTimeout = 120000) {
  const script = join(ROOT, 'bench', 'fleet_verifier.mjs');
  const spec = JSON.stringify({ key, target, options });
  const procs = [];
  const latest = new Array(n).fill(null);
  for (let i = 0; i < n; i++) {
    const c = fork(script, [spec, String(i)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const p = { c, exited: false, report: null };
    p.ready = new Promise((res, rej) => {
      c.on('message', (m) => {
        if (m.gen !== undefined) latest[i] = m.gen;
        if (m.ready) res();
        if (m.report) {
          p.report = m.report;
          p.reported();
        }
      });
      c.once('exit', (code) => { p.exited = true; rej(new Error(`verifier ${i} exited (${code}) before it was ready`)); });
    });
    p.ready.catch(() => {});
    p.done = new Promise((res) => { p.reported = res; c.once('exit', res); });
    procs.push(p);
  }
  let timer;
  const timeout = new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`verifiers not ready within ${readyTimeout} ms`)), readyTimeout); });
  try {
    await Promise.race([Promise.all(procs.map((p) => p.ready)), timeout]);
  } catch (e) {
    for (const p of procs) if (!p.exited) p.c.kill();
    throw e;
  } finally {
    clearTimeout(timer);
  }
  return {
    latest,
    pids: procs.map((p) => p.c.pid),
    /** Asks every process for its record and waits (bounded) for it. */
    async stop(timeoutMs = 60000) {
      for (const p of procs) if (!p.exited) p.c.send({ stop: true });
      let t;
      const late = new Promise((res) => { t = setTimeout(res, timeoutMs); });
      await Promise.race([Promise.all(procs.map((p) => p.done)), late]);
      clearTimeout(t);
      for (const p of procs) if (p.c.exitCode === null) p.c.kill('SIGKILL');
      return procs.map((p, i) => p.report || { missing: true, index: i });
    },
  };
}

export const pct = (values, q) => {
  const s = [...values].sort((a, b) => a - b);
  if (!s.length) return NaN;
  const k = (s.length - 1) * q;
  const lo = Math.floor(k);
  const hi = Math.min(lo + 1, s.length - 1);
  return s[lo] + (s[hi] - s[lo]) * (k - lo);
};

export const summary = (values) => (values.length ? {
  n: values.length, p50_ms: +pct(values, 0.5).toFixed(2), p99_ms: +pct(values, 0.99).toFixed(2),
  max_ms: +Math.max(...values).toFixed(2), min_ms: +Math.min(...values).toFixed(2),
} : { n: 0 });

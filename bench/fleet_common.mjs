// Shared by bench/fleet_node.mjs and bench/confirm_node.mjs: servers and a Redis Cluster on
// free loopback ports with the module, a fleet of forked KeyCache verifier processes
// (bench/fleet_verifier.mjs), keys, percentiles. Times are process.hrtime (CLOCK_MONOTONIC,
// so the processes' times compare).

import { fork, spawn, execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer as netServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const pkg = createRequire(join(ROOT, 'node', 'package.json'));
export const Redis = pkg('ioredis');
export const clock = () => Number(process.hrtime.bigint()) / 1e6;
export { sleep };

const handedOut = new Set();
export async function freePort() {
  for (;;) {
    const port = await new Promise((res) => {
      const s = netServer().listen(0, '127.0.0.1', () => {
        const { port: p } = s.address();
        s.close(() => res(p));
      });
    });
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

export function moduleDefault() {
  if (process.env.JWKS_MODULE) return process.env.JWKS_MODULE;
  const target = process.env.CARGO_TARGET_DIR || join(ROOT, 'target');
  for (const profile of ['release', 'debug']) {
    const path = join(target, profile, 'libredis_jwks.so');
    if (existsSync(path)) return path;
  }
  throw new Error('build the module first (cargo build --release) or set JWKS_MODULE');
}

export const serverBin = () => process.env.JWKS_SERVER_BIN || 'redis-server';

/** One redis-server with the module on a free loopback port. */
export async function startServer(extra = []) {
  const dir = mkdtempSync(join(tmpdir(), 'jwks-fleet-bench-'));
  const port = await freePort();
  const proc = spawn(serverBin(), ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '',
    '--appendonly', 'no', '--logfile', 'server.log', '--loadmodule', moduleDefault(), ...extra], { stdio: 'ignore' });
  const exited = new Promise((r) => proc.once('exit', r));
  const client = new Redis({ host: '127.0.0.1', port, lazyConnect: true, retryStrategy: () => null });
  client.on('error', () => {});
  for (let i = 0; ; i++) {
    try {
      await client.connect();
      await client.ping();
      break;
    } catch {
      if (i > 500 || proc.exitCode !== null) throw new Error(`server did not start: see ${dir}/server.log`);
      await sleep(20);
    }
  }
  const clients = [client];
  return {
    port, dir, client, proc,
    /** Another plain connection to this node (closed by stop()). */
    connect() {
      const c = new Redis({ host: '127.0.0.1', port, enableReadyCheck: false });
      c.on('error', () => {});
      clients.push(c);
      return c;
    },
    log: () => { try { return readFileSync(join(dir, 'server.log'), 'utf8'); } catch { return ''; } },
    async stop() {
      for (const c of clients) c.disconnect();
      if (proc.exitCode === null) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 10000);
        await exited;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A Redis Cluster on loopback: `primaries` primaries with `replicas` replicas each, every
 * node loading the module, slots assigned by `redis-cli --cluster create` (as tests/cluster.rs
 * and node/test/helpers.mjs build it). */
export async function startCluster(primaries = 3, replicas = 1) {
  const nodes = [];
  const stop = async () => { await Promise.all(nodes.map((n) => n.stop())); };
  try {
    for (let i = 0; i < primaries * (1 + replicas); i++) {
      nodes.push(await startServer(['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf',
        '--cluster-node-timeout', '2000', '--cluster-port', String(await freePort()),
        '--repl-diskless-sync', 'yes', '--repl-diskless-sync-delay', '0']));
    }
    execFileSync('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`),
      '--cluster-replicas', String(replicas), '--cluster-yes'], { stdio: 'pipe', timeout: 60000 });
    for (const n of nodes) {
      await waitUntil(async () => (await n.client.cluster('INFO')).includes('cluster_state:ok'), 30000, 'cluster ok');
    }
    // Every replica attached and in sync.
    await waitUntil(async () => {
      for (const n of nodes) {
        const info = await n.client.info('replication');
        if (info.includes('role:slave') && !info.includes('master_link_status:up')) return false;
      }
      return true;
    }, 30000, 'replicas in sync');
  } catch (e) {
    await stop();
    throw e;
  }
  const byPort = (port) => nodes.find((n) => n.port === Number(port));
  const cluster = {
    nodes,
    stop,
    seeds: () => nodes.map((n) => ({ host: '127.0.0.1', port: n.port })),
    /** The primary serving `key`'s slot, as one node sees it. */
    async owner(key, via = nodes[0]) {
      const slot = await via.client.cluster('KEYSLOT', key);
      for (const [lo, hi, [, port]] of await via.client.cluster('SLOTS')) {
        if (lo <= slot && slot <= hi) return byPort(port);
      }
      throw new Error(`slot ${slot} unassigned`);
    },
    async primaries() {
      const out = [];
      for (const n of nodes) if ((await n.client.info('replication')).includes('role:master')) out.push(n);
      return out;
    },
    /** SETSLOT IMPORTING/MIGRATING, MIGRATE the slot's keys in one call, then SETSLOT NODE on
     * the destination, the source and the others (what `redis-cli --cluster reshard` does). */
    async moveSlot(key, src, dst) {
      const t0 = clock();
      const steps = {};
      const step = (name) => { steps[name] = +(clock() - t0).toFixed(1); };
      const slot = await src.client.cluster('KEYSLOT', key);
      const srcId = await src.client.cluster('MYID');
      const dstId = await dst.client.cluster('MYID');
      const others = (await cluster.primaries()).filter((x) => x !== src && x !== dst);
      await dst.client.cluster('SETSLOT', slot, 'IMPORTING', srcId);
      await src.client.cluster('SETSLOT', slot, 'MIGRATING', dstId);
      step('migrating');
      const names = await src.client.cluster('GETKEYSINSLOT', slot, 1000);
      if (names.length) await src.client.call('MIGRATE', '127.0.0.1', dst.port, '', 0, 5000, 'KEYS', ...names);
      step('migrated');
      for (const n of [dst, src, ...others]) {
        await n.client.cluster('SETSLOT', slot, 'NODE', dstId);
        step(n === dst ? 'node_on_destination' : n === src ? 'node_on_source' : 'node_on_others');
      }
      await waitUntil(async () => {
        for (const n of nodes) if ((await cluster.owner(key, n)) !== dst) return false;
        return true;
      }, 10000, 'every node to see the slot move');
      step('every_node_sees_it');
      return { slot, keys: names.length, steps_ms: steps };
    },
    /** CLUSTER FAILOVER on a replica of `primary` (graceful: the replica catches up first). */
    async failover(key, primary) {
      const id = await primary.client.cluster('MYID');
      const lines = await primary.client.cluster('REPLICAS', id);
      const port = Number(String(lines[0]).split(' ')[1].split(':')[1].split('@')[0]);
      const replica = byPort(port);
      const t0 = clock();
      await replica.client.cluster('FAILOVER');
      const steps = { failover_reply: +(clock() - t0).toFixed(1) };
      await waitUntil(async () => (await replica.client.info('replication')).includes('role:master'), 20000, 'the replica to take over');
      steps.replica_is_primary = +(clock() - t0).toFixed(1);
      await waitUntil(async () => {
        for (const n of nodes) if ((await cluster.owner(key, n)) !== replica) return false;
        return true;
      }, 20000, 'every node to see the failover');
      steps.every_node_sees_it = +(clock() - t0).toFixed(1);
      return { replica, steps_ms: steps };
    },
  };
  return cluster;
}

export async function waitUntil(predicate, timeout = 5000, what = 'condition') {
  const deadline = Date.now() + timeout;
  for (;;) {
    let value;
    try { value = await predicate(); } catch { value = false; }
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

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

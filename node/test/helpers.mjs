// The test harness: real servers (redis-server or $JWKS_SERVER_BIN) with the module
// ($JWKS_MODULE) on free loopback ports, keys and tokens made with jose.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import Redis from 'ioredis';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';

export const ROOT = process.env.JWKS_REPO_ROOT || resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const SERVER_BIN = process.env.JWKS_SERVER_BIN || 'redis-server';

export function modulePath() {
  const target = process.env.CARGO_TARGET_DIR || join(ROOT, 'target');
  const path = process.env.JWKS_MODULE || join(target, 'debug', 'libredis_jwks.so');
  if (!existsSync(path)) throw new Error(`no module at ${path} (set JWKS_MODULE)`);
  return path;
}

const handedOut = new Set();
export async function freePort() {
  for (;;) {
    const port = await new Promise((res, rej) => {
      const s = createServer();
      s.once('error', rej);
      s.listen(0, '127.0.0.1', () => { const { port: p } = s.address(); s.close(() => res(p)); });
    });
    if (!handedOut.has(port)) { handedOut.add(port); return port; }
  }
}

export async function waitUntil(predicate, timeout = 5000, what = 'condition') {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

export class Server {
  constructor(extra = [], { module = true } = {}) {
    this.extra = extra;
    this.module = module;
    this.dir = mkdtempSync(join(tmpdir(), 'node-jwks-test-'));
    this.clients = [];
  }

  static async start(extra, opts) {
    const s = new Server(extra, opts);
    s.port = await freePort();
    await s.start();
    return s;
  }

  async start() {
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir,
      '--logfile', 'server.log', '--save', '', '--appendonly', 'no',
      ...(this.module ? ['--loadmodule', modulePath()] : []), ...this.extra];
    this.proc = spawn(SERVER_BIN, args, { stdio: 'ignore' });
    this.exited = new Promise((res) => this.proc.once('exit', res));
    const probe = new Redis({ port: this.port, host: '127.0.0.1', lazyConnect: true,
      retryStrategy: () => null, maxRetriesPerRequest: 0 });
    probe.on('error', () => {});
    const deadline = Date.now() + 20000;
    for (;;) {
      try {
        await probe.connect();
        const pid = (await probe.info('server')).match(/process_id:(\d+)/)[1];
        if (Number(pid) !== this.proc.pid) throw new Error(`port ${this.port} is another server's`);
        probe.disconnect();
        return this;
      } catch (e) {
        probe.disconnect();
        if (this.proc.exitCode !== null || Date.now() > deadline) {
          throw new Error(`server did not start: ${e.message}\n${this.log()}`);
        }
        await sleep(20);
      }
    }
  }

  log() {
    try { return readFileSync(join(this.dir, 'server.log'), 'utf8').split('\n').slice(-20).join('\n'); } catch { return ''; }
  }

  /** A client for the test's own commands (closed by stop()). */
  client(options = {}) {
    const c = new Redis({ host: '127.0.0.1', port: this.port, ...options });
    c.on('error', () => {}); // reconnecting while a test stopped the server
    this.clients.push(c);
    return c;
  }

  async kill() {
    if (this.proc && this.proc.exitCode === null) {
      this.proc.kill('SIGKILL');
      await this.exited;
    }
  }

  pause() { this.proc.kill('SIGSTOP'); }
  resume() { this.proc.kill('SIGCONT'); }

  async stop() {
    for (const c of this.clients) c.disconnect();
    this.clients = [];
    if (this.proc && this.proc.exitCode === null) {
      this.proc.kill('SIGCONT');
      this.proc.kill('SIGTERM');
      const t = setTimeout(() => this.proc.kill('SIGKILL'), 10000);
      await this.exited;
      clearTimeout(t);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A Redis Cluster on loopback (`primaries` nodes, each loading the module), slots assigned
 * by `redis-cli --cluster create`, as tests/cluster.rs and python/tests/conftest.py build it. */
export class Cluster {
  static async start(primaries = 3) {
    const c = new Cluster();
    c.nodes = [];
    try {
      for (let i = 0; i < primaries; i++) {
        c.nodes.push(await Server.start(['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf',
          '--cluster-node-timeout', '2000', '--cluster-port', String(await freePort())]));
      }
      execFileSync('redis-cli', ['--cluster', 'create', ...c.nodes.map((n) => `127.0.0.1:${n.port}`),
        '--cluster-replicas', '0', '--cluster-yes'], { stdio: 'pipe', timeout: 60000 });
      for (const n of c.nodes) {
        const r = n.client();
        await waitUntil(async () => (await r.cluster('INFO')).includes('cluster_state:ok'), 30000, 'cluster ok');
      }
    } catch (e) {
      await c.stop();
      throw e;
    }
    return c;
  }

  client(options = {}) {
    const r = new Redis.Cluster(this.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })), options);
    r.on('error', () => {});
    this.clients = [...(this.clients || []), r];
    return r;
  }

  /** The primary serving `key`'s slot. */
  async owner(key) {
    const r = this.nodes[0].client();
    const slot = await r.cluster('KEYSLOT', key);
    for (const [lo, hi, [, port]] of await r.cluster('SLOTS')) {
      if (lo <= slot && slot <= hi) return this.nodes.find((n) => n.port === Number(port));
    }
    throw new Error(`slot ${slot} unassigned`);
  }

  /** SETSLOT IMPORTING/MIGRATING, MIGRATE the slot's keys in one call, then SETSLOT NODE on
   * every node (what `redis-cli --cluster reshard` does). */
  async moveSlot(key, src, dst) {
    const s = src.client();
    const d = dst.client();
    const slot = await s.cluster('KEYSLOT', key);
    const srcId = await s.cluster('MYID');
    const dstId = await d.cluster('MYID');
    await d.cluster('SETSLOT', slot, 'IMPORTING', srcId);
    await s.cluster('SETSLOT', slot, 'MIGRATING', dstId);
    const names = await s.cluster('GETKEYSINSLOT', slot, 100);
    if (names.length) await s.call('MIGRATE', '127.0.0.1', dst.port, '', 0, 5000, 'KEYS', ...names);
    for (const n of [dst, src, ...this.nodes.filter((x) => x !== src && x !== dst)]) {
      await n.client().cluster('SETSLOT', slot, 'NODE', dstId);
    }
    await waitUntil(async () => (await this.owner(key)) === dst, 5000, 'the slot move');
  }

  async stop() {
    for (const c of this.clients || []) c.disconnect();
    await Promise.all((this.nodes || []).map((n) => n.stop()));
  }
}

/** Signing keys: the private halves stay here, the public JWKs go to Redis. */
export class KeyStore {
  constructor() { this.keys = new Map(); this.n = 0; }

  async generate(alg = 'ES256') {
    const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
    const kid = `k${++this.n}-${alg.toLowerCase()}-${Math.random().toString(36).slice(2, 8)}`;
    const jwk = { ...(await exportJWK(publicKey)), kid, use: 'sig', alg };
    this.keys.set(kid, { privateKey, alg });
    return jwk;
  }

  token(kid, claims = {}) {
    const { privateKey, alg } = this.keys.get(kid);
    return new SignJWT({ sub: 'u', ...claims }).setProtectedHeader({ alg, kid })
      .setIssuedAt().setExpirationTime('5m').sign(privateKey);
  }
}

export const json = (jwk) => JSON.stringify(jwk);

/** JWKS.ROTATE key op...; resolves to the reply as an object. */
export async function rotate(client, key, ...args) {
  const reply = await client.call('JWKS.ROTATE', key, ...args.map((a) => (typeof a === 'object' ? json(a) : a)));
  const out = {};
  for (let i = 0; i < reply.length; i += 2) out[reply[i]] = reply[i + 1];
  return out;
}

export async function bootstrap(client, keys, key) {
  const a = await keys.generate();
  await rotate(client, key, 'ADD', a, 'PROMOTE', a.kid);
  return a.kid;
}

/** How often the server ran `name` (INFO commandstats). */
export async function commandCalls(client, name) {
  const m = (await client.info('commandstats')).match(new RegExp(`cmdstat_${name.toLowerCase()}:calls=(\\d+)`));
  return m ? Number(m[1]) : 0;
}

/** JWKS.VERIFIERS key as objects `{ id, generation, current, next, age_ms, ttl_ms }` (RESP2
 * and ioredis 6's legacy RESP3 mapping: one flat name/value array per verifier). */
export async function verifiers(client, key) {
  return (await client.call('JWKS.VERIFIERS', key)).map((v) => {
    if (!Array.isArray(v)) return { ...v };
    const o = {};
    for (let i = 0; i + 1 < v.length; i += 2) o[String(v[i])] = v[i + 1];
    return o;
  });
}

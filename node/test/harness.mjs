// The one JavaScript server harness, shared by the Node tests (node/test/helpers.mjs builds
// on it) and the Node benchmarks (bench/*.mjs import it from here): a real redis-server (or
// $JWKS_SERVER_BIN) with the built module on a free loopback port, a Redis Cluster of them.
// It lives in node/test/ so that `npm pack` leaves it out (package.json "files" is lib/) and
// so that scripts/test-node.sh's copy of test/ runs it against the packed package's ioredis.
//
// What it guarantees, as tests/common/mod.rs and python/tests/harness.py do: once started,
// the server answering on the port is the process this harness spawned (INFO server
// `process_id` is its pid, or a descendant's when $JWKS_SERVER_BIN is a wrapper that forks).
// Otherwise another process took the port between freePort() and the bind, and the test or
// benchmark would talk to a stranger: a first start then tries another port (a few times),
// a restart on the same port (start() after kill()) fails loudly.
//
// The readiness and own-process checks speak RESP on a raw socket (no client library state
// to reset between attempts); the connections it hands out are ioredis.

import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import Redis from 'ioredis';

/** The repository (JWKS_REPO_ROOT when test/ runs from a copy, as scripts/test-node.sh does). */
export const ROOT = process.env.JWKS_REPO_ROOT || resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const MODULE_FILE = 'libredis_jwks.so';

/** The server did not start, or the server on its port is not ours. */
export class HarnessError extends Error {}
class PortTaken extends HarnessError {}

// ------------------------------------------------------------------------ where things are

const handedOut = new Set();
/** A loopback port free now and not handed out before by this process (two servers told the
 * same port would make one test talk to the other's server). */
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

/** Where cargo builds: CARGO_TARGET_DIR (relative to the repository), else target/. */
export const targetDir = () => resolve(ROOT, process.env.CARGO_TARGET_DIR || 'target');

/** The module under test: JWKS_MODULE, else the first of target/<profile>/libredis_jwks.so
 * that exists, profiles in order (the tests: debug, as `cargo build` leaves it; the
 * benchmarks: release, then debug). */
export function modulePath(profiles = ['debug']) {
  const env = process.env.JWKS_MODULE;
  if (env) {
    if (!existsSync(env)) throw new HarnessError(`no module at ${env} (JWKS_MODULE)`);
    return env;
  }
  const candidates = profiles.map((p) => join(targetDir(), p, MODULE_FILE));
  const found = candidates.find((p) => existsSync(p));
  if (found) return found;
  const build = `cargo build${profiles[0] === 'release' ? ' --release' : ''}`;
  throw new HarnessError(`no module at ${candidates.join(' or ')} (${build}, or set JWKS_MODULE)`);
}

/** The server binary: JWKS_SERVER_BIN, else redis-server on PATH. */
export const serverBin = () => process.env.JWKS_SERVER_BIN || 'redis-server';

/** Resolves to predicate()'s first truthy value, polling every `interval` ms; throws after
 * `timeout` ms. With retryErrors a predicate that throws counts as false (a node between
 * roles during a failover), else the error propagates. */
export async function waitUntil(predicate, timeout = 5000, what = 'condition', { interval = 2, retryErrors = false } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    let value;
    try {
      value = await predicate();
    } catch (e) {
      if (!retryErrors) throw e;
      value = false;
    }
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(interval);
  }
}

// ------------------------------------------------------------------------ raw RESP

/** One command on a fresh connection: the reply (strings, integers, null, or { error }). */
function rawCall(port, args, timeout = 2000) {
  return new Promise((res, rej) => {
    const sock = connect({ host: '127.0.0.1', port });
    let buf = Buffer.alloc(0);
    let settled = false;
    const done = (err, value) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) rej(err); else res(value);
    };
    const timer = setTimeout(() => done(new Error(`no reply on port ${port} within ${timeout} ms`)), timeout);
    sock.on('error', (e) => done(e));
    sock.on('close', () => done(new Error('connection closed')));
    sock.on('connect', () => {
      sock.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`);
    });
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      const eol = buf.indexOf('\r\n');
      if (eol < 0) return;
      const kind = String.fromCharCode(buf[0]);
      const rest = buf.subarray(1, eol).toString();
      if (kind === '+') done(null, rest);
      else if (kind === '-') done(null, { error: rest });
      else if (kind === ':') done(null, Number(rest));
      else if (kind === '$' || kind === '=') {
        const n = Number(rest);
        if (n < 0) done(null, null);
        else if (buf.length >= eol + 2 + n + 2) done(null, buf.subarray(eol + 2, eol + 2 + n).toString());
      } else done(new Error(`unexpected reply ${JSON.stringify(buf.subarray(0, eol).toString())}`));
    });
  });
}

async function infoField(port, section, field) {
  const reply = await rawCall(port, ['INFO', section]);
  if (typeof reply !== 'string') throw new HarnessError(`INFO ${section} on port ${port}: ${JSON.stringify(reply)}`);
  const line = reply.split('\r\n').find((l) => l.startsWith(`${field}:`));
  return line === undefined ? null : line.slice(field.length + 1).trim();
}

/** pid is ancestor or one of its descendants (Linux /proc; a wrapper may fork). */
function isDescendant(pid, ancestor) {
  for (let seen = 0; pid > 1 && seen < 64; seen++) {
    if (pid === ancestor) return true;
    let stat;
    try { stat = readFileSync(`/proc/${pid}/stat`, 'utf8'); } catch { return false; }
    pid = Number(stat.slice(stat.lastIndexOf(')') + 1).trim().split(/\s+/)[1]); // field 4: ppid
  }
  return pid === ancestor;
}

// ------------------------------------------------------------------------ a server

// Servers still running when this process exits (a benchmark that threw, a test runner that
// gave up) are killed with it rather than left holding their ports.
const running = new Set();
process.once('exit', () => { for (const p of running) try { p.kill('SIGKILL'); } catch { /* gone */ } });

/**
 * A server process on a free loopback port with the module loaded.
 *
 *   extra        more server arguments, e.g. ['--replicaof', '127.0.0.1', '6379']
 *   module       true: modulePath(profiles); a path; false: none
 *   profiles     where module=true looks under target/ (default ['debug'])
 *   binary       the server binary (default serverBin())
 *   dirPrefix    the temp dir's name (the dir is the server's --dir, removed by stop())
 *   startTimeout ms to wait for the server to answer
 */
export class Server {
  constructor(extra = [], { module = true, profiles = ['debug'], binary, dirPrefix = 'node-jwks-test-', startTimeout = 20000 } = {}) {
    this.extra = extra.map(String);
    this.module = module === true ? modulePath(profiles) : module || null;
    this.binary = binary || serverBin();
    this.startTimeout = startTimeout;
    this.dir = mkdtempSync(join(tmpdir(), dirPrefix));
    this.clients = [];
    this.port = null;
    this.proc = null;
    this._admin = null;
  }

  /** A new server, started: another port if the first one turns out to be taken. */
  static async start(extra, opts) {
    const s = new Server(extra, opts);
    try {
      await s.firstStart();
    } catch (e) {
      await s.stop();
      throw e;
    }
    return s;
  }

  get args() {
    return ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir,
      '--logfile', 'server.log', '--save', '', '--appendonly', 'no',
      ...(this.module ? ['--loadmodule', this.module] : []), ...this.extra];
  }

  get logPath() { return join(this.dir, 'server.log'); }

  log() {
    try { return readFileSync(this.logPath, 'utf8'); } catch { return ''; }
  }

  logTail(lines = 40) { return this.log().split('\n').slice(-lines).join('\n') || '(empty)'; }

  async firstStart(tries = 5) {
    for (let attempt = 1; ; attempt++) {
      this.port = await freePort();
      try {
        return await this.start();
      } catch (e) {
        if (!(e instanceof PortTaken)) throw e;
        if (attempt === tries) throw new HarnessError(`${e.message}; gave up after ${tries} ports`);
        process.stderr.write(`harness: ${e.message}; trying another port\n`);
      }
    }
  }

  /** Spawns the server (on the same port and dir after kill()/stop()) and waits until it
   * answers and is ours; throws HarnessError otherwise, leaving no process behind. */
  async start() {
    if (this.running) throw new HarnessError(`server on port ${this.port} is already running`);
    let logFrom = 0;
    try { logFrom = statSync(this.logPath).size; } catch { /* first start */ }
    const proc = spawn(this.binary, this.args, { stdio: 'ignore' });
    this.proc = proc;
    this.exited = new Promise((res) => proc.once('exit', res));
    this.spawnError = null;
    proc.once('error', (e) => { this.spawnError = e; });
    running.add(proc);
    proc.once('exit', () => running.delete(proc));
    try {
      await this.waitReady(logFrom);
    } catch (e) {
      await this.kill();
      throw e;
    }
    return this;
  }

  async waitReady(logFrom) {
    const deadline = Date.now() + this.startTimeout;
    for (;;) {
      if (await this.answers()) return this.checkOwn();
      if (this.spawnError) throw new HarnessError(`${this.binary}: ${this.spawnError.message}`);
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) {
        if (this.log().slice(logFrom).includes('Address already in use')) {
          throw new PortTaken(`port ${this.port} is taken by another process`);
        }
        throw new HarnessError(`${this.binary} exited (${this.proc.exitCode ?? this.proc.signalCode}) on port ${this.port}; ` +
          `${this.logPath}:\n${this.logTail()}`);
      }
      if (Date.now() > deadline) {
        throw new HarnessError(`${this.binary} did not answer on port ${this.port} within ${this.startTimeout} ms; ` +
          `${this.logPath}:\n${this.logTail()}`);
      }
      await sleep(20);
    }
  }

  async answers() {
    let reply;
    try { reply = await rawCall(this.port, ['PING']); } catch { return false; }
    return !(reply && reply.error && reply.error.startsWith('LOADING')); // an RDB or AOF being read
  }

  /** The server answering on our port must be the process we spawned. */
  async checkOwn() {
    const pid = await infoField(this.port, 'server', 'process_id');
    if (pid !== null && /^\d+$/.test(pid) && isDescendant(Number(pid), this.proc.pid)) return;
    const state = this.running ? 'still running' : `exited ${this.proc.exitCode ?? this.proc.signalCode}`;
    throw new PortTaken(`the server answering on port ${this.port} is not ours: its process_id is ${pid}, ` +
      `we spawned pid ${this.proc.pid} (${state})`);
  }

  get running() { return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null; }

  /** A new connection (closed by stop()). */
  client(options = {}) {
    const c = new Redis({ host: '127.0.0.1', port: this.port, ...options });
    c.on('error', () => {}); // reconnecting while a test stopped the server
    this.clients.push(c);
    return c;
  }

  /** One connection kept for the harness's and the caller's own commands (CLUSTER, INFO...). */
  get admin() {
    if (!this._admin) this._admin = this.client();
    return this._admin;
  }

  /** SIGKILL: no save on exit, as a crash would. */
  async kill() {
    if (this.running) {
      this.proc.kill('SIGKILL');
      await this.exited;
    }
  }

  /** SIGSTOP: the server hangs (connections stay open, nothing answers). */
  pause() { this.proc.kill('SIGSTOP'); }
  resume() { this.proc.kill('SIGCONT'); }

  /** Closes the connections, SIGTERM (SIGKILL after 10 s), removes the dir. */
  async stop() {
    for (const c of this.clients) c.disconnect();
    this.clients = [];
    this._admin = null;
    if (this.running) {
      this.proc.kill('SIGCONT');
      this.proc.kill('SIGTERM');
      const t = setTimeout(() => this.proc.kill('SIGKILL'), 10000);
      await this.exited;
      clearTimeout(t);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------------------ a cluster

const clock = () => Number(process.hrtime.bigint()) / 1e6;
const tolerant = { interval: 5, retryErrors: true };

/**
 * A Redis Cluster on loopback: `primaries` primaries with `replicas` replicas each, every
 * node a Server loading the module, slots assigned by `redis-cli --cluster create` (as
 * tests/cluster.rs and python/tests/harness.py build it). `extra` goes to every node;
 * `options` to Server (profiles, dirPrefix...).
 */
export class Cluster {
  static async start(primaries = 3, { replicas = 0, extra = [], ...options } = {}) {
    const c = new Cluster();
    try {
      for (let i = 0; i < primaries * (1 + replicas); i++) {
        c.nodes.push(await Server.start(['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf',
          '--cluster-node-timeout', '2000', '--cluster-port', String(await freePort()), ...extra], options));
      }
      execFileSync('redis-cli', ['--cluster', 'create', ...c.nodes.map((n) => `127.0.0.1:${n.port}`),
        '--cluster-replicas', String(replicas), '--cluster-yes'], { stdio: 'pipe', timeout: 60000 });
      for (const n of c.nodes) {
        await waitUntil(async () => (await n.admin.cluster('INFO')).includes('cluster_state:ok'), 30000, 'cluster ok', tolerant);
      }
      // Every replica attached and in sync.
      await waitUntil(async () => {
        for (const n of c.nodes) {
          const info = await n.admin.info('replication');
          if (info.includes('role:slave') && !info.includes('master_link_status:up')) return false;
        }
        return true;
      }, 30000, 'replicas in sync', tolerant);
    } catch (e) {
      await c.stop();
      throw e;
    }
    return c;
  }

  constructor() {
    this.nodes = [];
    this.clients = [];
  }

  /** Startup nodes for a cluster client. */
  seeds() { return this.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })); }

  /** A new ioredis Cluster client (closed by stop()). */
  client(options = {}) {
    const r = new Redis.Cluster(this.seeds(), options);
    r.on('error', () => {});
    this.clients.push(r);
    return r;
  }

  byPort(port) { return this.nodes.find((n) => n.port === Number(port)); }

  /** The primary serving `key`'s slot, as one node sees it. */
  async owner(key, via = this.nodes[0]) {
    const slot = await via.admin.cluster('KEYSLOT', key);
    for (const [lo, hi, [, port]] of await via.admin.cluster('SLOTS')) {
      if (lo <= slot && slot <= hi) return this.byPort(port);
    }
    throw new Error(`slot ${slot} unassigned`);
  }

  async primaries() {
    const out = [];
    for (const n of this.nodes) if ((await n.admin.info('replication')).includes('role:master')) out.push(n);
    return out;
  }

  /** Every node sees `node` serving `key`'s slot. */
  async everyNodeSees(key, node, timeout, what) {
    await waitUntil(async () => {
      for (const n of this.nodes) if ((await this.owner(key, n)) !== node) return false;
      return true;
    }, timeout, what, tolerant);
  }

  /** SETSLOT IMPORTING/MIGRATING, MIGRATE the slot's keys in one call, then SETSLOT NODE on
   * the destination, the source and the other primaries (what `redis-cli --cluster reshard`
   * does); resolves once every node sees the move, with the time of each step. */
  async moveSlot(key, src, dst) {
    const t0 = clock();
    const steps = {};
    const step = (name) => { steps[name] = +(clock() - t0).toFixed(1); };
    const slot = await src.admin.cluster('KEYSLOT', key);
    const srcId = await src.admin.cluster('MYID');
    const dstId = await dst.admin.cluster('MYID');
    const others = (await this.primaries()).filter((x) => x !== src && x !== dst);
    await dst.admin.cluster('SETSLOT', slot, 'IMPORTING', srcId);
    await src.admin.cluster('SETSLOT', slot, 'MIGRATING', dstId);
    step('migrating');
    const names = await src.admin.cluster('GETKEYSINSLOT', slot, 1000);
    if (names.length) await src.admin.call('MIGRATE', '127.0.0.1', dst.port, '', 0, 5000, 'KEYS', ...names);
    step('migrated');
    for (const n of [dst, src, ...others]) {
      await n.admin.cluster('SETSLOT', slot, 'NODE', dstId);
      step(n === dst ? 'node_on_destination' : n === src ? 'node_on_source' : 'node_on_others');
    }
    await this.everyNodeSees(key, dst, 10000, 'every node to see the slot move');
    step('every_node_sees_it');
    return { slot, keys: names.length, steps_ms: steps };
  }

  /** CLUSTER FAILOVER on a replica of `primary` (graceful: the replica catches up first);
   * resolves once every node sees the replica serving `key`'s slot. */
  async failover(key, primary) {
    const id = await primary.admin.cluster('MYID');
    const lines = await primary.admin.cluster('REPLICAS', id);
    const replica = this.byPort(String(lines[0]).split(' ')[1].split(':')[1].split('@')[0]);
    const t0 = clock();
    await replica.admin.cluster('FAILOVER');
    const steps = { failover_reply: +(clock() - t0).toFixed(1) };
    await waitUntil(async () => (await replica.admin.info('replication')).includes('role:master'), 20000,
      'the replica to take over', tolerant);
    steps.replica_is_primary = +(clock() - t0).toFixed(1);
    await this.everyNodeSees(key, replica, 20000, 'every node to see the failover');
    steps.every_node_sees_it = +(clock() - t0).toFixed(1);
    return { replica, steps_ms: steps };
  }

  async stop() {
    for (const c of this.clients) c.disconnect();
    this.clients = [];
    await Promise.all(this.nodes.map((n) => n.stop()));
  }
}

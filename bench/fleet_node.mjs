#!/usr/bin/env node
// Push that cannot silently go stale (issue #21): a fleet of Node KeyCache verifiers on a
// Redis Cluster, through a reshard of the key set's slot and a failover of its primary,
// while the key set rotates every --interval ms.
//
// Starts its own cluster (3 primaries, a replica each, every node loading the module
// $JWKS_MODULE, else target/release or target/debug; $JWKS_SERVER_BIN, default redis-server),
// one key set, and --processes verifier processes (bench/fleet_verifier.mjs), each holding a
// KeyCache on an ioredis Cluster client with the KeyCache's defaults. A rotator (its own
// Cluster client) runs JWKS.ROTATE every --interval ms: ADD a new key, PROMOTE it, RETIRE the
// oldest beyond 3. Three phases, by the time of each rotation's reply:
//
//   steady    --steady ms of rotations and nothing else
//   reshard   the key set's slot moves to another primary (SETSLOT IMPORTING/MIGRATING,
//             MIGRATE, SETSLOT NODE on every primary), then --settle ms
//   failover  CLUSTER FAILOVER on a replica of the slot's owner, then --settle ms
//
// Each event starts --offset ms after a rotation's reply: 0 (the default) puts the fleet's
// reloads and acks for that rotation in the reshard's MIGRATING window (the worst case);
// half the interval starts it between two rotations' traffic.
//
// For each rotation and process: the time from the JWKS.ROTATE reply to the moment the process
// holds that generation (process.hrtime is CLOCK_MONOTONIC, so the processes' times compare);
// for each retired kid and process: the time from the reply of the rotation that retired it
// until the process's held copy no longer has it. p50/p99/max per phase, rotations a process
// never held by the end (after waiting up to --converge ms for the fleet), and what the
// KeyCaches counted and logged (resubscribes, load and ack errors, missed events). Asserts
// nothing. Prints a table and JSON (--json FILE to keep it). Smoke run (CI):
//
//     node bench/fleet_node.mjs --smoke

import { writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { basename } from 'node:path';
import { parseArgs } from 'node:util';
import {
  Redis, asMap, clock, moduleDefault, publicJwk, serverBin, sleep, startCluster, startFleet, summary,
} from './fleet_common.mjs';

const KEY = 'jwks:{fleet}';

const args = parseArgs({
  options: {
    processes: { type: 'string', default: '20' },
    interval: { type: 'string', default: '200' },
    steady: { type: 'string', default: '10000' },
    settle: { type: 'string', default: '8000' },
    converge: { type: 'string', default: '30000' },
    offset: { type: 'string', default: '0' },
    'health-interval': { type: 'string' },
    smoke: { type: 'boolean', default: false },
    json: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
}).values;
if (args.smoke) Object.assign(args, { processes: '3', steady: '1000', settle: '1500', converge: '15000' });
for (const k of ['processes', 'interval', 'steady', 'settle', 'converge', 'offset']) args[k] = Number(args[k]);

if (args.help) {
  console.log('node bench/fleet_node.mjs [--processes 20] [--interval 200 (ms)] [--steady 10000 (ms)] [--settle 8000 (ms)]\n' +
    '  [--converge 30000 (ms)] [--offset 0 (ms after a rotation\'s reply that each event starts)] [--health-interval ms (KeyCache option; default: its own)] [--smoke] [--json FILE]');
  process.exit(0);
}

// ------------------------------------------------------------------------ the rotator

class Rotator {
  constructor(cluster) {
    this.client = new Redis.Cluster(cluster.seeds(), { redisOptions: { enableReadyCheck: false },
      retryDelayOnMoved: 0, retryDelayOnTryAgain: 50, retryDelayOnClusterDown: 100, maxRedirections: 64 });
    this.client.on('error', () => {});
    this.rotations = []; // { gen, kid, retired, at, took, phase, error? }
    this.errors = [];
    this.kids = [];
    this.phase = 'setup';
    this.n = 0;
    this.running = false;
  }

  async bootstrap() {
    const kid = `k${this.n++}`;
    const r = asMap(await this.client.call('JWKS.ROTATE', KEY, 'ADD', publicJwk(kid), 'PROMOTE', kid));
    this.kids.push(kid);
    this.gen = Number(r.generation);
  }

  async rotateOnce() {
    const kid = `k${this.n++}`;
    const jwk = publicJwk(kid);
    const ops = ['ADD', jwk, 'PROMOTE', kid];
    const retired = this.kids.length >= 3 ? this.kids[0] : null;
    if (retired) ops.push('RETIRE', retired);
    const t0 = clock();
    let reply = null;
    for (let attempt = 0; ; attempt++) {
      try {
        // IFGEN: a retry after an error the rotator could not attribute applies at most once.
        reply = asMap(await this.client.call('JWKS.ROTATE', KEY, 'IFGEN', String(this.gen), ...ops));
        break;
      } catch (e) {
        const at = clock();
        this.errors.push({ at, phase: this.phase, error: String(e.message).slice(0, 200) });
        if (/GENMISMATCH/.test(e.message)) {
          // An earlier attempt applied (its reply was lost): read where the set is.
          const has = await this.client.call('JWKS.KEY', KEY, kid).catch(() => null);
          const meta = asMap(await this.client.call('JWKS.GET', KEY, 'META').catch(() => null));
          if (has && meta) {
            reply = { generation: meta.generation, recovered: true };
            break;
          }
          if (meta) this.gen = Number(meta.generation);
        }
        if (attempt > 200) throw e;
        await sleep(20);
      }
    }
    const at = clock();
    this.gen = Number(reply.generation);
    this.kids.push(kid);
    if (retired) this.kids.shift();
    this.rotations.push({ gen: this.gen, kid, retired, at, took: at - t0, phase: this.phase,
      recovered: !!reply.recovered });
  }

  start(interval) {
    this.running = true;
    this.loop = (async () => {
      let next = clock();
      while (this.running) {
        await this.rotateOnce();
        next += interval;
        const wait = next - clock();
        if (wait > 0) await sleep(wait);
        else next = clock(); // late (a rotation blocked by the event): do not burst to catch up
      }
    })();
  }

  async stop() {
    this.running = false;
    await this.loop;
    this.client.disconnect();
  }
}

// ------------------------------------------------------------------------ analysis

function analyse(rotations, reports, events) {
  const phases = {};
  const perPhase = (name) => (phases[name] ||= { held: [], retired: [], never_held: 0, never_dropped: 0 });
  let worstRetired = null;
  for (const [i, r] of reports.entries()) {
    if (r.missing) continue;
    const first = r.held[0];
    for (const rot of rotations) {
      if (first && first[0] > rot.gen) continue; // this process started after it
      const p = perPhase(rot.phase);
      const h = r.held.find(([g]) => g >= rot.gen);
      if (h) p.held.push(h[1] - rot.at);
      else p.never_held += 1;
      if (rot.retired) {
        // The first change after which the held copy no longer has the retired kid.
        const gone = r.held.find(([g, , kids]) => g >= rot.gen - 1 && !kids.includes(rot.retired));
        if (gone) {
          const ms = gone[1] - rot.at;
          p.retired.push(ms);
          if (!worstRetired || ms > worstRetired.ms) {
            worstRetired = { ms: +ms.toFixed(2), kid: rot.retired, process: i, phase: rot.phase, generation: rot.gen };
          }
        } else {
          p.never_dropped += 1;
        }
      }
    }
  }
  const out = {};
  for (const [name, p] of Object.entries(phases)) {
    const rots = rotations.filter((x) => x.phase === name);
    out[name] = {
      rotations: rots.length,
      rotate_call_ms: summary(rots.map((x) => x.took)),
      rotation_to_held: summary(p.held),
      retired_key_held: summary(p.retired),
      never_held: p.never_held,
      retired_never_dropped: p.never_dropped,
    };
  }
  return { phases: out, worst_retired: worstRetired, events };
}

function fleetFindings(reports, events) {
  const counters = ['loads', 'loadErrors', 'events', 'subscribes', 'reconnects', 'missedEvents', 'generationGaps',
    'acks', 'ackErrors', 'ackReloads', 'ttlLoads', 'staleRefusals'];
  const totals = Object.fromEntries(counters.map((c) => [c, 0]));
  const lastAckErrors = {};
  const byEvent = {}; // event -> "level KIND: detail" -> times after the event's start
  const timelines = {}; // process -> [ms after the first event's start, line]
  const t0 = events.length ? events[0].start : 0;
  for (const [i, r] of reports.entries()) {
    if (r.missing) continue;
    for (const c of counters) totals[c] += r.stats[c] || 0;
    if (r.stats.lastAckError) lastAckErrors[r.stats.lastAckError] = (lastAckErrors[r.stats.lastAckError] || 0) + 1;
    for (const [at, level, line] of r.logs) {
      const kind = line.split(' ')[0];
      const detail = line.slice(kind.length).replace(/ key=\S+/, '').replace(/\(retrying in \d+ ms\)/, '')
        .replace(/generation=\d+->\d+/, 'generation=N->M').replace(/ \d+ 127\.0\.0\.1:\d+/, ' <slot> <node>').trim().slice(0, 160);
      const ev = [...events].reverse().find((e) => e.start <= at);
      const name = ev ? ev.name : 'before the events';
      ((byEvent[name] ||= {})[`${level} ${kind} ${detail}`] ||= []).push(ev ? at - ev.start : 0);
      (timelines[i] ||= []).push(`${(at - t0).toFixed(1)} ms ${kind} ${detail}`);
    }
  }
  const logs = {};
  for (const [ev, lines] of Object.entries(byEvent)) {
    logs[ev] = Object.fromEntries(Object.entries(lines).map(([k, ts]) => [k, {
      count: ts.length, first_ms_after_start: +Math.min(...ts).toFixed(1), last_ms_after_start: +Math.max(...ts).toFixed(1) }]));
  }
  return { counters: totals, last_ack_errors: lastAckErrors, log_lines_by_event: logs,
    timelines_ms_after_reshard_start: timelines };
}

// ------------------------------------------------------------------------ the run

const report = {
  processes: args.processes, interval_ms: args.interval, steady_ms: args.steady, settle_ms: args.settle,
  event_offset_ms: args.offset,
  server: serverBin(), module: moduleDefault(), cpus: cpus().length, node: process.version,
  keycache_options: args['health-interval'] ? { healthInterval: Number(args['health-interval']) } : 'defaults',
};
const cluster = await startCluster(3, 1);
let fleet = null;
let rotator = null;
try {
  rotator = new Rotator(cluster);
  await rotator.bootstrap();
  const options = args['health-interval'] ? { healthInterval: Number(args['health-interval']) } : {};
  fleet = await startFleet(args.processes, KEY, { cluster: cluster.seeds() }, options);
  report.load_before = loadavg()[0];
  const events = [];
  rotator.phase = 'steady';
  rotator.start(args.interval);
  await sleep(args.steady);

  // Each event starts --offset ms after a rotation's reply.
  const onTick = async () => {
    const n = rotator.rotations.length;
    while (rotator.rotations.length === n) await sleep(1);
    if (args.offset > 0) await sleep(args.offset);
  };

  // Reshard: the slot moves to another primary.
  await onTick();
  rotator.phase = 'reshard';
  const src = await cluster.owner(KEY);
  const dst = (await cluster.primaries()).find((n) => n !== src);
  let t = clock();
  const moved = await cluster.moveSlot(KEY, src, dst);
  events.push({ name: 'reshard', start: t, took_ms: +(clock() - t).toFixed(1), from: src.port, to: dst.port, ...moved });
  await sleep(args.settle);

  // Failover: the slot's (new) owner hands over to its replica.
  await onTick();
  rotator.phase = 'failover';
  t = clock();
  const { replica: promoted, steps_ms: steps } = await cluster.failover(KEY, dst);
  events.push({ name: 'failover', start: t, took_ms: +(clock() - t).toFixed(1), from: dst.port, to: promoted.port, steps_ms: steps });
  await sleep(args.settle);
  await rotator.stop();

  // Let the fleet converge (or show that it does not), bounded.
  const last = rotator.gen;
  t = clock();
  while (fleet.latest.some((g) => g < last) && clock() - t < args.converge) await sleep(50);
  report.converged = {
    final_generation: last,
    waited_ms: +(clock() - t).toFixed(0),
    processes_behind: fleet.latest.map((g, i) => [i, g]).filter(([, g]) => g < last),
  };
  const reports = await fleet.stop();
  fleet = null;
  report.load_after = loadavg()[0];
  report.rotations = rotator.rotations.length;
  report.rotator_errors = rotator.errors.length;
  report.rotator_error_samples = [...new Map(rotator.errors.map((e) => [`${e.phase}: ${e.error.replace(/\d+/g, 'N')}`, e])).keys()];
  report.recovered_rotations = rotator.rotations.filter((r) => r.recovered).length;
  Object.assign(report, analyse(rotator.rotations, reports, events));
  report.events = events.map(({ start, ...e }) => e);
  report.keycache = fleetFindings(reports, events);
  report.missing_reports = reports.filter((r) => r.missing).length;
} catch (e) {
  console.error(`fleet_node: ${e.stack}`);
  process.exitCode = 1;
} finally {
  if (rotator && rotator.running) await rotator.stop().catch(() => {});
  if (fleet) await fleet.stop(5000).catch(() => {});
  await cluster.stop();
}
if (process.exitCode) process.exit();
table(report);
const text = JSON.stringify(report, null, 2);
console.log(text);
if (args.json) writeFileSync(args.json, `${text}\n`);

function table(r) {
  const ms = (v) => (v === undefined ? '-'.padStart(12) : `${v.toFixed(1).padStart(9)} ms`);
  console.log(`\n${r.processes} KeyCache processes on a 3+3 cluster, a rotation every ${r.interval_ms} ms, ${r.cpus} CPUs, ` +
    `${basename(r.server)}, node ${r.node}, KeyCache ${JSON.stringify(r.keycache_options)}, events ${r.event_offset_ms} ms after a rotation`);
  for (const e of r.events) console.log(`  ${e.name}: ${e.took_ms} ms (${e.from} -> ${e.to}; ms after its start: ${JSON.stringify(e.steps_ms)})`);
  console.log(`${'phase'.padEnd(10)} ${'rotations'.padStart(9)}  ${'held p50'.padStart(12)} ${'p99'.padStart(12)} ${'max'.padStart(12)}` +
    `  ${'retired p99'.padStart(12)} ${'max'.padStart(12)}  never  rotate max`);
  for (const [name, p] of Object.entries(r.phases)) {
    const h = p.rotation_to_held;
    const x = p.retired_key_held;
    console.log(`${name.padEnd(10)} ${String(p.rotations).padStart(9)}  ${ms(h.p50_ms)} ${ms(h.p99_ms)} ${ms(h.max_ms)}` +
      `  ${ms(x.p99_ms)} ${ms(x.max_ms)}  ${String(p.never_held).padStart(5)}  ${ms(p.rotate_call_ms.max_ms)}`);
  }
  if (r.worst_retired) console.log(`longest a retired key was held: ${r.worst_retired.ms} ms (${JSON.stringify(r.worst_retired)})`);
  console.log(`converged: ${JSON.stringify(r.converged)}`);
  console.log(`KeyCache counters (fleet total): ${JSON.stringify(r.keycache.counters)}`);
  console.log('what the KeyCaches logged (count, first..last ms after the event started):');
  for (const [ev, lines] of Object.entries(r.keycache.log_lines_by_event)) {
    for (const [line, x] of Object.entries(lines)) console.log(`  ${ev}: ${x.count}x ${x.first_ms_after_start}..${x.last_ms_after_start} ms  ${line}`);
  }
  console.log(`rotator errors: ${r.rotator_errors} ${JSON.stringify(r.rotator_error_samples)}\n`);
}

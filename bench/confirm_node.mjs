#!/usr/bin/env node
// Rotation confirmed by the verifiers (issue #21): how long a next key waits to become
// current under `CONFIRM 100` with a fleet of Node KeyCache verifiers, against PROMOTE-AFTER
// alone (the guessed delay).
//
// Starts its own redis-server with the module ($JWKS_SERVER_BIN, default redis-server;
// $JWKS_MODULE, else target/release or target/debug), one key set, and --processes verifier
// processes (bench/fleet_verifier.mjs), each a KeyCache with its defaults (it acks after every
// load and every ackTtlMs/3). Two runs of --rotations rotations each:
//
//   confirm        JWKS.POLICY K PROMOTE-AFTER --ceiling CONFIRM 100 MIN-WAIT 0
//   promote-after  JWKS.POLICY K PROMOTE-AFTER --promote-after CONFIRM 0
//
// Each rotation: JWKS.ROTATE K ADD next (and RETIRE the key two before, so the set stays
// small), then the time from that reply until the key set's change event names the new key
// current (the promotion; JWKS.INFO is checked to agree), then a wait until every verifier
// holds the promoted generation before the next ADD. Afterwards the audit trail must hold
// exactly one JWKS_KEY_PROMOTED per rotation. Asserts nothing else. Prints a table and JSON
// (--json FILE to keep it). Smoke run (CI):
//
//     node bench/confirm_node.mjs --smoke

import { writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { basename } from 'node:path';
import { parseArgs } from 'node:util';
import {
  asMap, clock, moduleDefault, publicJwk, serverBin, sleep, startFleet, startServer, summary, waitUntil,
} from './fleet_common.mjs';

const KEY = 'jwks:{confirm}';
const CHANNEL = `${KEY}:events`;

const args = parseArgs({
  options: {
    processes: { type: 'string', default: '50' },
    rotations: { type: 'string', default: '20' },
    ceiling: { type: 'string', default: '60000' },
    'promote-after': { type: 'string', default: '2000' },
    'promote-after-rotations': { type: 'string' },
    smoke: { type: 'boolean', default: false },
    json: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
}).values;
if (args.smoke) Object.assign(args, { processes: '3', rotations: '3', 'promote-after': '1000' });
for (const k of ['processes', 'rotations', 'ceiling', 'promote-after']) args[k] = Number(args[k]);
args['promote-after-rotations'] = Number(args['promote-after-rotations'] || args.rotations);

if (args.help) {
  console.log('node bench/confirm_node.mjs [--processes 50] [--rotations 20] [--ceiling 60000 (ms, PROMOTE-AFTER under CONFIRM)]\n' +
    '  [--promote-after 2000 (ms, the run without CONFIRM)] [--promote-after-rotations N] [--smoke] [--json FILE]');
  process.exit(0);
}

const server = await startServer();
const admin = server.admin;
const sub = server.client({ enableReadyCheck: false });
const promoted = new Map(); // kid -> hrtime the event naming it current arrived
await sub.ssubscribe(CHANNEL);
sub.on('smessage', (_, message) => {
  const m = JSON.parse(message);
  if (m.current && !promoted.has(m.current)) promoted.set(m.current, clock());
});

let n = 0;
const kids = [];
async function rotate(...ops) {
  return asMap(await admin.call('JWKS.ROTATE', KEY, ...ops));
}
const info = async () => asMap(await admin.call('JWKS.INFO', KEY));

async function run(name, policy, rotations, fleet) {
  await admin.call('JWKS.POLICY', KEY, ...policy);
  const out = [];
  for (let i = 0; i < rotations; i++) {
    const kid = `k${n++}`;
    const ops = ['ADD', publicJwk(kid)];
    if (kids.length >= 2) ops.push('RETIRE', kids.shift()); // the key before the previous one
    const added = await rotate(...ops);
    const t0 = clock();
    const limit = Number(policy[1]) + 10000;
    await waitUntil(() => promoted.has(kid), limit, `${name}: the promotion of ${kid}`);
    const ms = promoted.get(kid) - t0;
    const now = await info();
    const current = now.current == null ? undefined : String(now.current);
    const gen = Number(now.generation);
    // The server's own view: the key's promoted_ms - added_ms (Unix ms), free of the
    // driver's scheduling delays on a loaded machine.
    const entry = (now.keys || []).map(asMap).find((k) => String(k.kid) === kid) || {};
    const serverMs = entry.promoted_ms != null && entry.added_ms != null
      ? Number(entry.promoted_ms) - Number(entry.added_ms) : null;
    out.push({ kid, ms, server_ms: serverMs, added_generation: Number(added.generation), promoted_generation: gen,
      info_agrees: current === undefined ? null : current === kid });
    kids.push(kid);
    // A settled fleet before the next ADD: every verifier holds the promotion.
    await waitUntil(() => fleet.latest.every((g) => g >= gen), 30000, `${name}: the fleet to hold generation ${gen}`);
    await sleep(50);
  }
  return out;
}

const report = {
  processes: args.processes, rotations: args.rotations, server: serverBin(), module: moduleDefault(),
  cpus: cpus().length, node: process.version,
};
let fleet = null;
try {
  const first = `k${n++}`;
  await rotate('ADD', publicJwk(first), 'PROMOTE', first);
  kids.push(first);
  fleet = await startFleet(args.processes, KEY, { port: server.port }, {});
  await waitUntil(async () => Number((await info()).verifiers) === args.processes, 30000, 'every verifier to ack');
  report.load_before = loadavg()[0];
  const confirm = await run('confirm', ['PROMOTE-AFTER', String(args.ceiling), 'CONFIRM', '100', 'MIN-WAIT', '0'],
    args.rotations, fleet);
  const after = await run('promote-after', ['PROMOTE-AFTER', String(args['promote-after']), 'CONFIRM', '0'],
    args['promote-after-rotations'], fleet);
  report.load_after = loadavg()[0];
  report.live_verifiers = Number((await info()).verifiers);
  const audit = await admin.call('XRANGE', `${KEY}:audit`, '-', '+');
  const promotions = audit.map(([, f]) => asMap(f)).filter((e) => e.action === 'JWKS_KEY_PROMOTED');
  const reasons = {};
  for (const e of promotions) reasons[e.reason] = (reasons[e.reason] || 0) + 1;
  report.audit_promotions = { total: promotions.length, expected: 1 + confirm.length + after.length, by_reason: reasons };
  report.confirm = {
    policy: `PROMOTE-AFTER ${args.ceiling} CONFIRM 100 MIN-WAIT 0`, add_to_current: summary(confirm.map((r) => r.ms)),
    server_added_to_promoted: summary(confirm.map((r) => r.server_ms).filter((v) => v != null)),
    info_disagrees: confirm.filter((r) => r.info_agrees === false).length,
  };
  report.promote_after = {
    policy: `PROMOTE-AFTER ${args['promote-after']}`, add_to_current: summary(after.map((r) => r.ms)),
    server_added_to_promoted: summary(after.map((r) => r.server_ms).filter((v) => v != null)),
    info_disagrees: after.filter((r) => r.info_agrees === false).length,
    note: 'PROMOTE-AFTER alone waits the configured delay whatever the verifiers hold: in production that is the guessed worst case of every cache (e.g. the 60000 ms ceiling above, or days)',
  };
  const reports = await fleet.stop();
  fleet = null;
  report.fleet_counters = ['loads', 'acks', 'ackErrors', 'ackReloads', 'missedEvents', 'reconnects']
    .reduce((o, c) => ({ ...o, [c]: reports.reduce((a, r) => a + (r.stats ? r.stats[c] : 0), 0) }), {});
  report.commandstats = Object.fromEntries([...(await admin.info('commandstats')).matchAll(/cmdstat_(jwks\.[^:]+):calls=(\d+)/g)]
    .map((m) => [m[1], Number(m[2])]));
} catch (e) {
  console.error(`confirm_node: ${e.stack}`);
  process.exitCode = 1;
} finally {
  if (fleet) await fleet.stop(5000).catch(() => {});
  await server.stop();
}
if (process.exitCode) process.exit();
table(report);
const text = JSON.stringify(report, null, 2);
console.log(text);
if (args.json) writeFileSync(args.json, `${text}\n`);

function table(r) {
  const ms = (v) => `${v.toFixed(1).padStart(9)} ms`;
  console.log(`\n${r.processes} KeyCache processes, standalone ${basename(r.server)}, ${r.cpus} CPUs, node ${r.node}`);
  console.log('time from the ADD reply to the promotion event (the next key current)');
  console.log(`${'policy'.padEnd(44)} ${'n'.padStart(4)} ${'p50'.padStart(12)} ${'p99'.padStart(12)} ${'max'.padStart(12)}`);
  for (const k of ['confirm', 'promote_after']) {
    const x = r[k].add_to_current;
    console.log(`${r[k].policy.padEnd(44)} ${String(x.n).padStart(4)} ${ms(x.p50_ms)} ${ms(x.p99_ms)} ${ms(x.max_ms)}`);
  }
  console.log("the same by the server's clock (JWKS.INFO: the key's promoted_ms - added_ms)");
  for (const k of ['confirm', 'promote_after']) {
    const x = r[k].server_added_to_promoted;
    if (x.n) console.log(`${r[k].policy.padEnd(44)} ${String(x.n).padStart(4)} ${ms(x.p50_ms)} ${ms(x.p99_ms)} ${ms(x.max_ms)}`);
  }
  console.log(`audit JWKS_KEY_PROMOTED: ${JSON.stringify(r.audit_promotions)}`);
  console.log(`fleet: ${JSON.stringify(r.fleet_counters)}; live verifiers at the end: ${r.live_verifiers}\n`);
}

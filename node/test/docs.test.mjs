// Runs docs/node.md: every ```js block is a program (its first line names the file), every
// ```sh {test=node} block runs in order in one shell in a fresh app directory, against a
// test server with a bootstrapped key set (only the port and the key directory are
// replaced; $REDIS_JWKS is this checkout). tests/docs.rs leaves blocks tagged test=node to
// this test.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Redis from 'ioredis';
import { ROOT, Server, rotate } from './helpers.mjs';

const DOC = join(ROOT, 'docs', 'node.md');
const KEY = 'jwks:{auth}';

export function blocks(markdown) {
  const out = [];
  const re = /^```(\w+)( \{test=(\w+)\})?\n([\s\S]*?)^```$/gm;
  for (let m; (m = re.exec(markdown));) out.push({ lang: m[1], tag: m[3], code: m[4] });
  return out;
}

let server;
let dir;
before(async () => {
  server = await Server.start();
  dir = mkdtempSync(join(tmpdir(), 'node-jwks-docs-'));
});
after(async () => {
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('every block of docs/node.md runs', { timeout: 120000 }, async () => {
  const keyDir = join(dir, 'keys');
  const app = join(dir, 'app');
  mkdirSync(keyDir, { mode: 0o700 });
  mkdirSync(app);
  // The issuer's store: one PKCS #8 PEM per kid, mode 0600; the public half published.
  const kid = '2026-12-node-a';
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  writeFileSync(join(keyDir, `${kid}.pem`), privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  const jwk = { ...publicKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'ES256' };
  const r = server.client();
  await rotate(r, KEY, 'ADD', jwk, 'PROMOTE', kid);

  const all = blocks(readFileSync(DOC, 'utf8'));
  assert.ok(all.every((b) => (b.lang === 'sh' && b.tag === 'node') || (b.lang === 'js' && !b.tag)),
    'only ```sh {test=node} and ```js blocks');
  const shell = [];
  for (const [i, b] of all.entries()) {
    const code = b.code.replaceAll('127.0.0.1:6379', `127.0.0.1:${server.port}`)
      .replaceAll('/var/lib/auth/signing-keys', keyDir);
    if (b.lang === 'js') {
      const name = code.match(/^\/\/ (\S+\.[mc]?js)\n/)[1];
      writeFileSync(join(app, name), code);
    } else {
      shell.push(`echo "## block ${i}" >&2`, code);
    }
  }
  const script = shell.join('\n');
  for (const name of all.filter((b) => b.lang === 'js').map((b) => b.code.split('\n')[0].slice(3))) {
    assert.ok(script.includes(`node ${name}`), `${name} is run by a sh block`);
  }
  let out;
  try {
    out = await promisify(execFile)('bash', ['-euo', 'pipefail', '-c', script], {
      cwd: app, timeout: 110000,
      env: { ...process.env, REDIS_JWKS: ROOT, npm_config_prefer_offline: 'true', npm_config_update_notifier: 'false' },
    });
  } catch (e) {
    assert.fail(`docs/node.md failed: ${e.message}\n${e.stdout}\n${e.stderr}`);
  }
  const lines = out.stdout.trim().split('\n');
  assert.equal(lines.filter((l) => l === 'user-42').length, 2, out.stdout); // verify.mjs twice
  assert.ok(lines.includes('user-42 generation 1'), out.stdout); // verify.cjs
  assert.ok(lines.includes('checkout-api-1 holds generation 1 current 1'), out.stdout); // fleet.mjs
  assert.ok(out.stdout.includes('KeyCache (events)'), 'the bench smoke run printed its table');
  // The docs' programs (the ACL user's too) ack without an error (the bench has its own server).
  assert.ok(!out.stderr.includes(`KEYCACHE_ACK_FAILED key=${KEY}`), out.stderr);

  // The ACL user can do what a verifier needs and nothing more.
  const v = new Redis({ port: server.port, host: '127.0.0.1', username: 'node_verifier', password: 'verifier-secret', enableReadyCheck: false });
  try {
    assert.ok(await v.call('JWKS.KEY', KEY, kid));
    assert.equal(await v.call('JWKS.ACK', KEY, 'GENERATION', '1', 'ID', 'docs-acl-check'), 1);
    await assert.rejects(v.call('JWKS.POLICY', KEY, 'CONFIRM', '100'), /NOPERM/);
    await assert.rejects(v.call('JWKS.ROTATE', KEY, 'RETIRE', kid), /NOPERM/);
    await assert.rejects(v.call('JWKS.INFO', KEY), /NOPERM/);
    await assert.rejects(v.set('jwks:x', '1'), /NOPERM/);
    await assert.rejects(v.get('other'), /NOPERM/);
  } finally {
    v.disconnect();
  }
});

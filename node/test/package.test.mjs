// The package as users load it: `require` and `import` give the same classes, and the
// shipped types compile for both module systems (tsc --noEmit, strict).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync, symlinkSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esm from 'jwks-redis';

const PKG = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

test('import and require give the same classes', () => {
  const cjs = require('jwks-redis');
  for (const name of ['KeyCache', 'KeyCacheError', 'KeyCacheStale', 'UnknownSigningKey', 'eventsChannel']) {
    assert.equal(typeof esm[name], 'function', name);
    assert.equal(esm[name], cjs[name], name);
  }
  assert.equal(esm.eventsChannel('jwks:{auth}'), 'jwks:{auth}:events');
  assert.equal(esm.eventsChannel('plain'), '{plain}:events');
  assert.ok(new esm.UnknownSigningKey('x') instanceof cjs.KeyCacheError);
});

test('the types compile for ESM and CommonJS consumers', () => {
  const dir = mkdtempSync(join(tmpdir(), 'node-jwks-types-'));
  try {
    mkdirSync(join(dir, 'node_modules'));
    symlinkSync(PKG, join(dir, 'node_modules', 'jwks-redis'));
    for (const dep of ['ioredis', 'jose', '@types', '@ioredis']) {
      symlinkSync(join(PKG, 'node_modules', dep), join(dir, 'node_modules', dep));
    }
    const use = `
const cache = new KeyCache(new Redis(), 'jwks:{auth}', { missInterval: 500, onChange: (s) => s.generation,
  ack: true, ackId: 'api-1', ackTtlMs: 30000 });
const acked: number | null = cache.stats().ackedGeneration;
const ackErrors: number = cache.stats().ackErrors + (acked ?? 0);
const ackId: string = cache.ackId + String(ackErrors);
export async function verify(token: string): Promise<string | undefined> {
  await cache.ready();
  const kid: string | null = cache.currentKid;
  const { payload } = await jwtVerify(token, cache.getKey, { algorithms: ['ES256'] });
  const keys: SigningKey[] = await cache.getSigningKeys();
  cache.on('change', (s: Snapshot) => s.kids.length);
  try { await cache.getSigningKey('x'); } catch (e) { if (e instanceof UnknownSigningKey) return e.code; }
  await cache.close();
  return kid ?? payload.sub ?? ackId ?? String(keys.length);
}
`;
    writeFileSync(join(dir, 'esm.mts'), `import { Redis } from 'ioredis';
import { jwtVerify } from 'jose';
import { KeyCache, UnknownSigningKey, type Snapshot, type SigningKey } from 'jwks-redis';
${use}`);
    writeFileSync(join(dir, 'cjs.cts'), `import Redis = require('ioredis');
import jwks = require('jwks-redis');
import { KeyCache, UnknownSigningKey, type Snapshot, type SigningKey } from 'jwks-redis';
import type { JWTVerifyGetKey } from 'jose';
const getKey: JWTVerifyGetKey = new jwks.KeyCache(new Redis.Redis(), 'k').getKey;
declare function jwtVerify(t: string, k: JWTVerifyGetKey, o: object): Promise<{ payload: { sub?: string } }>;
${use.replace('new Redis()', 'new Redis.Redis()')}`);
    execFileSync(process.execPath, [join(PKG, 'node_modules/typescript/bin/tsc'), '--noEmit', '--strict',
      '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--skipLibCheck', 'false',
      '--types', 'node', '--typeRoots', join(PKG, 'node_modules/@types'), 'esm.mts', 'cjs.cts'], { cwd: dir, stdio: 'pipe' });
  } catch (e) {
    assert.fail(`tsc: ${e.stdout}${e.stderr}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

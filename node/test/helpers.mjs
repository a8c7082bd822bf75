// What the Node tests share: the servers and cluster of harness.mjs (real redis-server or
// $JWKS_SERVER_BIN with the module, $JWKS_MODULE, on free loopback ports), keys and tokens
// made with jose, and helpers for the module's replies.
import { SignJWT, exportJWK, generateKeyPair } from 'jose';

// Servers, the cluster, ports, the module: the shared harness (the benchmarks use it too).
export { Cluster, ROOT, Server, waitUntil } from './harness.mjs';

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

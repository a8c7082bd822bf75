import type { EventEmitter } from 'node:events';
import type { KeyObject, JsonWebKey } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';

/** What a cache holds: one version of the key set's JWKS document. */
export interface Snapshot {
  /** False if no key set is at the name (the cache then holds no keys). */
  readonly exists: boolean;
  readonly document: string | null;
  readonly etag: string | null;
  readonly generation: number | null;
  /** Kids of the published signing keys (current first, then next, then previous). */
  readonly kids: readonly string[];
  /** The current key's kid, or null. */
  readonly current: string | null;
  /** performance.now() when the load that fetched it started. */
  readonly loadedAt: number;
  /** performance.now() until which the copy may be kept (loadedAt + the module's ttl_ms). */
  readonly expiresAt: number;
}

export interface KeyCacheLogger {
  info?(message: string): void;
  warn?(message: string): void;
}

export interface KeyCacheOptions {
  /** ms: at most one JWKS.KEY lookup of an unknown kid per interval (default 1000). */
  missInterval?: number;
  /** ms a kid a lookup found absent is refused without lookups, unless the set changes (10000). */
  negativeTtl?: number;
  /** ms a lookup waits for the reload after a delivered event before KeyCacheStale (1000). */
  staleWait?: number;
  /** ms past the copy's TTL after which lookups fail if no reload succeeded (default: never). */
  maxStale?: number | null;
  /** ms added to the TTL reload, so a scheduled change's event normally comes first (100). */
  refreshGrace?: number;
  /** ms: connect and command timeout of the cache's own connections (2000). */
  timeout?: number;
  /** ms of silence on the subscription before a PING (5000). */
  healthInterval?: number;
  /** [first, max] ms between reconnect attempts, doubling (default [50, 2000]). */
  backoff?: [number, number];
  /** Called with the new snapshot after a load that changed what is held. */
  onChange?: ((snapshot: Snapshot) => void) | null;
  /** Where log lines go (default: warnings to console.warn, info dropped). */
  logger?: KeyCacheLogger;
  /** Ack what is held with JWKS.ACK after every load and every ackTtlMs/3 (default true). */
  ack?: boolean;
  /** The id acks are sent with, 1 to 128 bytes without control characters
   * (default `${os.hostname()}:${process.pid}:n`, n counting the process's caches). */
  ackId?: string | null;
  /** ms an ack keeps this cache listed as a live verifier, 1000 to 3600000 (default 30000). */
  ackTtlMs?: number;
}

export interface KeyCacheStats {
  loads: number; loadErrors: number; events: number; subscribes: number; reconnects: number;
  coalesced: number; misses: number; missLookups: number; missLookupsSuppressed: number;
  negativeHits: number; missLoads: number;
  ttlLoads: number; staleRefusals: number; missedEvents: number; generationGaps: number;
  /** Acks the module accepted; acks it refused or that failed (never thrown); reloads an
   * ack's answer asked for (the key set was at a newer generation than held). */
  acks: number; ackErrors: number; ackReloads: number;
  /** The id acks are sent with (null with `ack: false`); the generation last acked; the
   * error of the last ack if it failed, else null. */
  ackId: string | null; ackedGeneration: number | null; lastAckError: string | null;
  connected: boolean; generation: number | null; etag: string | null; kids: string[];
  current: string | null; fresh: boolean;
}

export interface SigningKey {
  kid: string;
  jwk: JsonWebKey;
  key: KeyObject;
}

/** The part of a JWS protected header the cache reads (jose's JWSHeaderParameters fits). */
export interface ProtectedHeader {
  kid?: string;
  alg?: string;
  [name: string]: unknown;
}

export class KeyCacheError extends Error {
  code: string;
}
/** A change was announced and the reload after it did not succeed within staleWait. */
export class KeyCacheStale extends KeyCacheError {}
/** No published signing key has this kid (code ERR_JWKS_NO_MATCHING_KEY, as jose's). */
export class UnknownSigningKey extends KeyCacheError {}

/** The sharded channel the module announces every change of `key` on. */
export function eventsChannel(key: string): string;

export class KeyCache extends EventEmitter {
  constructor(client: Redis | Cluster, key: string, options?: KeyCacheOptions);
  readonly key: string;
  readonly channel: string;
  /** jose's key argument: `jwtVerify(token, cache.getKey)`. */
  readonly getKey: (protectedHeader: ProtectedHeader, token?: unknown) => Promise<KeyObject>;
  ready(timeout?: number): Promise<this>;
  close(): Promise<void>;
  getSigningKey(kid: string): Promise<KeyObject>;
  getJwk(kid: string): Promise<JsonWebKey>;
  getSigningKeys(): Promise<SigningKey[]>;
  refresh(): Promise<Snapshot | null>;
  stats(): KeyCacheStats;
  /** The last events read off the subscription (at: performance.now()). */
  recentEvents(): Array<{ at: number; message: Record<string, unknown> }>;
  readonly snapshot: Snapshot | null;
  readonly generation: number | null;
  readonly etag: string | null;
  readonly currentKid: string | null;
  readonly connected: boolean;
  readonly fresh: boolean;
  /** The id this cache acks with (JWKS.VERIFIERS lists it). */
  readonly ackId: string;
  on(event: 'change', listener: (snapshot: Snapshot) => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
}

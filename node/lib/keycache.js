'use strict';
// KeyCache: a redis-jwks key set's published keys in process memory, kept current by the
// module's change events. The Node twin of python/jwks_redis/keycache.py (same guarantees):
//
// - A session SSUBSCRIBEs to the key set's events channel on the node serving the key set
//   (the client's server, or in a cluster the primary owning the channel's slot) and, once
//   the subscription is confirmed, loads the document in full (JWKS.GET K META). Every new
//   session, after any disconnect or a server-ended subscription (slot moved), reloads in
//   full, so a change made while it was cut off is not missed.
// - Every event read triggers a reload; events that arrive together and reloads asked for
//   at once coalesce into one (single flight).
// - From the moment an event is read until the reload after it succeeds, lookups wait (up
//   to staleWait, then KeyCacheStale): a key retired by that change is never handed out
//   after its event arrived.
// - A reload when the copy's TTL runs out (ttl_ms of JWKS.GET META) is the safety net for
//   a lost event; a reload that finds a change no event announced counts it (missedEvents),
//   and so does an event whose generation skips one (generationGaps). A PING after
//   healthInterval of silence detects a dead link.
// - An unknown kid is looked up with JWKS.KEY, at most one lookup per missInterval (other
//   misses fail at once), and a kid found absent is refused without lookups for
//   negativeTtl, or until the key set changes. A kid found published is a change this cache
//   was not told of: it reloads in full.
// - Acks (issue #21): after every load, and every ackTtlMs/3 after the last ack, the cache
//   tells the primary what it holds (JWKS.ACK K GENERATION g ID id TTL ms ETAG etag), so JWKS.VERIFIERS
//   and CONFIRM promotions see it. Acks run beside verification and never delay or fail it:
//   an error (NOPERM, READONLY on a replica, an older module) is counted and logged at most
//   once a minute. The reply is K's current generation: one higher than held means an event
//   did not reach this cache, and it reloads.

const { EventEmitter } = require('node:events');
const os = require('node:os');
const { createPublicKey } = require('node:crypto');
const { performance } = require('node:perf_hooks');
const { calculateSlot } = require('./slot');

const now = () => performance.now();

class KeyCacheError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = this.constructor.name;
    this.code = 'ERR_JWKS_REDIS';
  }
}

/** A change was announced and the reload after it has not succeeded within staleWait (or
 * nothing was loaded yet, or the copy is older than maxStale allows). */
class KeyCacheStale extends KeyCacheError {
  constructor(message, options) {
    super(message, options);
    this.code = 'ERR_JWKS_REDIS_STALE';
  }
}

/** No published signing key has this kid (jose's code for the same case). */
class UnknownSigningKey extends KeyCacheError {
  constructor(message, options) {
    super(message, options);
    this.code = 'ERR_JWKS_NO_MATCHING_KEY';
  }
}

/** `K:events` if K has a hash tag, else `{K}:events` (as the module names it). */
function eventsChannel(key) {
  const open = key.indexOf('{');
  if (open !== -1) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) return `${key}:events`;
  }
  return `{${key}}:events`;
}

// Default ack ids: host:pid:n, n counting the caches this process made.
let cachesMade = 0;
const ACK_LOG_INTERVAL = 60000; // ms between two KEYCACHE_ACK_FAILED warnings
const ACK_TTL_RANGE = [1000, 3600000]; // what JWKS.ACK accepts

function defaultAckId(n) {
  const tail = `:${process.pid}:${n}`;
  // The module takes 1..128 bytes without control characters.
  const host = Buffer.from(os.hostname().replace(/[\x00-\x1f\x7f]/g, '') || 'host');
  return `${host.subarray(0, 128 - tail.length).toString('utf8').replace(/\ufffd$/, '')}${tail}`;
}

function checkAckId(id) {
  if (typeof id !== 'string' || id === '' || Buffer.byteLength(id) > 128 || /[\x00-\x1f\x7f]/.test(id)) {
    throw new TypeError('KeyCache: ackId must be a string of 1 to 128 bytes without control characters');
  }
  return id;
}

const DEFAULTS = {
  ack: true,
  ackId: null,
  ackTtlMs: 30000,
  missInterval: 1000,
  negativeTtl: 10000,
  staleWait: 1000,
  maxStale: null,
  refreshGrace: 100,
  timeout: 2000,
  healthInterval: 5000,
  backoff: [50, 2000],
  onChange: null,
  logger: { info() {}, warn: (...a) => console.warn(...a) },
};

// Options of the cache's own connections, duplicated from the user's client (address,
// credentials, TLS): its own timeouts and no INFO ready check (a verifier's ACL need not
// allow INFO). The subscriber gets no reconnects, resubscribes or offline queue: a session
// must see every disconnect, to reload in full. The command connection may reconnect, and
// gives each command one retry.
function dedicated(timeout, subscriber) {
  const common = {
    enableReadyCheck: false,
    connectTimeout: timeout,
    commandTimeout: timeout,
    reconnectOnError: () => false,
  };
  if (!subscriber) {
    return { ...common, maxRetriesPerRequest: 1, retryStrategy: (n) => Math.min(n * 50, 2000) };
  }
  return {
    ...common,
    lazyConnect: true,
    enableOfflineQueue: false,
    autoResubscribe: false,
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  };
}

function metaOf(reply) {
  if (reply == null) return null;
  let m = reply;
  if (Array.isArray(reply)) {
    m = {};
    for (let i = 0; i + 1 < reply.length; i += 2) m[String(reply[i])] = reply[i + 1];
  }
  return {
    document: String(m.document),
    etag: String(m.etag),
    generation: Number(m.generation),
    ttlMs: Number(m.ttl_ms),
  };
}

function parseEvent(data) {
  try {
    const m = JSON.parse(data);
    return m && typeof m === 'object' && !Array.isArray(m) ? m : { raw: m };
  } catch {
    return { raw: data };
  }
}

function cancellableSleep(ms) {
  let timer;
  let done;
  const promise = new Promise((resolve) => {
    done = resolve;
    timer = setTimeout(resolve, Math.max(0, ms));
  });
  return { promise, cancel: () => { clearTimeout(timer); done(); } };
}

function withTimeout(promise, ms, what) {
  let timer;
  const expired = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new KeyCacheError(`${what}: no reply within ${ms} ms`)), ms);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

class KeyCache extends EventEmitter {
  /**
   * @param client an ioredis `Redis` (primary or replica) or `Cluster`; the cache makes its
   *   own connections from its options (address, credentials, TLS).
   * @param key the key set, e.g. `jwks:{auth}`.
   */
  constructor(client, key, options = {}) {
    super();
    if (!client || typeof client.duplicate !== 'function') {
      throw new TypeError('KeyCache: client must be an ioredis Redis or Cluster');
    }
    if (typeof key !== 'string' || key === '') throw new TypeError('KeyCache: key must be a non-empty string');
    const o = { ...DEFAULTS, ...options };
    cachesMade += 1;
    o.ackId = o.ackId == null ? defaultAckId(cachesMade) : checkAckId(o.ackId);
    if (!Number.isInteger(o.ackTtlMs) || o.ackTtlMs < ACK_TTL_RANGE[0] || o.ackTtlMs > ACK_TTL_RANGE[1]) {
      throw new RangeError(`KeyCache: ackTtlMs must be an integer from ${ACK_TTL_RANGE[0]} to ${ACK_TTL_RANGE[1]}`);
    }
    o.ack = o.ack !== false;
    this.key = key;
    this.channel = eventsChannel(key);
    this._client = client;
    this._cluster = client.isCluster === true;
    this._o = o;
    this._log = { ...DEFAULTS.logger, ...(options.logger || {}) };
    this._snapshot = null;
    this._keys = new Map(); // kid -> { jwk, key: KeyObject }
    this._current = null;
    // Delivered events, and how many of them the last successful load started after.
    this._eventsSeen = 0;
    this._freshThrough = 0;
    this._lastEvent = null;
    this._recent = []; // the last 256 events read, with when
    // Single flight: loads started (sequence numbers) and the last one that succeeded.
    this._loadsStarted = 0;
    this._loadDoneSeq = 0;
    this._loadChain = Promise.resolve();
    this._missChain = Promise.resolve();
    this._lastMissLookup = -Infinity;
    this._negative = new Map(); // kid -> until when a lookup found it absent
    this._refreshAt = Infinity;
    this._connected = false;
    this._session = null;
    this._node = null;
    this._waiters = new Set();
    this._wake = null;
    this._closed = false;
    this._lastError = null;
    this._counters = {
      loads: 0, loadErrors: 0, events: 0, subscribes: 0, reconnects: 0, coalesced: 0,
      misses: 0, missLookups: 0, missLookupsSuppressed: 0, negativeHits: 0, missLoads: 0,
      ttlLoads: 0, staleRefusals: 0,
      missedEvents: 0, generationGaps: 0,
      acks: 0, ackErrors: 0, ackReloads: 0,
    };
    // Acks: one in flight at a time (a load during it asks for one more after it), the
    // periodic timer, the reload a higher reply asks for, and the rate-limited error log.
    this._ack = {
      inFlight: false, again: false, timer: null, reloadTimer: null,
      generation: null, reply: null, at: null, error: null, loggedAt: -Infinity, suppressed: 0,
    };
    this._stopSleep = cancellableSleep(0); // replaced per backoff sleep
    /** Pass as jose's key argument: `jwtVerify(token, cache.getKey)`. */
    this.getKey = (protectedHeader) => this._getKey(protectedHeader);
    this._running = this._run();
  }

  // ---------------------------------------------------------------- lifecycle

  /** Resolves once a first load succeeded (whether or not the key set exists); rejects
   * after `timeout` ms with the last connection error. */
  ready(timeout = 5000) {
    if (this._snapshot) return Promise.resolve(this);
    return new Promise((resolve, reject) => {
      const deadline = now() + timeout;
      const check = () => {
        if (this._snapshot) return resolve(this);
        if (this._closed) return reject(new KeyCacheError(`${this.key}: closed`));
        const left = deadline - now();
        if (left <= 0) {
          const why = this._lastError ? `: ${this._lastError.message}` : '';
          return reject(new KeyCacheError(`${this.key}: not ready within ${timeout} ms${why}`,
            { cause: this._lastError || undefined }));
        }
        this._waitChange(left).then(check);
      };
      check();
    });
  }

  /** Stops the subscriber and closes the cache's connections. */
  async close() {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._ack.timer);
    clearTimeout(this._ack.reloadTimer);
    this._stopSleep.cancel();
    if (this._session) this._session.end(new KeyCacheError('closed'));
    this._notify();
    await this._running;
    this._connected = false;
  }

  // ---------------------------------------------------------------- lookups

  async _getKey(header) {
    const kid = header && header.kid;
    if (typeof kid !== 'string' || kid === '') {
      throw new KeyCacheError('the token has no kid in its header');
    }
    const entry = await this._entry(kid);
    if (header.alg && entry.jwk.alg && header.alg !== entry.jwk.alg) {
      throw new UnknownSigningKey(`${this.key}: kid ${JSON.stringify(kid)} is a ${entry.jwk.alg} key, the token says ${header.alg}`);
    }
    return entry.key;
  }

  /** The published signing key with this kid, as a `crypto.KeyObject`. */
  async getSigningKey(kid) {
    return (await this._entry(kid)).key;
  }

  /** The published JWK with this kid, as an object. */
  async getJwk(kid) {
    return { ...(await this._entry(kid)).jwk };
  }

  /** Every published signing key: `[{ kid, jwk, key }]`. */
  async getSigningKeys() {
    if (this._lookupState(now())) await this._waitUsable();
    return [...this._keys].map(([kid, e]) => ({ kid, jwk: { ...e.jwk }, key: e.key }));
  }

  async _entry(kid) {
    if (this._lookupState(now())) await this._waitUsable();
    return this._keys.get(kid) || this._miss(kid);
  }

  _miss(kid) {
    // One miss at a time: a burst of the same new kid costs one lookup, not one each.
    const run = async () => {
      const held = this._keys.get(kid);
      if (held) return held;
      const c = this._counters;
      c.misses += 1;
      const unknown = () => new UnknownSigningKey(`${this.key}: no published signing key has kid ${JSON.stringify(kid)}`);
      const t = now();
      if ((this._negative.get(kid) ?? -Infinity) > t) {
        c.negativeHits += 1;
        throw unknown();
      }
      if (t - this._lastMissLookup < this._o.missInterval) {
        c.missLookupsSuppressed += 1;
        throw unknown();
      }
      this._lastMissLookup = t;
      c.missLookups += 1;
      try {
        const jwk = await (await this._nodeConnection()).call('JWKS.KEY', this.key, kid);
        if (jwk == null) {
          for (const [k, until] of this._negative) if (until <= t) this._negative.delete(k);
          this._negative.set(kid, now() + this._o.negativeTtl);
          throw unknown();
        }
        // Published, yet not in the held copy: a change this cache has not been told of.
        c.missLoads += 1;
        await this._load('miss');
      } catch (e) {
        if (e instanceof UnknownSigningKey) throw e;
        throw new KeyCacheError(`${this.key}: lookup of kid ${JSON.stringify(kid)} failed: ${e.message}`, { cause: e });
      }
      const loaded = this._keys.get(kid);
      if (loaded) return loaded;
      throw unknown();
    };
    const p = this._missChain.then(run, run);
    this._missChain = p.catch(() => {});
    return p;
  }

  _lookupState(t) {
    if (!this._snapshot) return 'nothing loaded yet';
    if (this._freshThrough < this._eventsSeen) {
      return 'a change was announced and the reload after it has not finished';
    }
    if (this._tooOld(t)) return 'the copy is older than maxStale allows and could not be refreshed';
    return null;
  }

  _tooOld(t) {
    const s = this._snapshot;
    return this._o.maxStale != null && s != null && t > s.expiresAt + this._o.maxStale;
  }

  async _waitUsable() {
    const deadline = now() + this._o.staleWait;
    for (;;) {
      const t = now();
      const why = this._lookupState(t);
      if (!why) return;
      if (t >= deadline || this._tooOld(t) || this._closed) {
        this._counters.staleRefusals += 1;
        throw new KeyCacheStale(`${this.key}: ${why}`);
      }
      await this._waitChange(deadline - t);
    }
  }

  _waitChange(ms) {
    return new Promise((resolve) => {
      const done = () => { clearTimeout(timer); this._waiters.delete(done); resolve(); };
      const timer = setTimeout(done, Math.max(0, ms));
      this._waiters.add(done);
    });
  }

  _notify() {
    for (const w of [...this._waiters]) w();
  }

  // ---------------------------------------------------------------- state

  /** What is held: `{ exists, document, etag, generation, kids, current, loadedAt,
   * expiresAt }` (times in performance.now() ms), or null before the first load. */
  get snapshot() { return this._snapshot; }
  get generation() { return this._snapshot ? this._snapshot.generation : null; }
  get etag() { return this._snapshot ? this._snapshot.etag : null; }
  /** The kid of the key set's current key (the one an issuer signs with), or null. */
  get currentKid() { return this._current; }
  get connected() { return this._connected; }
  /** The id this cache acks with (JWKS.VERIFIERS lists it). */
  get ackId() { return this._o.ackId; }
  /** Subscribed, loaded after every delivered event, and within the copy's TTL. */
  get fresh() {
    const s = this._snapshot;
    return this._connected && s != null && this._freshThrough >= this._eventsSeen && s.expiresAt > now();
  }

  stats() {
    const s = this._snapshot;
    return {
      ...this._counters,
      connected: this._connected,
      generation: s ? s.generation : null,
      etag: s ? s.etag : null,
      kids: s ? [...s.kids] : [],
      current: this._current,
      fresh: this.fresh,
      ackId: this._o.ack ? this._o.ackId : null,
      ackedGeneration: this._ack.generation,
      lastAckError: this._ack.error,
    };
  }

  /** The last events read off the subscription: `[{ at, message }]` (at: performance.now()). */
  recentEvents() {
    return [...this._recent];
  }

  /** Reloads now (coalesced with any reload under way); resolves to the snapshot. */
  async refresh() {
    await this._load('refresh');
    return this._snapshot;
  }

  // ---------------------------------------------------------------- loading

  _load(source) {
    const trigger = this._loadsStarted;
    const run = async () => {
      if (this._loadDoneSeq > trigger) {
        this._counters.coalesced += 1;
        return;
      }
      const seq = ++this._loadsStarted;
      const events = this._eventsSeen;
      const started = now();
      let reply;
      try {
        reply = await (await this._nodeConnection()).call('JWKS.GET', this.key, 'META');
      } catch (e) {
        this._counters.loadErrors += 1;
        throw e;
      }
      this._install(seq, events, started, metaOf(reply), source);
    };
    const p = this._loadChain.then(run, run);
    this._loadChain = p.catch(() => {});
    return p;
  }

  _install(seq, eventsAtStart, startedAt, meta, source) {
    const old = this._snapshot;
    const announced = eventsAtStart > this._freshThrough || this._eventsSeen > eventsAtStart;
    let snap;
    if (meta == null) {
      snap = { exists: false, document: null, etag: null, generation: null, kids: [], current: null };
      snap.loadedAt = startedAt;
      snap.expiresAt = startedAt + 3600e3;
      this._keys = new Map();
    } else {
      const doc = JSON.parse(meta.document);
      const all = Array.isArray(doc.keys) ? doc.keys : [];
      this._keys = this._parse(all);
      // The module orders the document current key first; an event for this generation
      // says exactly (it names `current`, null for a set that has none yet).
      const ev = this._lastEvent;
      const current = ev && ev.generation === meta.generation && 'current' in ev
        ? ev.current : (all[0] && all[0].kid) || null;
      snap = {
        exists: true, document: meta.document, etag: meta.etag, generation: meta.generation,
        kids: [...this._keys.keys()], current, loadedAt: startedAt,
        expiresAt: startedAt + Math.max(0, meta.ttlMs),
      };
    }
    Object.freeze(snap.kids);
    this._snapshot = Object.freeze(snap);
    this._current = snap.current;
    this._freshThrough = Math.max(this._freshThrough, eventsAtStart);
    this._loadDoneSeq = Math.max(this._loadDoneSeq, seq);
    this._counters.loads += 1;
    // The safety net: reload when the copy's TTL runs out, plus a little grace so the event
    // of a change scheduled for that moment normally arrives first.
    this._refreshAt = Math.max(snap.expiresAt, startedAt + 50) + this._o.refreshGrace;
    const changed = !old || old.exists !== snap.exists || old.etag !== snap.etag;
    if (changed) this._negative.clear(); // a kid refused before may be published now
    if (changed && old && !announced && (source === 'ttl' || source === 'miss' || source === 'ack')) {
      // A change no delivered event announced: an event was lost somewhere.
      this._counters.missedEvents += 1;
      this._log.warn(`KEYCACHE_MISSED_EVENT key=${this.key} generation=${old.generation}->${snap.generation} found by a ${source} reload`);
    }
    this._notify();
    if (this._wake) this._wake();
    if (changed) {
      if (this._o.onChange) {
        try { this._o.onChange(snap); } catch (e) { this._log.warn(`KEYCACHE_ON_CHANGE_FAILED key=${this.key} error=${e.message}`); }
      }
      this.emit('change', snap);
    }
    this._sendAck();
  }

  // ---------------------------------------------------------------- acks

  /** JWKS.ACK for the generation held, unless one is in flight (then once more after it).
   * Never awaited by loads or lookups; never throws. */
  _sendAck() {
    const a = this._ack;
    if (!this._o.ack || this._closed) return;
    if (a.inFlight) {
      a.again = true;
      return;
    }
    clearTimeout(a.timer);
    a.timer = null;
    const snap = this._snapshot;
    if (!snap || !snap.exists) return; // no key set: nothing to ack (the next load acks)
    a.inFlight = true;
    const g = snap.generation;
    // With the document's ETag: generations repeat when a key set is deleted and created
    // again, and the module refuses (STALE) an ack about a key set no longer there.
    const etag = snap.etag ? ['ETAG', snap.etag] : [];
    const sent = (async () => {
      const conn = await this._nodeConnection();
      return conn.call('JWKS.ACK', this.key, 'GENERATION', String(g), 'ID', this._o.ackId,
        'TTL', String(this._o.ackTtlMs), ...etag);
    })();
    sent.then((reply) => this._acked(g, Number(reply)), (e) => this._ackFailed(g, e))
      .catch((e) => this._log.warn(`KEYCACHE_ACK_FAILED key=${this.key} error=${e.message}`))
      .finally(() => {
        a.inFlight = false;
        if (this._closed) return;
        if (a.again) {
          a.again = false;
          this._sendAck();
          return;
        }
        // Every ackTtlMs/3 from the last ack, whether or not it succeeded.
        a.timer = setTimeout(() => this._sendAck(), Math.floor(this._o.ackTtlMs / 3));
        a.timer.unref();
      });
  }

  _acked(g, current) {
    const a = this._ack;
    if (this._closed) return;
    this._counters.acks += 1;
    if (a.error) {
      this._log.info(`KEYCACHE_ACK_RESUMED key=${this.key} id=${this._o.ackId} (after ${a.suppressed + 1} failed acks)`);
      a.error = null;
      a.suppressed = 0;
      a.loggedAt = -Infinity;
    }
    a.generation = g;
    a.reply = current;
    a.at = now();
    // The key set is at a newer generation than this cache holds: unless the event of that
    // change is being handled, an event did not reach this cache.
    if (Number.isInteger(current) && current > g) this._ackReload((held) => held < current);
  }

  _ackFailed(g, e) {
    if (this._closed) return;
    const message = String(e && e.message);
    // Answers that say what is held is not what the key set is: the key set is gone
    // (NOKEYSET), older than held (a generation newer than K's is refused), or another key
    // set once at the name (STALE: same generation, another document).
    if (/^(NOKEYSET|STALE)/.test(message) || /newer/i.test(message)) {
      this._ackReload(() => true, g);
      return;
    }
    const a = this._ack;
    this._counters.ackErrors += 1;
    a.error = message;
    const t = now();
    if (t - a.loggedAt >= ACK_LOG_INTERVAL) {
      const more = a.suppressed ? ` (${a.suppressed} more failed since the last report)` : '';
      this._log.warn(`KEYCACHE_ACK_FAILED key=${this.key} id=${this._o.ackId} error=${message}${more}` +
        ' (acks never affect verification; reported at most once a minute, counted in stats().ackErrors)');
      a.loggedAt = t;
      a.suppressed = 0;
    } else {
      a.suppressed += 1;
    }
  }

  /** After refreshGrace (the event, if any, normally arrives first), reloads if `stale`
   * still holds for the generation held and no reload for a delivered event is pending. */
  _ackReload(stale, sentGeneration) {
    const a = this._ack;
    if (a.reloadTimer) return;
    a.reloadTimer = setTimeout(() => {
      a.reloadTimer = null;
      if (this._closed || !this._snapshot) return;
      const held = this._snapshot.generation;
      if (sentGeneration !== undefined && held !== sentGeneration) return; // reloaded since
      if (held != null && !stale(held)) return;
      if (this._freshThrough < this._eventsSeen) return; // an event's reload is under way
      this._counters.ackReloads += 1;
      this._load('ack').catch((e) => { this._lastError = e; });
    }, this._o.refreshGrace);
    a.reloadTimer.unref();
  }

  _parse(jwks) {
    const keys = new Map();
    for (const jwk of jwks) {
      const kid = jwk && jwk.kid;
      if (!kid || (jwk.use !== undefined && jwk.use !== 'sig')) continue;
      const old = this._keys.get(kid);
      if (old && JSON.stringify(old.jwk) === JSON.stringify(jwk)) {
        keys.set(kid, old); // unchanged: keep the parsed key
        continue;
      }
      try {
        keys.set(kid, { jwk: Object.freeze({ ...jwk }), key: createPublicKey({ key: jwk, format: 'jwk' }) });
      } catch (e) {
        this._log.warn(`KEYCACHE_UNUSABLE_KEY key=${this.key} kid=${kid} error=${e.message}`);
      }
    }
    return keys;
  }

  _deliver(message) {
    const m = parseEvent(message);
    const g = m.generation;
    const held = this._lastEvent && Number.isInteger(this._lastEvent.generation)
      ? this._lastEvent.generation : this.generation;
    if (Number.isInteger(g) && Number.isInteger(held) && g > held + 1) {
      // A generation skipped: some change was not announced to this cache. The reload
      // below brings the current state whatever was missed.
      this._counters.generationGaps += 1;
      this._log.info(`KEYCACHE_GENERATION_GAP key=${this.key} generation=${held}->${g}`);
    }
    this._lastEvent = m;
    this._recent.push({ at: now(), message: m });
    if (this._recent.length > 256) this._recent.shift();
    this._eventsSeen += 1;
    this._counters.events += 1;
  }

  // ---------------------------------------------------------------- the subscriber

  async _nodeClient() {
    const c = this._client;
    if (!this._cluster) return c;
    if (c.status === 'wait') c.connect().catch(() => {});
    if (c.status !== 'ready') {
      await withTimeout(new Promise((resolve) => c.once('ready', resolve)), this._o.timeout, 'cluster');
    }
    const owner = (c.slots[calculateSlot(this.channel)] || [])[0];
    const node = c.nodes('master').find((n) => `${n.options.host}:${n.options.port}` === owner);
    if (!node) throw new KeyCacheError(`${this.key}: no primary known for the slot of ${this.channel}`);
    return node;
  }

  async _refreshTopology() {
    if (!this._cluster) return;
    await new Promise((resolve) => {
      try { this._client.refreshSlotsCache(() => resolve()); } catch { resolve(); }
    });
  }

  /** The cache's command connection to the node serving the key set (made on first use,
   * dropped with a failed session so that the next use follows the slot's owner). */
  _nodeConnection() {
    if (this._closed) return Promise.reject(new KeyCacheError(`${this.key}: closed`));
    if (!this._node) {
      const made = this._nodeClient().then((base) => {
        const conn = base.duplicate(dedicated(this._o.timeout, false));
        conn.on('error', (e) => { this._lastError = e; });
        return conn;
      });
      made.catch(() => { if (this._node === made) this._node = null; });
      this._node = made;
    }
    return this._node;
  }

  _dropNode() {
    const old = this._node;
    this._node = null;
    if (old) {
      // Let a reload under way finish on it; then close.
      old.then((conn) => {
        conn.quit().catch(() => {});
        setTimeout(() => conn.disconnect(), this._o.timeout).unref();
      }, () => {});
    }
  }

  async _openSession() {
    const base = await this._nodeClient();
    const session = { sub: base.duplicate(dedicated(this._o.timeout, true)) };
    let fail;
    session.lost = new Promise((_, reject) => { fail = reject; });
    session.lost.catch(() => {});
    session.end = (err) => { fail(err); };
    session.sub.on('error', (e) => session.end(new KeyCacheError(`subscriber: ${e.message}`, { cause: e })));
    session.sub.on('close', () => session.end(new KeyCacheError('subscriber connection closed')));
    // ioredis leaves an SSUBSCRIBE answered with MOVED unsettled and emits 'moved' instead:
    // the slot map was stale (the slot is moving); start over from a fresh one.
    session.sub.on('moved', () => session.end(new KeyCacheError('SSUBSCRIBE: MOVED (the slot has another owner)')));
    session.close = () => session.sub.disconnect();
    return session;
  }

  async _run() {
    let delay = this._o.backoff[0];
    let subscribedBefore = false;
    while (!this._closed) {
      let session = null;
      try {
        session = await this._openSession();
        this._session = session;
        const race = (p) => Promise.race([p, session.lost]);
        await race(session.sub.connect());
        session.sub.on('smessage', (channel, message) => this._onEvent(session, channel, message));
        await race(withTimeout(session.sub.ssubscribe(this.channel), this._o.timeout, 'SSUBSCRIBE'));
        this._connected = true;
        this._counters.subscribes += 1;
        if (subscribedBefore) {
          this._counters.reconnects += 1;
          this._log.info(`KEYCACHE_RESUBSCRIBED key=${this.key} (full reload)`);
        }
        subscribedBefore = true;
        await race(this._load('subscribe')); // after the subscription: no change falls between
        this._lastError = null;
        delay = this._o.backoff[0];
        await this._listen(session);
      } catch (e) {
        this._connected = false;
        if (this._closed) break;
        this._lastError = e;
        this._log.warn(`KEYCACHE_DISCONNECTED key=${this.key} error=${e.message} (retrying in ${delay} ms)`);
        this._notify();
        if (session) session.close();
        this._session = null;
        this._dropNode();
        await this._refreshTopology();
        this._stopSleep = cancellableSleep(delay * (0.5 + Math.random() / 2));
        await this._stopSleep.promise;
        delay = Math.min(delay * 2, this._o.backoff[1]);
      } finally {
        if (session) session.close();
      }
    }
    this._session = null;
    this._connected = false;
    const node = this._node;
    this._node = null;
    if (node) await node.then((c) => c.quit().catch(() => c.disconnect()), () => {});
  }

  _onEvent(session, channel, message) {
    if (channel !== this.channel) return;
    session.lastRx = now();
    this._deliver(message);
    this._notify();
    this._load('event').catch((e) => session.end(e));
  }

  async _listen(session) {
    session.lastRx = now();
    const race = (p) => Promise.race([p, session.lost]);
    while (!this._closed) {
      const t = now();
      if (t >= this._refreshAt) {
        this._counters.ttlLoads += 1;
        await race(this._load('ttl'));
        continue;
      }
      if (t - session.lastRx >= this._o.healthInterval) {
        const reply = await race(withTimeout(session.sub.ping(), this._o.timeout, 'PING'));
        // Subscribed, the server answers ["pong", ""] (ioredis 6 makes it "PONG"); anything
        // else is out of step. ioredis drops its subscriber state when the server ends the
        // subscription (SUNSUBSCRIBE after a slot moved).
        const pong = String(Array.isArray(reply) ? reply[0] : reply).toLowerCase() === 'pong';
        if (!pong || !session.sub.condition || !session.sub.condition.subscriber) {
          throw new KeyCacheError('the server ended the subscription (slot moved?)');
        }
        session.lastRx = now();
        continue;
      }
      const due = Math.min(this._refreshAt, session.lastRx + this._o.healthInterval, t + 1000);
      const sleep = cancellableSleep(due - t);
      this._wake = sleep.cancel;
      try {
        await race(sleep.promise);
      } finally {
        sleep.cancel();
      }
    }
  }
}

module.exports = { KeyCache, KeyCacheError, KeyCacheStale, UnknownSigningKey, eventsChannel };

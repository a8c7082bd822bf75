//! The one write path. Every change to a key set (JWKS.ROTATE, JWKS.INVALIDATE,
//! JWKS.POLICY, a change the lifecycle schedule applies, the clean-up after another command
//! removed or replaced a key set) is committed by [`commit`]: its targets checked first
//! ([`Targets::check`]; a clean-up's with [`Targets::of`]), then written in the order
//! `redis_jwks_core::commit` fixes (audit, store, invalidate, count, announce), each write
//! propagated as the command's effect, the cache invalidation audited, counted, logged and
//! faultable by `JWKS.DEBUG FAIL-INVALIDATIONS` whichever change makes it. After the commit
//! point nothing raises: a failure is in the outcome and the log.
//!
//! The command handlers and the schedule call it; it imports neither.

use std::sync::atomic::{AtomicU64, Ordering};

use redis_module::raw::KeyType;
use redis_module::{Context, RedisString, RedisValue};

use crate::config;
use crate::datatype::{Stored, SETSTATE_COMMAND};
use crate::glue::caller::Caller;
use crate::glue::redis_key::db;
use crate::glue::redis_key::{publish, replicate, Key, Mode};
use crate::observe::stats as process_stats;
use crate::observe::{events, log};
use crate::tracking;
use redis_jwks_core::audit::{self, Fields};
use redis_jwks_core::commit::{self, Effects, Outcome, Plan};
use redis_jwks_core::counter_names;
use redis_jwks_core::error::{Access, Error, Result, Shown};
use redis_jwks_core::keyset::{Change, KeySet};
use redis_jwks_core::names::{self, Derived, Name};

/// What a change does to the key set at its key.
pub(crate) enum What<'a> {
    /// Key changes (a rotation, a scheduled change): `next` is stored, the cached document
    /// invalidated.
    Keys {
        next: &'a KeySet,
        changes: &'a [Change],
    },
    /// A new lifecycle policy: `next` is stored; the cached document is invalidated only
    /// if it would outlive the next scheduled change.
    Policy { next: &'a KeySet },
    /// `JWKS.INVALIDATE`: the cached document of `current` is deleted, nothing else.
    Invalidate { current: &'a Stored },
    /// After another command removed the key set at the key (DEL, RENAME, expiry, a flush)
    /// or replaced it with another type (`lost`): the cache string left behind is deleted
    /// (`invalidate`), the loss audited and counted, and `event` published. Keys of other
    /// types at the derived names are left alone: they are not the module's.
    Cleanup {
        lost: bool,
        invalidate: bool,
        /// The generation of the key set at the key now (0: none).
        generation: u64,
        event: Option<String>,
    },
}

/// A change to commit: what it does, when and why.
pub(crate) struct Write<'a> {
    pub(crate) what: What<'a>,
    /// When it happens: now for a command, the due time for a scheduled change.
    pub(crate) at_ms: i64,
    pub(crate) reason: String,
    /// FORCE overrode the lifecycle policy's guards.
    pub(crate) forced: bool,
}

/// Commits a change whose targets were checked, as `caller`: the one commit sequence.
/// Refused (nothing written) only if the audit stream takes no first entry or the key set
/// cannot be stored; after that the outcome says how the invalidation went.
pub(crate) fn commit(
    ctx: &Context,
    caller: &Caller<'_>,
    targets: &Targets,
    write: Write<'_>,
) -> Result<Outcome> {
    let Write {
        what,
        at_ms,
        reason,
        forced,
    } = write;
    let (generation, changes, policy) = match &what {
        What::Keys { next, changes } => (next.generation(), *changes, None),
        What::Policy { next } => (next.generation(), &[][..], Some(next.lifecycle())),
        What::Invalidate { current } => (current.set().generation(), &[][..], None),
        What::Cleanup { generation, .. } => (*generation, &[][..], None),
    };
    let actx = audit::Context {
        timestamp: audit::timestamp(at_ms),
        reason,
        generation,
        user: caller.name(),
        forced,
    };
    let invalidate = match &what {
        What::Policy { next } => cache_outlives(ctx, targets, next, at_ms)?,
        What::Keys { .. } | What::Invalidate { .. } => true,
        What::Cleanup { invalidate, .. } => *invalidate,
    };
    let plan = Plan {
        actx: &actx,
        changes,
        policy,
        lost: matches!(what, What::Cleanup { lost: true, .. }),
        invalidate,
        cached: targets.cached(ctx)?,
        fault: if invalidate {
            take_injected_failure()
        } else {
            None
        },
    };
    let mut effects = match &what {
        What::Keys { next, .. } => {
            let stored = Stored::new((*next).clone());
            RedisEffects::storing(ctx, targets, events::Kind::Rotated, stored, &actx.reason)
        }
        What::Policy { next } => {
            let stored = Stored::new((*next).clone());
            RedisEffects::storing(ctx, targets, events::Kind::Policy, stored, &actx.reason)
        }
        What::Invalidate { current } => RedisEffects::announcing(
            ctx,
            targets,
            events::Kind::Invalidated,
            current,
            &actx.reason,
        ),
        What::Cleanup { event, .. } => RedisEffects {
            ctx,
            targets,
            new_set: None,
            event: event.clone(),
            lenient: true,
        },
    };
    let outcome = commit::commit(&mut effects, &plan)?;
    if let What::Invalidate { current } = what {
        current.forget_cache();
    }
    if invalidate {
        log::invalidation(
            &targets.key,
            &actx.reason,
            generation,
            changes.len(),
            &outcome,
        );
    } else if let Some(e) = &outcome.incomplete {
        log::write_failed(&targets.key, e);
    }
    Ok(outcome)
}

/// The cached document would outlive the next change `next` schedules: JWKS.POLICY drops
/// it, so no verifier is served a document a scheduled change has replaced.
fn cache_outlives(ctx: &Context, targets: &Targets, next: &KeySet, now: i64) -> Result<bool> {
    let expires = Key::named(ctx, &targets.cache, Mode::Peek)?.pttl();
    let Some(due) = next.next_change() else {
        return Ok(false);
    };
    Ok(expires != -2 && (expires == -1 || now.saturating_add(expires) > due.at_ms))
}

/// Invalidations `JWKS.DEBUG FAIL-INVALIDATIONS` asked to fail.
static FAIL_NEXT: AtomicU64 = AtomicU64::new(0);

const INJECTED_FAULT: &str = "injected fault (jwks.fault-injection)";

/// Makes the next `count` invalidations fail (`JWKS.DEBUG FAIL-INVALIDATIONS`).
pub(crate) fn fail_next_invalidations(count: u64) {
    FAIL_NEXT.store(count, Ordering::Relaxed);
}

/// Consumes one pending injected failure, if any.
fn take_injected_failure() -> Option<String> {
    FAIL_NEXT
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .ok()
        .map(|_| INJECTED_FAULT.to_owned())
}

/// Propagates a key set's new state as `JWKS.SETSTATE K state` (see `commands::setstate`).
fn replicate_state(ctx: &Context, key: &[u8], state: &str) {
    let name = RedisString::create_from_slice(ctx.ctx, key);
    let state = RedisString::create_from_slice(ctx.ctx, state.as_bytes());
    let Ok(cmd) = std::ffi::CString::new(SETSTATE_COMMAND) else {
        return;
    };
    replicate(ctx, &cmd, [&name, &state]);
}

/// The derived keys a changing command writes, checked before anything is written: the
/// caller's ACL must allow writing each, and each must hold its type or nothing.
pub(crate) struct Targets {
    pub key: Name,
    pub cache: Name,
    pub audit: Name,
    pub metrics: Name,
    pub events: Name,
}

impl Targets {
    pub(crate) fn check(ctx: &Context, caller: &Caller, key: &[u8]) -> Result<Targets> {
        let targets = Targets::of(key);
        for (name, kind, what) in [
            (
                &targets.cache,
                KeyType::String,
                "expected a string (the cached JWKS)",
            ),
            (
                &targets.audit,
                KeyType::Stream,
                "expected a stream (the audit trail)",
            ),
            (
                &targets.metrics,
                KeyType::Hash,
                "expected a hash (the counters)",
            ),
        ] {
            caller.check(name, Access::Write)?;
            Key::named(ctx, name, Mode::Peek)?.require_type(kind, what)?;
        }
        caller.check(&targets.events, Access::Publish)?;
        Ok(targets)
    }

    /// Before the first change of a key set at this name: refuses (`BUSYKEY`, nothing
    /// written) if a derived name holds a value the module did not write, which the new key
    /// set would overwrite or mix with: another application's `...:cache` string, a stream
    /// of other entries, a hash of other fields. Leftovers of an earlier key set at the
    /// name (its audit trail and counters, or a cache whose clean-up is still queued) are
    /// the module's own.
    pub(crate) fn check_unclaimed(&self, ctx: &Context) -> Result<()> {
        let pending = tracking::queue::cleanup_pending(db(ctx), &self.key);
        if !pending && Key::named(ctx, &self.cache, Mode::Peek)?.exists() {
            return Err(Error::NotOurs(Shown::bytes(&self.cache), "a value"));
        }
        if Key::named(ctx, &self.audit, Mode::Peek)?.exists() && !is_audit_trail(ctx, &self.audit) {
            return Err(Error::NotOurs(Shown::bytes(&self.audit), "a value"));
        }
        if Key::named(ctx, &self.metrics, Mode::Peek)?.exists() && !is_counters(ctx, &self.metrics)
        {
            return Err(Error::NotOurs(Shown::bytes(&self.metrics), "a value"));
        }
        Ok(())
    }

    pub(crate) fn cached(&self, ctx: &Context) -> Result<bool> {
        Ok(Key::named(ctx, &self.cache, Mode::Peek)?.exists())
    }

    /// The derived names of `key`, unchecked: for the module's own clean-up, which has no
    /// caller's ACL to respect and writes only keys of its own types (`What::Cleanup`).
    pub(crate) fn of(key: &[u8]) -> Targets {
        Targets {
            key: Name::from_slice(key),
            cache: names::derived(key, Derived::Cache),
            audit: names::derived(key, Derived::Audit),
            metrics: names::derived(key, Derived::Metrics),
            events: names::derived(key, Derived::Events),
        }
    }
}

/// A stream whose first entry is an audit entry (every entry the module writes has an
/// `action` of `JWKS_...`; the module never leaves its stream empty).
fn is_audit_trail(ctx: &Context, name: &[u8]) -> bool {
    let name = RedisString::create_from_slice(ctx.ctx, name);
    let first = ctx.call(
        "XRANGE",
        &[
            &name,
            &ctx.create_string("-"),
            &ctx.create_string("+"),
            &ctx.create_string("COUNT"),
            &ctx.create_string("1"),
        ],
    );
    let Ok(RedisValue::Array(entries)) = first else {
        return false;
    };
    let Some(RedisValue::Array(entry)) = entries.first() else {
        return false;
    };
    let Some(RedisValue::Array(fields)) = entry.get(1) else {
        return false;
    };
    fields.chunks(2).any(|pair| match pair {
        [f, v] => {
            as_bytes(f) == Some(&b"action"[..])
                && as_bytes(v).is_some_and(|v| v.starts_with(b"JWKS_"))
        }
        _ => false,
    })
}

/// A hash whose every field is one of the module's counters.
fn is_counters(ctx: &Context, name: &[u8]) -> bool {
    let name = RedisString::create_from_slice(ctx.ctx, name);
    match ctx.call("HLEN", &[&name]) {
        Ok(RedisValue::Integer(n)) if (1..=16).contains(&n) => {}
        _ => return false,
    }
    let Ok(RedisValue::Array(fields)) = ctx.call("HKEYS", &[&name]) else {
        return false;
    };
    fields.iter().all(|f| {
        as_bytes(f).is_some_and(|f| {
            counter_names::ALL
                .iter()
                .chain([&counter_names::KEYSETS_LOST])
                .any(|c| c.as_bytes() == f)
        })
    })
}

fn as_bytes(v: &RedisValue) -> Option<&[u8]> {
    match v {
        RedisValue::SimpleString(s) | RedisValue::BulkString(s) => Some(s.as_bytes()),
        RedisValue::StringBuffer(b) => Some(b),
        RedisValue::BulkRedisString(s) => Some(s.as_slice()),
        _ => None,
    }
}

/// `commit::Effects` on the Redis keys: each write opens its key for writing only then.
struct RedisEffects<'a> {
    pub ctx: &'a Context,
    pub targets: &'a Targets,
    /// The new key set, stored by `store_set` (rotations), and replicated as its state.
    pub new_set: Option<Stored>,
    /// The change event to publish.
    pub event: Option<String>,
    /// A clean-up: derived keys holding another type are skipped, not an error.
    pub lenient: bool,
}

impl<'a> RedisEffects<'a> {
    /// Effects of a change that stores `stored` at the key (rendered now, once, for the
    /// event's ETag: the stored value keeps the rendering for the next read).
    fn storing(
        ctx: &'a Context,
        targets: &'a Targets,
        kind: events::Kind,
        stored: Stored,
        reason: &str,
    ) -> RedisEffects<'a> {
        let event = event(targets, kind, &stored, reason);
        RedisEffects {
            ctx,
            targets,
            new_set: Some(stored),
            event: Some(event),
            lenient: false,
        }
    }

    /// Effects of a change that stores nothing: `current` stays the key set at the key.
    fn announcing(
        ctx: &'a Context,
        targets: &'a Targets,
        kind: events::Kind,
        current: &Stored,
        reason: &str,
    ) -> RedisEffects<'a> {
        RedisEffects {
            ctx,
            targets,
            new_set: None,
            event: Some(event(targets, kind, current, reason)),
            lenient: false,
        }
    }
}

/// The change event, after which `after` is the key set at the key.
fn event(targets: &Targets, kind: events::Kind, after: &Stored, reason: &str) -> String {
    events::message(
        kind,
        &targets.key,
        Some((after.set(), &after.rendered().etag)),
        Some(reason),
    )
}

impl RedisEffects<'_> {
    /// In a clean-up, whether the key at `name` may be written as `kind` (it holds that
    /// type or nothing); elsewhere `Targets::check` has made sure.
    fn writable(&self, name: &[u8], kind: KeyType) -> Result<bool> {
        if !self.lenient {
            return Ok(true);
        }
        let key = Key::named(self.ctx, name, Mode::Peek)?;
        Ok(matches!(key.kind(), KeyType::Empty) || key.kind() == kind)
    }
}

impl Effects for RedisEffects<'_> {
    fn audit(&mut self, fields: &Fields) -> Result<()> {
        if !self.writable(&self.targets.audit, KeyType::Stream)? {
            return Ok(());
        }
        Key::named(self.ctx, &self.targets.audit, Mode::Write)?.xadd(fields, config::audit_maxlen())
    }

    fn store_set(&mut self) -> Result<()> {
        let Some(value) = self.new_set.take() else {
            return Ok(());
        };
        let state = value.set().to_stored();
        let tracked = value.set().clone();
        Key::named(self.ctx, &self.targets.key, Mode::Write)?.set_keyset(value)?;
        replicate_state(self.ctx, &self.targets.key, &state);
        let db = db(self.ctx);
        tracking::track(db, &self.targets.key, &tracked);
        Ok(())
    }

    fn delete_cache(&mut self) -> Result<bool> {
        if !self.writable(&self.targets.cache, KeyType::String)? {
            return Ok(false);
        }
        Key::named(self.ctx, &self.targets.cache, Mode::Write)?.delete()
    }

    fn count(&mut self, counter: &'static str) -> Result<()> {
        process_stats::count(counter);
        if counter == counter_names::INVALIDATION_ERRORS {
            let db = db(self.ctx);
            process_stats::count_keyset_error(db, &self.targets.key);
        }
        if !self.writable(&self.targets.metrics, KeyType::Hash)? {
            return Ok(());
        }
        Key::named(self.ctx, &self.targets.metrics, Mode::Write)?
            .hash_incr(counter)
            .map(|_| ())
    }

    fn announce(&mut self) -> Result<()> {
        match &self.event {
            Some(event) => publish(self.ctx, &self.targets.events, event),
            None => Ok(()),
        }
    }
}

/// Writes the cache string of the key set at `name` if it is missing (after a read found it
/// so): the document with its TTL, counted as a fill. Not a change: nothing is audited.
pub(crate) fn fill(ctx: &Context, name: &[u8]) -> Result<()> {
    let set_key = Key::named(ctx, name, Mode::Peek)?;
    let Some(stored) = set_key.keyset().ok().flatten() else {
        return Ok(());
    };
    let now = crate::glue::clock::now_ms();
    if stored.cache_ok(now) {
        return Ok(());
    }
    let doc = stored.rendered().doc.as_bytes();
    let cache_name = names::derived(name, Derived::Cache);
    let cache = Key::named(ctx, &cache_name, Mode::Peek)?;
    let until = stored.set().cache_until(now, config::cache_ttl_ms());
    match cache.kind() {
        KeyType::String if cache.string() == Some(doc) => {
            let ttl = cache.pttl();
            stored.set_cache_until(if ttl >= 0 {
                now.saturating_add(ttl)
            } else {
                until
            });
            return Ok(());
        }
        KeyType::String | KeyType::Empty => {
            drop(cache);
            if until <= now {
                // The set changes now: a copy would be stale at once.
                stored.release_fill();
                return Ok(());
            }
            Key::named(ctx, &cache_name, Mode::Write)?.set_string_until(doc, until)?;
            let metrics_name = names::derived(name, Derived::Metrics);
            let counters = Key::named(ctx, &metrics_name, Mode::Write)?;
            if counters.require_type(KeyType::Hash, "").is_ok() {
                counters.hash_incr(counter_names::CACHE_FILLS)?;
            }
            process_stats::count(counter_names::CACHE_FILLS);
        }
        _ => {
            stored.release_fill();
            return Ok(());
        }
    }
    stored.set_cache_until(until);
    Ok(())
}

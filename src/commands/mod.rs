//! Redis glue: one file per command, registered from `table`. Handlers parse with `args`,
//! decide with `keyset`, check everything the change will write (ACL and types), and only
//! then write, so a refused command changes nothing and opens no key for writing.

pub mod debug;
pub mod get;
pub mod info;
pub mod invalidate;
pub mod key;
pub mod policy;
pub mod rotate;
pub mod setstate;
pub mod stats;
pub mod table;

use std::collections::BTreeMap;

use redis_module::raw::KeyType;
use redis_module::redisvalue::RedisValueKey;
use redis_module::{Context, RedisString, RedisValue};

use crate::commit::Effects;
use crate::config;
use crate::datatype::Stored;
use crate::error::{Access, Error, Result, Shown};
use crate::glue::call::Caller;
use crate::glue::key::{publish, Key, Mode};
use crate::keys::{self, Derived, Name};
use crate::observe::audit::Fields;
use crate::observe::events;
use crate::observe::stats as process_stats;

/// A reply map: a RESP3 map, flattened to `[name, value, ...]` on RESP2.
#[derive(Default)]
pub struct Map(BTreeMap<RedisValueKey, RedisValue>);

impl Map {
    pub fn put(&mut self, name: &str, value: RedisValue) -> &mut Map {
        self.0.insert(RedisValueKey::String(name.to_owned()), value);
        self
    }

    pub fn done(self) -> RedisValue {
        RedisValue::OrderedMap(self.0)
    }
}

pub fn text(s: &str) -> RedisValue {
    RedisValue::BulkString(s.to_owned())
}

pub fn bytes(b: &[u8]) -> RedisValue {
    RedisValue::StringBuffer(b.to_vec())
}

pub fn opt_int(v: Option<i64>) -> RedisValue {
    v.map_or(RedisValue::Null, RedisValue::Integer)
}

pub fn int(v: u64) -> RedisValue {
    RedisValue::Integer(i64::try_from(v).unwrap_or(i64::MAX))
}

/// The derived keys a changing command writes, checked before anything is written: the
/// caller's ACL must allow writing each, and each must hold its type or nothing.
pub struct Targets {
    pub key: Name,
    pub cache: Name,
    pub audit: Name,
    pub metrics: Name,
    pub events: Name,
}

impl Targets {
    pub fn check(ctx: &Context, caller: &Caller, key: &[u8]) -> Result<Targets> {
        let targets = Targets {
            key: Name::from_slice(key),
            cache: keys::derived(key, Derived::Cache),
            audit: keys::derived(key, Derived::Audit),
            metrics: keys::derived(key, Derived::Metrics),
            events: keys::derived(key, Derived::Events),
        };
        for (name, kind, what) in [
            (&targets.cache, KeyType::String, "expected a string (the cached JWKS)"),
            (&targets.audit, KeyType::Stream, "expected a stream (the audit trail)"),
            (&targets.metrics, KeyType::Hash, "expected a hash (the counters)"),
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
    pub fn check_unclaimed(&self, ctx: &Context) -> Result<()> {
        let pending = crate::upkeep::cleanup_pending(crate::glue::call::db(ctx), &self.key);
        if !pending && Key::named(ctx, &self.cache, Mode::Peek)?.exists() {
            return Err(Error::NotOurs(Shown::bytes(&self.cache), "a value"));
        }
        if Key::named(ctx, &self.audit, Mode::Peek)?.exists() && !is_audit_trail(ctx, &self.audit) {
            return Err(Error::NotOurs(Shown::bytes(&self.audit), "a value"));
        }
        if Key::named(ctx, &self.metrics, Mode::Peek)?.exists() && !is_counters(ctx, &self.metrics) {
            return Err(Error::NotOurs(Shown::bytes(&self.metrics), "a value"));
        }
        Ok(())
    }

    pub fn cached(&self, ctx: &Context) -> Result<bool> {
        Ok(Key::named(ctx, &self.cache, Mode::Peek)?.exists())
    }
}

/// A stream whose first entry is an audit entry (every entry the module writes has an
/// `action` of `JWKS_...`; the module never leaves its stream empty).
fn is_audit_trail(ctx: &Context, name: &[u8]) -> bool {
    let name = RedisString::create_from_slice(ctx.ctx, name);
    let first = ctx.call("XRANGE", &[&name, &ctx.create_string("-"), &ctx.create_string("+"), &ctx.create_string("COUNT"), &ctx.create_string("1")]);
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
        [f, v] => as_bytes(f) == Some(&b"action"[..]) && as_bytes(v).is_some_and(|v| v.starts_with(b"JWKS_")),
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
        as_bytes(f).is_some_and(|f| crate::observe::metrics::ALL.iter().chain([&crate::observe::metrics::KEYSETS_LOST]).any(|c| c.as_bytes() == f))
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
pub struct RedisEffects<'a> {
    pub ctx: &'a Context,
    pub targets: &'a Targets,
    /// The new key set, stored by `store_set` (rotations), and replicated as its state.
    pub new_set: Option<Stored>,
    /// The change event to publish.
    pub event: String,
}

impl<'a> RedisEffects<'a> {
    /// Effects for a change after which `after` is the key set at the key; `store` when
    /// the change stores it (rendered now, once, for the event's ETag: the stored value
    /// keeps the rendering for the next read).
    pub fn new(
        ctx: &'a Context,
        targets: &'a Targets,
        kind: events::Kind,
        after: &Stored,
        store: Option<Stored>,
        reason: &str,
    ) -> RedisEffects<'a> {
        let event = events::message(
            kind,
            &targets.key,
            Some((after.set(), &after.rendered().etag)),
            Some(reason),
        );
        RedisEffects {
            ctx,
            targets,
            new_set: store,
            event,
        }
    }
}

impl Effects for RedisEffects<'_> {
    fn audit(&mut self, fields: &Fields) -> Result<()> {
        Key::named(self.ctx, &self.targets.audit, Mode::Write)?.xadd(fields, config::audit_maxlen())
    }

    fn store_set(&mut self) -> Result<()> {
        let Some(value) = self.new_set.take() else {
            return Ok(());
        };
        let state = value.set().to_stored();
        let tracked = value.set().clone();
        Key::named(self.ctx, &self.targets.key, Mode::Write)?.set_keyset(value)?;
        setstate::replicate(self.ctx, &self.targets.key, &state);
        let db = crate::glue::call::db(self.ctx);
        crate::upkeep::track(db, &self.targets.key, &tracked);
        Ok(())
    }

    fn delete_cache(&mut self) -> Result<bool> {
        Key::named(self.ctx, &self.targets.cache, Mode::Write)?.delete()
    }

    fn count(&mut self, counter: &'static str) -> Result<()> {
        process_stats::count(counter);
        if counter == crate::observe::metrics::INVALIDATION_ERRORS {
            let db = crate::glue::call::db(self.ctx);
            process_stats::count_keyset_error(db, &self.targets.key);
        }
        Key::named(self.ctx, &self.targets.metrics, Mode::Write)?
            .hash_incr(counter)
            .map(|_| ())
    }

    fn announce(&mut self) -> Result<()> {
        publish(self.ctx, &self.targets.events, &self.event)
    }
}

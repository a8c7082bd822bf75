//! `JWKS.STATS`: this node's numbers for redis_exporter's `-script`, as a flat list of name,
//! value strings (callable from Lua):
//!
//! - `jwt_jwks_<counter>_total`: what this process did since it started (invalidations,
//!   errors, rotations, cache fills), over every db. Prometheus counters: they only grow,
//!   and restart with the process; deleting, moving or failing over a key set cannot lower
//!   them.
//! - `jwt_jwks_key_sets` and `jwt_jwks_key_sets:<db>`: key sets held, in all and per db.
//! - per key set, `<series>:<db>:<name>`: its invalidation errors as its counters hash says
//!   (so an alert can name it), and for a key set with a lifecycle policy the current key's
//!   age, whether a next key is published and PROMOTE-AFTER (the stall alert), with the
//!   name escaped for a Prometheus label.
//!
//! O(key sets): the registry lists them; no keyspace scan.

use std::ffi::CString;

use redis_module::raw::{self, KeyType};
use redis_module::{Context, InfoContext, RedisResult, RedisValue};

use crate::error::{Error, Result};
use crate::glue::call::{self, Args};
use crate::glue::key::{api, Key, Mode};
use crate::keys::{self, Derived};
use crate::keyset::State;
use crate::observe::{metrics, stats};
use crate::upkeep::{self, registry};

pub fn run(ctx: &Context, args: &Args) -> Result<RedisValue> {
    if args.len() != 1 {
        return Err(Error::Arity("jwks.stats"));
    }
    let mut out = Vec::new();
    for (name, value) in collect(ctx)? {
        out.push(RedisValue::BulkString(name));
        out.push(RedisValue::BulkString(value.text()));
    }
    Ok(RedisValue::Array(out))
}

/// The same numbers in `INFO jwks` (fields prefixed `jwks_` by Redis), which
/// monitoring/jwks_exporter.lua reads: INFO needs no module command in the exporter's ACL,
/// so its user can exist, and scrape, where the module is not loaded.
#[redis_module_macros::info_command_handler]
fn info(info: &InfoContext, _for_crash_report: bool) -> RedisResult<()> {
    info_section(info);
    Ok(())
}

fn info_section(info: &InfoContext) {
    let ctx = Context::new(upkeep::detached());
    if ctx.ctx.is_null() {
        return;
    }
    // SAFETY: reading function pointers filled at load.
    let apis = unsafe {
        (
            raw::RedisModule_InfoAddSection,
            raw::RedisModule_InfoAddFieldCString,
        )
    };
    let (Some(section), Some(field)) = apis else {
        return;
    };
    // SAFETY: the INFO context of this call; an empty name is the module's own section.
    if unsafe { section(info.ctx, c"".as_ptr()) } != raw::REDISMODULE_OK as i32 {
        return;
    }
    for (name, value) in collect(&ctx).unwrap_or_default() {
        if let (Ok(name), Ok(value)) = (CString::new(name), CString::new(value.text())) {
            // SAFETY: the INFO context of this call and two C strings.
            unsafe { field(info.ctx, name.as_ptr(), value.as_ptr()) };
        }
    }
}

/// A number as exported: a count, or seconds with millisecond precision.
#[derive(Debug, Clone, Copy)]
pub enum Number {
    Count(i64),
    Seconds(i64),
}

impl Number {
    fn text(self) -> String {
        match self {
            Number::Count(n) => n.to_string(),
            Number::Seconds(ms) => format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000)),
        }
    }
}

/// Every number, in order: node counters, key sets per db and in all, per key set.
pub fn collect(ctx: &Context) -> Result<Vec<(String, Number)>> {
    let mut out = Vec::new();
    for (counter, value) in stats::all() {
        out.push((counter.to_owned(), Number::Count(i64::try_from(value).unwrap_or(i64::MAX))));
    }
    let home = call::db(ctx);
    let select = api!(RedisModule_SelectDb)?;
    let mut total = 0;
    let mut per_key_set = Vec::new();
    for (db, names) in registry::snapshot() {
        // SAFETY: a live context; the db is switched back below.
        if unsafe { select(ctx.ctx, db) } != raw::REDISMODULE_OK as i32 {
            continue;
        }
        let mut held = 0;
        let now = call::now_ms();
        for name in names {
            let key = Key::named(ctx, &name, Mode::Peek)?;
            let Ok(Some(stored)) = key.keyset() else {
                registry::remove(db, &name);
                continue;
            };
            held += 1;
            if keys::check_name(&name).is_err() {
                continue;
            }
            let series = |metric: &str| format!("{metric}:{db}:{}", label(&name));
            let set = stored.set();
            let policy = set.lifecycle();
            // Lifecycle gauges for key sets with a policy: what the stall alert reads.
            if policy.is_set() {
                let current = set.entries().iter().find(|e| e.state == State::Current);
                if let Some(promoted) = current.map(|e| e.promoted_ms.unwrap_or(e.added_ms)) {
                    let age = now.saturating_sub(promoted).max(0);
                    per_key_set.push((series(metrics::KEYSET_CURRENT_AGE), Number::Seconds(age)));
                }
                let next = set.entries().iter().any(|e| e.state == State::Next);
                let next = Number::Count(i64::from(next));
                per_key_set.push((series(metrics::KEYSET_NEXT_PUBLISHED), next));
                let promote_after = i64::try_from(policy.promote_after_ms).unwrap_or(i64::MAX);
                per_key_set.push((
                    series(metrics::KEYSET_PROMOTE_AFTER),
                    Number::Seconds(promote_after),
                ));
            }
            let counters = Key::named(ctx, &keys::derived(&name, Derived::Metrics), Mode::Peek)?;
            let errors = match counters.kind() {
                KeyType::Hash => counters.hash_int(metrics::INVALIDATION_ERRORS),
                _ => 0,
            };
            per_key_set.push((series(metrics::KEYSET_ERRORS), Number::Count(errors)));
        }
        total += held;
        out.push((format!("{}:{db}", metrics::KEY_SETS), Number::Count(held)));
    }
    // SAFETY: as above.
    unsafe { select(ctx.ctx, home) };
    out.push((metrics::KEY_SETS.to_owned(), Number::Count(total)));
    out.extend(per_key_set);
    Ok(out)
}

/// A key-set name as a Prometheus label value: UTF-8, with control characters, backslashes
/// and bytes that are not UTF-8 written as `\xNN`, so distinct names stay distinct.
pub fn label(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() || c == '\\' {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn seconds_keep_milliseconds() {
        assert_eq!(super::Number::Seconds(300).text(), "0.300");
        assert_eq!(super::Number::Seconds(86_400_123).text(), "86400.123");
        assert_eq!(super::Number::Count(-2).text(), "-2");
    }

    #[test]
    fn labels_are_utf8_and_distinct() {
        assert_eq!(super::label(b"jwks:{auth}"), "jwks:{auth}");
        assert_eq!(super::label(b"a\\b\n\xff"), "a\\x5cb\\x0a\\xff");
        assert_ne!(super::label(b"\xff"), super::label(b"\\xff"));
    }
}

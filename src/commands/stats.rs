//! `JWKS.STATS`: this node's numbers for redis_exporter's `-script`, as a flat list of name,
//! value strings (callable from Lua):
//!
//! - `jwt_jwks_<counter>_total`: what this process did since it started (invalidations,
//!   errors, rotations, cache fills), over every db. Prometheus counters: they only grow,
//!   and restart with the process; deleting, moving or failing over a key set cannot lower
//!   them.
//! - `jwt_jwks_key_sets` and `jwt_jwks_key_sets:<db>`: key sets held, in all and per db.
//! - per key set, `<series>:<db>:<name>`: the invalidation errors this process saw for it
//!   (so an alert can name it), and for a key set with a lifecycle policy the current key's
//!   age, whether a next key is published and PROMOTE-AFTER (the stall alert), with the
//!   name escaped for a Prometheus label.
//!
//! O(key sets) from the registry: no keyspace scan, no key opened but a rolling check of a
//! few (3 ms with 10,000 key sets, bench/).

use std::ffi::CString;

use redis_module::raw;
use redis_module::{Context, InfoContext, RedisResult, RedisValue};

use crate::error::{Error, Result};
use crate::glue::call::{self, Args};
use crate::glue::key::{api, Key, Mode};
use crate::observe::{metrics, stats};
use crate::upkeep::{self, registry};

pub fn run(ctx: &Context, args: &Args) -> Result<RedisValue> {
    if args.len() != 1 {
        return Err(Error::Arity("jwks.stats"));
    }
    check_some(ctx)?;
    // Written straight into the reply (tens of thousands of strings with many key sets).
    let (Some(array), Some(string), Some(set_len)) = (
        // SAFETY: reading function pointers filled at load.
        unsafe { raw::RedisModule_ReplyWithArray },
        // SAFETY: as above.
        unsafe { raw::RedisModule_ReplyWithStringBuffer },
        // SAFETY: as above.
        unsafe { raw::RedisModule_ReplySetArrayLength },
    ) else {
        return Err(Error::Api("RedisModule_ReplyWithArray"));
    };
    // SAFETY: a command context; the length is set below.
    unsafe { array(ctx.ctx, raw::REDISMODULE_POSTPONED_LEN as std::os::raw::c_long) };
    let mut n: std::os::raw::c_long = 0;
    let mut value = String::new();
    collect(|name, number| {
        value.clear();
        number.write(&mut value);
        for part in [name, value.as_str()] {
            // SAFETY: a command context and a buffer alive for the call.
            unsafe { string(ctx.ctx, part.as_ptr().cast(), part.len()) };
        }
        n += 2;
    });
    // SAFETY: the postponed array opened above.
    unsafe { set_len(ctx.ctx, n) };
    Ok(RedisValue::NoReply)
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
    let _ = check_some(&ctx);
    let mut value = String::new();
    collect(|name, number| {
        value.clear();
        number.write(&mut value);
        if let (Ok(name), Ok(value)) = (CString::new(name), CString::new(value.as_str())) {
            // SAFETY: the INFO context of this call and two C strings.
            unsafe { field(info.ctx, name.as_ptr(), value.as_ptr()) };
        }
    });
}

/// A number as exported: a count, or seconds with millisecond precision.
#[derive(Debug, Clone, Copy)]
pub enum Number {
    Count(i64),
    Seconds(i64),
}

impl Number {
    fn write(self, out: &mut String) {
        let mut b = itoa::Buffer::new();
        match self {
            Number::Count(n) => out.push_str(b.format(n)),
            Number::Seconds(ms) => {
                out.push_str(b.format(ms.div_euclid(1000)));
                let frac = ms.rem_euclid(1000);
                out.push('.');
                out.push_str(&format!("{frac:03}"));
            }
        }
    }

    #[cfg(test)]
    fn text(self) -> String {
        let mut s = String::new();
        self.write(&mut s);
        s
    }
}

/// How many registered names each call checks against the keyspace: a rolling check that
/// keeps the registry honest without opening every key on every scrape.
const CHECKED_PER_CALL: usize = 256;

/// Drops registered names that no longer hold a key set (a safety net: the hooks keep the
/// registry current).
fn check_some(ctx: &Context) -> Result<()> {
    let home = call::db(ctx);
    let select = api!(RedisModule_SelectDb)?;
    for (db, name) in registry::next_slice(CHECKED_PER_CALL) {
        // SAFETY: a live context; the db is switched back below.
        if unsafe { select(ctx.ctx, db) } != raw::REDISMODULE_OK as i32 {
            continue;
        }
        let key = Key::named(ctx, &name, Mode::Peek)?;
        if !matches!(key.keyset(), Ok(Some(_))) {
            registry::remove(db, &name);
        }
    }
    // SAFETY: as above.
    unsafe { select(ctx.ctx, home) };
    Ok(())
}

/// Every number, in order: node counters, key sets per db and in all, then per key set.
pub fn collect(mut emit: impl FnMut(&str, Number)) {
    for (counter, value) in stats::all() {
        emit(counter, Number::Count(i64::try_from(value).unwrap_or(i64::MAX)));
    }
    let now = call::now_ms();
    let mut total = 0;
    let mut series = String::new();
    registry::each(|db, names| {
        total += names.len() as i64;
        series.clear();
        series.push_str(metrics::KEY_SETS);
        series.push(':');
        series.push_str(itoa::Buffer::new().format(db));
        emit(&series, Number::Count(names.len() as i64));
    });
    emit(metrics::KEY_SETS, Number::Count(total));
    // Lifecycle gauges for key sets with a policy: what the stall alert reads.
    registry::each(|db, names| {
        for (name, s) in names.iter().filter(|(_, s)| s.has_policy) {
            let mut one = |metric: &str, value: Number| {
                series.clear();
                series.push_str(metric);
                series.push(':');
                series.push_str(itoa::Buffer::new().format(db));
                series.push(':');
                push_label(&mut series, name);
                emit(&series, value);
            };
            if let Some(since) = s.current_since_ms {
                one(metrics::KEYSET_CURRENT_AGE, Number::Seconds(now.saturating_sub(since).max(0)));
            }
            one(metrics::KEYSET_NEXT_PUBLISHED, Number::Count(i64::from(s.has_next)));
            let promote_after = i64::try_from(s.promote_after_ms).unwrap_or(i64::MAX);
            one(metrics::KEYSET_PROMOTE_AFTER, Number::Seconds(promote_after));
        }
    });
    // Invalidation errors by key set (so an alert can name it): for every key set held, from
    // 0, so its first error is an increase Prometheus sees.
    let errors = stats::keyset_errors();
    registry::each(|db, names| {
        for name in names.keys() {
            series.clear();
            series.push_str(metrics::KEYSET_ERRORS);
            series.push(':');
            series.push_str(itoa::Buffer::new().format(db));
            series.push(':');
            push_label(&mut series, name);
            let n = errors
                .get(&db)
                .and_then(|by_name| by_name.get(name.as_slice()))
                .copied()
                .unwrap_or(0);
            emit(&series, Number::Count(i64::try_from(n).unwrap_or(i64::MAX)));
        }
    });
}

/// A key-set name as a Prometheus label value: UTF-8, with control, invisible, separator
/// and bidi characters, backslashes and bytes that are not UTF-8 written as `\xNN`, so
/// distinct names stay distinct and none can hide or reorder an alert's text.
#[cfg(test)]
pub fn label(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    push_label(&mut out, name);
    out
}

fn push_label(out: &mut String, name: &[u8]) {
    crate::escape::push_label(out, name);
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
        assert_eq!(
            super::label("a\u{2028}b\u{202e}c\u{e9}".as_bytes()),
            "a\\xe2\\x80\\xa8b\\xe2\\x80\\xaec\u{e9}"
        );
    }
}

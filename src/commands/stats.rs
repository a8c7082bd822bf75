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
//!   name escaped for a Prometheus label; unknown-kid lookups (`JWKS.KEY` misses) per key
//!   set; and for key sets that have had an ack, live verifiers and verifiers behind the
//!   set's generation for longer than `jwks.verifier-behind-ms`.
//!
//! O(key sets) from the registry: no keyspace scan, no key opened but a rolling check of a
//! few (3 ms with 10,000 key sets, bench/).

use redis_module::{Context, InfoContext, RedisResult, RedisValue};

use crate::glue::args::Args;
use crate::glue::clock::now_ms;
use crate::glue::ffi;
use crate::glue::ffi::api;
use crate::glue::redis_key::db;
use crate::glue::redis_key::{select_db, Key, Mode};
use crate::glue::reply::{InfoSection, StreamedArray};
use crate::observe::stats;
use crate::tracking::registry;
use redis_jwks_core::counter_names;
use redis_jwks_core::error::{Error, Result};

pub(crate) fn run(ctx: &Context, args: &Args) -> Result<RedisValue> {
    if args.len() != 1 {
        return Err(Error::Arity("jwks.stats"));
    }
    check_some(ctx)?;
    // Written straight into the reply (tens of thousands of strings with many key sets).
    let mut reply = StreamedArray::open(ctx)?;
    let mut value = String::new();
    collect(|name, number| {
        value.clear();
        number.write(&mut value);
        reply.push(name);
        reply.push(&value);
    });
    Ok(reply.finish())
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
    let Some(ctx) = ffi::detached() else {
        return;
    };
    let Some(section) = InfoSection::open(info) else {
        return;
    };
    let _ = check_some(&ctx);
    let mut value = String::new();
    collect(|name, number| {
        value.clear();
        number.write(&mut value);
        section.field(name, &value);
    });
}

/// A number as exported: a count, or seconds with millisecond precision.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Number {
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
    let home = db(ctx);
    api!(RedisModule_SelectDb)?;
    for (db, name) in registry::next_slice(CHECKED_PER_CALL) {
        // The db is switched back below.
        if !select_db(ctx, db) {
            continue;
        }
        let key = Key::named(ctx, &name, Mode::Peek)?;
        if !matches!(key.keyset(), Ok(Some(_))) {
            registry::remove(db, &name);
        }
    }
    select_db(ctx, home);
    Ok(())
}

/// Every number, in order: node counters, key sets per db and in all, then per key set.
pub(crate) fn collect(mut emit: impl FnMut(&str, Number)) {
    for (counter, value) in stats::all() {
        emit(
            counter,
            Number::Count(i64::try_from(value).unwrap_or(i64::MAX)),
        );
    }
    let now = now_ms();
    let mut total = 0;
    let mut series = String::new();
    registry::each(|db, names| {
        total += names.len() as i64;
        series.clear();
        series.push_str(counter_names::KEY_SETS);
        series.push(':');
        series.push_str(itoa::Buffer::new().format(db));
        emit(&series, Number::Count(names.len() as i64));
    });
    emit(counter_names::KEY_SETS, Number::Count(total));
    // Lifecycle gauges for key sets with a policy: what the stall alert reads.
    registry::each(|db, names| {
        for (name, s) in names.iter().filter(|(_, s)| s.has_policy) {
            let mut one = |metric: &str, value: Number| {
                keyset_series(&mut series, metric, db, name);
                emit(&series, value);
            };
            if let Some(since) = s.current_since_ms {
                one(
                    counter_names::KEYSET_CURRENT_AGE,
                    Number::Seconds(now.saturating_sub(since).max(0)),
                );
            }
            one(
                counter_names::KEYSET_NEXT_PUBLISHED,
                Number::Count(i64::from(s.has_next)),
            );
            let promote_after = i64::try_from(s.promote_after_ms).unwrap_or(i64::MAX);
            one(
                counter_names::KEYSET_PROMOTE_AFTER,
                Number::Seconds(promote_after),
            );
        }
    });
    // Invalidation errors and unknown-kid lookups by key set (so an alert can name it): for
    // every key set held, from 0, so its first one is an increase Prometheus sees.
    for (metric, counts) in [
        (counter_names::KEYSET_ERRORS, stats::keyset_errors()),
        (
            counter_names::KEYSET_UNKNOWN_KID_LOOKUPS,
            stats::keyset_unknown_kids(),
        ),
    ] {
        registry::each(|db, names| {
            for name in names.keys() {
                keyset_series(&mut series, metric, db, name);
                let n = counts
                    .get(&db)
                    .and_then(|by_name| by_name.get(name.as_slice()))
                    .copied()
                    .unwrap_or(0);
                emit(&series, Number::Count(i64::try_from(n).unwrap_or(i64::MAX)));
            }
        });
    }
    // Verifiers of every key set that has had an ack: live, and behind for too long.
    let behind_ms = crate::config::verifier_behind_ms();
    crate::fleets::each(|db, name, fleet| {
        let live = fleet.live(now).count();
        let behind = fleet.behind(now, behind_ms);
        for (metric, value) in [
            (counter_names::KEYSET_VERIFIERS, live),
            (counter_names::KEYSET_VERIFIERS_BEHIND, behind),
        ] {
            keyset_series(&mut series, metric, db, name);
            emit(
                &series,
                Number::Count(i64::try_from(value).unwrap_or(i64::MAX)),
            );
        }
    });
}

/// `<metric>:<db>:<name>` into `out`: one key set's series, its name escaped as a label.
fn keyset_series(out: &mut String, metric: &str, db: i32, name: &[u8]) {
    out.clear();
    out.push_str(metric);
    out.push(':');
    out.push_str(itoa::Buffer::new().format(db));
    out.push(':');
    push_label(out, name);
}

/// A key-set name as a Prometheus label value: UTF-8, with control, invisible, separator
/// and bidi characters, backslashes and bytes that are not UTF-8 written as `\xNN`, so
/// distinct names stay distinct and none can hide or reorder an alert's text.
#[cfg(test)]
pub(crate) fn label(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    push_label(&mut out, name);
    out
}

fn push_label(out: &mut String, name: &[u8]) {
    redis_jwks_core::escape::push_label(out, name);
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

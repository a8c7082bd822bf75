//! The clean-up after another command changed a key set: runs the queued jobs (`drain`) and
//! brings each name's derived state up to date with what is there now (`settle`): the
//! registry, the cache string (the key set's document or nothing), the loss of a key set
//! overwritten by another type, the announcement, a fill a read asked for. What it writes
//! is one commit through `write`, like any change.

use redis_module::raw::KeyType;
use redis_module::{Context, ContextFlags, RedisValue};

use super::{gate, Gate};
use crate::config;
use crate::glue::caller::Caller;
use crate::glue::clock::now_ms;
use crate::glue::redis_key::{db, select_db, Key, Mode};
use crate::observe::{events, log};
use crate::tracking::queue::{self, Wants};
use crate::tracking::{self, registry};
use crate::write::{self, Targets, What, Write};
use redis_jwks_core::error::Result;
use redis_jwks_core::names::{self, Derived};

/// Names handled per run: a load of 100,000 key sets is registered in slices, never in one
/// long stall of the event loop.
const JOBS_PER_RUN: usize = 1000;
/// How soon a job that had to wait (paused clients, OOM, loading) is tried again.
const WAIT_MS: i64 = 10;

/// Runs queued jobs (registered as the queue's runner): a slice at a time, the rest right
/// after; what has to wait for writes is put back and tried again shortly.
pub(super) fn drain(ctx: &Context) {
    let gate = gate(ctx);
    let batch = queue::take(JOBS_PER_RUN);
    let home = db(ctx);
    let mut waiting = Vec::new();
    for ((db, name), wants) in batch {
        if !select_db(ctx, db) {
            continue;
        }
        match settle(ctx, db, &name, wants, gate) {
            Ok(Some(later)) => waiting.push(((db, name), later)),
            Ok(None) => {}
            Err(e) => log::write_failed(&name, &e.to_string()),
        }
    }
    select_db(ctx, home);
    queue::put_back(ctx, waiting, WAIT_MS);
}

/// Runs the queued clean-ups before a snapshot is written. In the snapshot's child the
/// deletions change only the child's copy, which becomes the file (the server runs the same
/// clean-up, propagated, in its own time); in the server itself they run as usual, when
/// writing is allowed.
pub(crate) fn before_snapshot(ctx: &Context, in_child: bool) {
    if !in_child {
        if gate(ctx) == Gate::Open {
            drain(ctx);
        }
        return;
    }
    let gone = queue::gone();
    let home = db(ctx);
    for (db, name) in gone {
        if !select_db(ctx, db) || names::check_name(&name).is_err() {
            continue;
        }
        let Ok(set_key) = Key::named(ctx, &name, Mode::Peek) else {
            continue;
        };
        let doc = set_key
            .keyset()
            .ok()
            .flatten()
            .map(|s| s.rendered().doc.clone());
        drop(set_key);
        let cache_name = names::derived(&name, Derived::Cache);
        let Ok(cache) = Key::named(ctx, &cache_name, Mode::Peek) else {
            continue;
        };
        if cache.kind() == KeyType::String
            && cache.string().map(<[u8]>::to_vec) != doc.map(String::into_bytes)
        {
            drop(cache);
            if let Ok(k) = Key::named(ctx, &cache_name, Mode::Write) {
                let _ = k.delete_in_snapshot();
            }
        }
    }
    select_db(ctx, home);
}

/// Brings what is derived from the name up to date with what is there now. Returns what is
/// left to do once writing is allowed. What it writes (a lost key set's audit entry and
/// counters, the stale cache's invalidation, the announcement) is one commit through
/// `write`, like any change; a fill is `write::fill`.
fn settle(ctx: &Context, db: i32, name: &[u8], wants: Wants, gate: Gate) -> Result<Option<Wants>> {
    let key = Key::named(ctx, name, Mode::Peek)?;
    let stored = key.keyset().ok().flatten();
    let has_set = stored.is_some();
    let generation = stored.map_or(0, |s| s.set().generation());
    if let Some(s) = stored {
        if wants.track || wants.gone {
            s.forget_cache();
            tracking::placed(db, name, s.set());
        }
        if wants.fill && gate == Gate::Replica {
            s.release_fill();
        }
    }
    let lost = wants.gone && !has_set && key.exists();
    drop(key);
    let writes = wants.gone || wants.reconcile || wants.fill || wants.announce;
    match gate {
        Gate::Replica => return Ok(None),
        Gate::Wait if writes => {
            let mut later = wants;
            later.track = false;
            return Ok(Some(later));
        }
        _ => {}
    }
    if names::check_name(name).is_err() {
        return Ok(None);
    }
    if !has_set && !lost && migrating(ctx, name) {
        // The key set left by MIGRATE while its slot moves to another node: not deleted.
        // Nothing is written here (a key this node creates in a slot it is giving away
        // would block the move) and nothing is announced (subscribers keep their keys; the
        // server unsubscribes them when the slot moves and they reload from the new owner).
        return Ok(None);
    }
    let cache = if wants.gone || (wants.reconcile && has_set) {
        Some(cache_state(ctx, name)?)
    } else {
        None
    };
    let stale = matches!(cache, Some(Cache::Stale));
    if lost {
        log::keyset_lost(name);
    }
    if stale && has_set {
        log::cache_dropped(&names::derived(name, Derived::Cache));
    }
    let event = match wants.announce {
        true => announcement(ctx, db, name, wants.before)?,
        false => None,
    };
    if lost || stale || event.is_some() {
        let reason = match (lost, has_set) {
            (true, _) => "keyset_lost",
            (false, true) => "cache_stale",
            (false, false) => "keyset_deleted",
        };
        write::commit(
            ctx,
            &Caller::upkeep(ctx),
            &Targets::of(name),
            Write {
                what: What::Cleanup {
                    lost,
                    invalidate: stale,
                    generation,
                    event,
                },
                at_ms: now_ms(),
                reason: reason.into(),
                forced: false,
            },
        )?;
    }
    if let Some(cache) = cache {
        let key = Key::named(ctx, name, Mode::Peek)?;
        if let Some(s) = key.keyset().ok().flatten() {
            match cache {
                Cache::Holds(until) => s.set_cache_until(until),
                Cache::Stale | Cache::Other => s.forget_cache(),
            }
        }
    }
    if wants.fill {
        write::fill(ctx, name)?;
    }
    Ok(None)
}

/// In a cluster, whether this node is migrating `name`'s slot away (`CLUSTER NODES` shows
/// `[slot->-node]` on its own line while it is).
fn migrating(ctx: &Context, name: &[u8]) -> bool {
    if !ctx.get_flags().contains(ContextFlags::CLUSTER) {
        return false;
    }
    let nodes = match ctx.call("CLUSTER", &["NODES"]) {
        Ok(RedisValue::BulkString(s) | RedisValue::SimpleString(s)) => s.into_bytes(),
        Ok(RedisValue::StringBuffer(b)) => b,
        Ok(RedisValue::BulkRedisString(s)) => s.as_slice().to_vec(),
        _ => return false,
    };
    let needle = format!("[{}->-", names::slot(name));
    nodes
        .split(|b| *b == b'\n')
        .filter(|line| line.windows(6).any(|w| w == b"myself"))
        .any(|line| line.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

/// What `name`'s cache name holds, against the key set there now.
enum Cache {
    /// Its document, good until then.
    Holds(i64),
    /// A string that is not its document (or any string, with no key set): to invalidate.
    Stale,
    /// Nothing, or another type (left to its owner; rotations refuse it: WRONGTYPE).
    Other,
}

fn cache_state(ctx: &Context, name: &[u8]) -> Result<Cache> {
    let set_key = Key::named(ctx, name, Mode::Peek)?;
    let stored = set_key.keyset().ok().flatten();
    let cache = Key::named(ctx, &names::derived(name, Derived::Cache), Mode::Peek)?;
    let current = stored.map(|s| s.rendered().doc.as_bytes());
    Ok(match cache.kind() {
        KeyType::String if cache.string().is_some() && cache.string() == current => {
            let ttl = cache.pttl();
            Cache::Holds(if ttl >= 0 {
                now_ms().saturating_add(ttl)
            } else {
                // Equal, but with no TTL: someone else's SET. Kept (it is the document),
                // though not trusted past the usual cache lifetime.
                now_ms().saturating_add(config::cache_ttl_ms())
            })
        }
        KeyType::String => Cache::Stale,
        _ => Cache::Other,
    })
}

/// The event announcing what is at `name` now, if it is not what was there before.
fn announcement(
    ctx: &Context,
    db: i32,
    name: &[u8],
    before: Option<u64>,
) -> Result<Option<String>> {
    let now = registry::get(db, name).map(|s| s.fingerprint);
    if now == before {
        return Ok(None);
    }
    let key = Key::named(ctx, name, Mode::Peek)?;
    let stored = key.keyset().ok().flatten();
    Ok(Some(match stored {
        Some(s) => events::message(
            events::Kind::Replaced,
            name,
            Some((s.set(), &s.rendered().etag)),
            None,
        ),
        None => events::message(events::Kind::Deleted, name, None, None),
    }))
}

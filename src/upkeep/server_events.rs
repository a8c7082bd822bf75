//! Server events that act on whole dbs or the whole server: flushes, SWAPDB and loads keep
//! the registry true; a config change of `maxmemory-policy` warns when key sets can be
//! evicted; shutdown flushes the log buffer.

use redis_module::{Context, RedisValue};

use crate::glue::subscribe::{self, ServerEvent};
use crate::observe::log;
use crate::tracking::{self, registry, schedule};
use redis_jwks_core::error::Result;

pub(crate) fn subscribe(ctx: &Context) -> Result<()> {
    tracking::set_replica(ctx.get_flags().contains(redis_module::ContextFlags::SLAVE));
    subscribe::server_events(ctx, on_event)?;
    warn_if_key_sets_can_be_evicted(ctx);
    Ok(())
}

fn on_event(ctx: &Context, event: ServerEvent<'_>) {
    match event {
        ServerEvent::RoleChanged { replica } => {
            tracking::set_replica(replica);
            if replica {
                // Acks go to the primary; what this node heard as one is history now.
                crate::fleets::clear(-1);
            } else {
                schedule::on_promoted();
            }
        }
        ServerEvent::Flushed { db } => {
            // Subscribers learn that the key sets are gone (one event per name, after the
            // command: the same clean-up job as for a DEL).
            let names = registry::entries(db)
                .into_iter()
                .map(|(db, n, fp)| (db, n, Some(fp)))
                .collect();
            tracking::recheck(ctx, names);
            tracking::clear(db);
        }
        ServerEvent::Swapped { a, b } => {
            // What each name held before the swap, in either db.
            let (in_a, in_b) = (before(a), before(b));
            let find = |list: &[(Vec<u8>, u64)], n: &[u8]| {
                list.iter()
                    .find(|(m, _)| m.as_slice() == n)
                    .map(|(_, fp)| *fp)
            };
            let mut names = Vec::new();
            for (n, _) in in_a.iter().chain(in_b.iter()) {
                names.push((a, n.clone(), find(&in_a, n)));
                names.push((b, n.clone(), find(&in_b, n)));
            }
            tracking::swap(a, b);
            // Another key set (or none) now answers at each name of either db.
            tracking::recheck(ctx, names);
        }
        // The keyspace is replaced wholesale; each loaded key set registers itself.
        ServerEvent::LoadingStarted => tracking::clear(-1),
        ServerEvent::SnapshotStarting { in_child } => super::before_snapshot(ctx, in_child),
        ServerEvent::ConfigChanged { names } => {
            if names.contains(&&b"maxmemory-policy"[..]) {
                warn_if_key_sets_can_be_evicted(ctx);
            }
        }
        ServerEvent::Shutdown => log::stop(),
    }
}

fn before(db: i32) -> Vec<(Vec<u8>, u64)> {
    registry::entries(db)
        .into_iter()
        .map(|(_, n, fp)| (n, fp))
        .collect()
}

/// A key set is the only copy of its public keys and has no TTL: an `allkeys-*` policy may
/// evict it (its cache goes with it, and verifiers then see no keys at all).
fn warn_if_key_sets_can_be_evicted(ctx: &Context) {
    let policy = match ctx.call("CONFIG", &["GET", "maxmemory-policy"]) {
        Ok(RedisValue::Array(items)) => match items.get(1) {
            Some(RedisValue::SimpleString(s) | RedisValue::BulkString(s)) => s.clone(),
            Some(RedisValue::StringBuffer(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => return,
        },
        _ => return,
    };
    if policy.starts_with("allkeys-") {
        log::eviction_risk(&policy);
    }
}

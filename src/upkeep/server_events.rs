//! Server events that act on whole dbs or the whole server: flushes, SWAPDB and loads keep
//! the registry true; a config change of `maxmemory-policy` warns when key sets can be
//! evicted; shutdown flushes the log buffer.

use std::os::raw::c_void;
use std::sync::atomic::{AtomicBool, Ordering};

use redis_module::raw::{self, RedisModuleCtx, RedisModuleEvent};
use redis_module::{Context, RedisValue};

use super::{guarded, registry};
use crate::glue::redis_key::api;
use crate::observe::log;
use redis_jwks_core::error::{Error, Result};

/// This node replicates another: the module writes nothing of its own (fills, reconciles,
/// scheduled changes); the primary's effects arrive through the link.
static REPLICA: AtomicBool = AtomicBool::new(false);

pub(crate) fn is_replica() -> bool {
    REPLICA.load(Ordering::Relaxed)
}

type Callback = unsafe extern "C" fn(*mut RedisModuleCtx, RedisModuleEvent, u64, *mut c_void);

pub(crate) fn subscribe(ctx: &Context) -> Result<()> {
    let subscribe = api!(RedisModule_SubscribeToServerEvent)?;
    REPLICA.store(
        ctx.get_flags().contains(redis_module::ContextFlags::SLAVE),
        Ordering::Relaxed,
    );
    let events: [(u64, Callback); 7] = [
        (raw::REDISMODULE_EVENT_PERSISTENCE, on_persistence),
        (raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED, on_role),
        (raw::REDISMODULE_EVENT_FLUSHDB, on_flush),
        (raw::REDISMODULE_EVENT_SWAPDB, on_swapdb),
        (raw::REDISMODULE_EVENT_LOADING, on_loading),
        (raw::REDISMODULE_EVENT_CONFIG, on_config),
        (raw::REDISMODULE_EVENT_SHUTDOWN, on_shutdown),
    ];
    for (id, callback) in events {
        let event = RedisModuleEvent { id, dataver: 1 };
        // SAFETY: a live context and a callback with the expected signature.
        if unsafe { subscribe(ctx.ctx, event, Some(callback)) } != raw::REDISMODULE_OK as i32 {
            return Err(Error::Api("RedisModule_SubscribeToServerEvent"));
        }
    }
    warn_if_key_sets_can_be_evicted(ctx);
    Ok(())
}

unsafe extern "C" fn on_role(
    _ctx: *mut RedisModuleCtx,
    _event: RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    let replica = subevent == raw::REDISMODULE_EVENT_REPLROLECHANGED_NOW_REPLICA;
    REPLICA.store(replica, Ordering::Relaxed);
    if replica {
        // Acks go to the primary; what this node heard as one is history now.
        guarded("role event", || crate::fleets::clear(-1));
    } else {
        guarded("role event", super::schedule::on_promoted);
    }
}

unsafe extern "C" fn on_flush(
    ctx: *mut RedisModuleCtx,
    _event: RedisModuleEvent,
    subevent: u64,
    data: *mut c_void,
) {
    if subevent != raw::REDISMODULE_SUBEVENT_FLUSHDB_END || data.is_null() {
        return;
    }
    // SAFETY: the FLUSHDB event's data is a RedisModuleFlushInfo.
    let info = unsafe { &*data.cast::<raw::RedisModuleFlushInfo>() };
    guarded("flush event", || {
        // Subscribers learn that the key sets are gone (one event per name, after the
        // command: the same clean-up job as for a DEL).
        let names = registry::entries(info.dbnum)
            .into_iter()
            .map(|(db, n, fp)| (db, n, Some(fp)))
            .collect();
        super::recheck(ctx, names);
        registry::clear(info.dbnum);
        super::schedule::clear(info.dbnum);
        crate::fleets::clear(info.dbnum);
    });
}

fn before(db: i32) -> Vec<(Vec<u8>, u64)> {
    registry::entries(db)
        .into_iter()
        .map(|(_, n, fp)| (n, fp))
        .collect()
}

unsafe extern "C" fn on_swapdb(
    ctx: *mut RedisModuleCtx,
    _event: RedisModuleEvent,
    _subevent: u64,
    data: *mut c_void,
) {
    if data.is_null() {
        return;
    }
    // SAFETY: the SWAPDB event's data is a RedisModuleSwapDbInfo.
    let info = unsafe { &*data.cast::<raw::RedisModuleSwapDbInfo>() };
    guarded("swapdb event", || {
        let (a, b) = (info.dbnum_first, info.dbnum_second);
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
        registry::swap(a, b);
        super::schedule::swap(a, b);
        crate::fleets::swap(a, b);
        // Another key set (or none) now answers at each name of either db.
        super::recheck(ctx, names);
    });
}

unsafe extern "C" fn on_loading(
    _ctx: *mut RedisModuleCtx,
    _event: RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    // The keyspace is replaced wholesale; each loaded key set registers itself.
    if matches!(
        subevent,
        raw::REDISMODULE_SUBEVENT_LOADING_RDB_START
            | raw::REDISMODULE_SUBEVENT_LOADING_AOF_START
            | raw::REDISMODULE_SUBEVENT_LOADING_REPL_START
    ) {
        guarded("loading event", || {
            registry::clear(-1);
            super::schedule::clear(-1);
            crate::fleets::clear(-1);
        });
    }
}

/// A snapshot is about to be written (BGSAVE, a full sync, an AOF rewrite: in the child;
/// SAVE, DEBUG RELOAD, a shutdown save: in the server). A clean-up still queued (Redis 7.0
/// runs it in the next event-loop iteration) must not leave an orphan cache in the file.
unsafe extern "C" fn on_persistence(
    ctx: *mut RedisModuleCtx,
    _event: RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    let in_child = matches!(
        subevent,
        raw::REDISMODULE_SUBEVENT_PERSISTENCE_RDB_START
            | raw::REDISMODULE_SUBEVENT_PERSISTENCE_AOF_START
    );
    let in_server = matches!(
        subevent,
        raw::REDISMODULE_SUBEVENT_PERSISTENCE_SYNC_RDB_START
            | raw::REDISMODULE_SUBEVENT_PERSISTENCE_SYNC_AOF_START
    );
    if ctx.is_null() || !(in_child || in_server) {
        return;
    }
    guarded("persistence event", || {
        super::before_snapshot(&Context::new(ctx), in_child)
    });
}

unsafe extern "C" fn on_config(
    ctx: *mut RedisModuleCtx,
    _event: RedisModuleEvent,
    _subevent: u64,
    data: *mut c_void,
) {
    if data.is_null() {
        return;
    }
    // SAFETY: the CONFIG event's data is a RedisModuleConfigChange with `num_changes` names.
    let change = unsafe { &*data.cast::<raw::RedisModuleConfigChange>() };
    let names = match usize::try_from(change.num_changes) {
        Ok(n) if !change.config_names.is_null() => {
            // SAFETY: as above.
            unsafe { std::slice::from_raw_parts(change.config_names, n) }
        }
        _ => &[],
    };
    let policy_changed = names.iter().any(|&name| {
        if name.is_null() {
            return false;
        }
        // SAFETY: NUL-terminated config names.
        unsafe { std::ffi::CStr::from_ptr(name) }.to_bytes() == b"maxmemory-policy"
    });
    if policy_changed {
        guarded("config event", || {
            warn_if_key_sets_can_be_evicted(&Context::new(ctx))
        });
    }
}

unsafe extern "C" fn on_shutdown(
    _ctx: *mut RedisModuleCtx,
    _event: RedisModuleEvent,
    _subevent: u64,
    _data: *mut c_void,
) {
    guarded("shutdown event", log::stop);
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

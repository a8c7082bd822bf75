//! The server's event subscriptions, decoded into Rust values: server events (role changes,
//! flushes, SWAPDB, loads, snapshots, config changes, shutdown) and keyspace events. The
//! callbacks Redis calls, and the raw data they get, stay in this file; the handlers are
//! plain `fn`s that never see a pointer.

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};
use std::sync::OnceLock;

use redis_module::raw::{self, RedisModuleCtx, RedisModuleEvent, RedisModuleString};
use redis_module::{Context, RedisString};

use super::ffi::{api, guarded};
use redis_jwks_core::error::{Error, Result};

/// A server event, as the module uses it.
#[derive(Debug)]
pub(crate) enum ServerEvent<'a> {
    /// This node became a replica (`true`) or a primary.
    RoleChanged {
        replica: bool,
    },
    /// A flush of db `db` (-1: every db) has ended.
    Flushed {
        db: i32,
    },
    /// SWAPDB `a` `b`.
    Swapped {
        a: i32,
        b: i32,
    },
    /// The keyspace is about to be replaced wholesale (RDB or AOF load, full sync).
    LoadingStarted,
    /// A snapshot is about to be written: in a forked child, or by the server itself.
    SnapshotStarting {
        in_child: bool,
    },
    /// These configuration parameters changed.
    ConfigChanged {
        names: Vec<&'a [u8]>,
    },
    Shutdown,
}

pub(crate) type ServerHandler = fn(&Context, ServerEvent<'_>);
pub(crate) type KeyspaceHandler = fn(&Context, &[u8], &[u8]);

static SERVER: OnceLock<ServerHandler> = OnceLock::new();
static KEYSPACE: OnceLock<KeyspaceHandler> = OnceLock::new();

/// The server events the module follows, all to `handler`; called once at load.
pub(crate) fn server_events(ctx: &Context, handler: ServerHandler) -> Result<()> {
    let subscribe = api!(RedisModule_SubscribeToServerEvent)?;
    let _ = SERVER.set(handler);
    for id in [
        raw::REDISMODULE_EVENT_PERSISTENCE,
        raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED,
        raw::REDISMODULE_EVENT_FLUSHDB,
        raw::REDISMODULE_EVENT_SWAPDB,
        raw::REDISMODULE_EVENT_LOADING,
        raw::REDISMODULE_EVENT_CONFIG,
        raw::REDISMODULE_EVENT_SHUTDOWN,
    ] {
        let event = RedisModuleEvent { id, dataver: 1 };
        // SAFETY: a live context and a callback with the expected signature.
        if unsafe { subscribe(ctx.ctx, event, Some(on_server_event)) } != raw::REDISMODULE_OK as i32
        {
            return Err(Error::Api("RedisModule_SubscribeToServerEvent"));
        }
    }
    Ok(())
}

/// Keyspace events of `classes` (`REDISMODULE_NOTIFY_*`) to `handler` (event name, key).
/// Every such write of the server calls it: the handler's common case must be cheap.
pub(crate) fn keyspace_events(
    ctx: &Context,
    classes: c_int,
    handler: KeyspaceHandler,
) -> Result<()> {
    let subscribe = api!(RedisModule_SubscribeToKeyspaceEvents)?;
    let _ = KEYSPACE.set(handler);
    // SAFETY: a live context and a callback with the expected signature.
    if unsafe { subscribe(ctx.ctx, classes, Some(on_keyspace_event)) }
        != raw::REDISMODULE_OK as c_int
    {
        return Err(Error::Api("RedisModule_SubscribeToKeyspaceEvents"));
    }
    Ok(())
}

unsafe extern "C" fn on_keyspace_event(
    ctx: *mut RedisModuleCtx,
    _class: c_int,
    event: *const c_char,
    key: *mut RedisModuleString,
) -> c_int {
    if let (Some(handler), false, false, false) = (
        KEYSPACE.get(),
        ctx.is_null(),
        event.is_null(),
        key.is_null(),
    ) {
        // Redis passes a NUL-terminated event name and the event's key, alive during the call.
        // SAFETY: as just said.
        let event = unsafe { CStr::from_ptr(event) }.to_bytes();
        let key = RedisString::string_as_slice(key);
        guarded("keyspace event", || handler(&Context::new(ctx), event, key));
    }
    raw::REDISMODULE_OK as c_int
}

unsafe extern "C" fn on_server_event(
    ctx: *mut RedisModuleCtx,
    event: RedisModuleEvent,
    subevent: u64,
    data: *mut c_void,
) {
    let Some(handler) = SERVER.get() else { return };
    if ctx.is_null() {
        return;
    }
    // SAFETY: Redis passes the data documented for each event id (or null).
    let Some(decoded) = (unsafe { decode(event.id, subevent, data) }) else {
        return;
    };
    guarded("server event", || handler(&Context::new(ctx), decoded));
}

/// # Safety
/// `data` is what Redis passes with event `id` and `subevent`, alive for the callback.
unsafe fn decode<'a>(id: u64, subevent: u64, data: *mut c_void) -> Option<ServerEvent<'a>> {
    Some(match id {
        raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED => ServerEvent::RoleChanged {
            replica: subevent == raw::REDISMODULE_EVENT_REPLROLECHANGED_NOW_REPLICA,
        },
        raw::REDISMODULE_EVENT_FLUSHDB if subevent == raw::REDISMODULE_SUBEVENT_FLUSHDB_END => {
            if data.is_null() {
                return None;
            }
            // SAFETY: the FLUSHDB event's data is a RedisModuleFlushInfo.
            let info = unsafe { &*data.cast::<raw::RedisModuleFlushInfo>() };
            ServerEvent::Flushed { db: info.dbnum }
        }
        raw::REDISMODULE_EVENT_SWAPDB => {
            if data.is_null() {
                return None;
            }
            // SAFETY: the SWAPDB event's data is a RedisModuleSwapDbInfo.
            let info = unsafe { &*data.cast::<raw::RedisModuleSwapDbInfo>() };
            ServerEvent::Swapped {
                a: info.dbnum_first,
                b: info.dbnum_second,
            }
        }
        raw::REDISMODULE_EVENT_LOADING
            if matches!(
                subevent,
                raw::REDISMODULE_SUBEVENT_LOADING_RDB_START
                    | raw::REDISMODULE_SUBEVENT_LOADING_AOF_START
                    | raw::REDISMODULE_SUBEVENT_LOADING_REPL_START
            ) =>
        {
            ServerEvent::LoadingStarted
        }
        raw::REDISMODULE_EVENT_PERSISTENCE => match subevent {
            raw::REDISMODULE_SUBEVENT_PERSISTENCE_RDB_START
            | raw::REDISMODULE_SUBEVENT_PERSISTENCE_AOF_START => {
                ServerEvent::SnapshotStarting { in_child: true }
            }
            raw::REDISMODULE_SUBEVENT_PERSISTENCE_SYNC_RDB_START
            | raw::REDISMODULE_SUBEVENT_PERSISTENCE_SYNC_AOF_START => {
                ServerEvent::SnapshotStarting { in_child: false }
            }
            _ => return None,
        },
        raw::REDISMODULE_EVENT_CONFIG => {
            if data.is_null() {
                return None;
            }
            // The CONFIG event's data is a RedisModuleConfigChange with `num_changes` names.
            // SAFETY: as just said.
            let change = unsafe { &*data.cast::<raw::RedisModuleConfigChange>() };
            let names = match usize::try_from(change.num_changes) {
                Ok(n) if !change.config_names.is_null() => {
                    // SAFETY: as above.
                    unsafe { std::slice::from_raw_parts(change.config_names, n) }
                }
                _ => &[],
            };
            ServerEvent::ConfigChanged {
                names: names
                    .iter()
                    .filter(|n| !n.is_null())
                    // SAFETY: NUL-terminated config names.
                    .map(|&n| unsafe { CStr::from_ptr(n) }.to_bytes())
                    .collect(),
            }
        }
        raw::REDISMODULE_EVENT_SHUTDOWN => ServerEvent::Shutdown,
        _ => return None,
    })
}

//! `JWKS.GET K`: the JWKS document. Serves `…:cache` if present: a hit is one key lookup
//! and a reply straight from the stored string, like GET. On a miss it renders from the
//! key set and caches the document with the TTL (so this is a write command); nil when
//! there is no key set. Every command that changes a key set deletes the cache in the same
//! command, so a cached document is always the current one.

use std::cell::RefCell;
use std::os::raw::c_int;
use std::ptr;

use redis_module::raw::{self, KeyType, RedisModuleCtx, RedisModuleString};
use redis_module::{Context, RedisError, RedisResult, RedisString, RedisValue};

use super::{catch_panic, now_ms, with_keyset, wrong_type};
use crate::config;
use crate::effects::Key;
use crate::keys::{derived_name, DerivedKeys, CACHE};
use crate::observe::{log, metrics, record};

/// The command's entry point, registered by hand (`register`) rather than through the
/// crate's macro: the macro's wrapper copies every argument into a Vec of retained strings
/// before the handler runs, which on a cache hit cost a third as much as the lookup.
///
/// # Safety
/// Called by Redis with a valid context and `argc` arguments at `argv`.
pub unsafe extern "C" fn entry(
    ctx: *mut RedisModuleCtx,
    argv: *mut *mut RedisModuleString,
    argc: c_int,
) -> c_int {
    let context = Context::new(ctx);
    let args: &[*mut RedisModuleString] = match usize::try_from(argc) {
        Ok(n) if !argv.is_null() => std::slice::from_raw_parts(argv, n),
        _ => &[],
    };
    let result = catch_panic(b"JWKS.GET", || run(&context, args));
    context.reply(result) as c_int
}

/// Registers JWKS.GET: a write command (a miss fills the cache), key at argument 1, in the
/// `write fast jwks` ACL categories where the server has module categories.
pub fn register(ctx: &Context) -> Result<(), &'static str> {
    let create = unsafe { raw::RedisModule_CreateCommand }.ok_or("no RM_CreateCommand")?;
    let status = unsafe { create(ctx.ctx, c"jwks.get".as_ptr(), Some(entry), c"write".as_ptr(), 1, 1, 1) };
    if status != raw::REDISMODULE_OK as c_int {
        return Err("cannot create jwks.get");
    }
    if let (Some(get), Some(set)) = unsafe {
        (
            raw::RedisModule_GetCommand,
            raw::RedisModule_SetCommandACLCategories,
        )
    } {
        let command = unsafe { get(ctx.ctx, c"jwks.get".as_ptr()) };
        let set_ok = !command.is_null()
            && unsafe { set(command, c"write fast jwks".as_ptr()) } == raw::REDISMODULE_OK as c_int;
        if !set_ok {
            // As for the other commands: older servers have no module categories.
            ctx.log_notice("jwks.get loaded without ACL categories (not supported here)");
        }
    }
    Ok(())
}

thread_local! {
    /// The key set JWKS.GET served last and its cache key's name as a Redis string, kept
    /// across calls: reads come in runs for one key set, and deriving and creating the
    /// name on every hit cost a tenth of it. Main thread only, like every command.
    static LAST_CACHE_NAME: RefCell<Option<(Vec<u8>, usize)>> = const { RefCell::new(None) };
}

/// The cache key's name for key set `key`, as a Redis string owned by `LAST_CACHE_NAME`.
fn cache_name(key: &[u8]) -> Result<*mut RedisModuleString, RedisError> {
    LAST_CACHE_NAME.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((k, s)) = last.as_ref() {
            if k.as_slice() == key {
                return Ok(*s as *mut RedisModuleString);
            }
        }
        let name = derived_name(key, CACHE)?;
        let s = RedisString::create_from_slice(ptr::null_mut(), &name);
        let inner = s.inner;
        std::mem::forget(s);
        if let Some((_, old)) = last.replace((key.to_vec(), inner as usize)) {
            drop(RedisString::from_redis_module_string(
                ptr::null_mut(),
                old as *mut RedisModuleString,
            ));
        }
        Ok(inner)
    })
}

pub fn run(ctx: &Context, args: &[*mut RedisModuleString]) -> RedisResult {
    let &[_, key] = args else {
        return Err(RedisError::WrongArity);
    };
    let key = RedisString::string_as_slice(key);
    let name = cache_name(key)?;
    let (Some(open), Some(close), Some(kind), Some(dma)) = (unsafe {
        (
            raw::RedisModule_OpenKey,
            raw::RedisModule_CloseKey,
            raw::RedisModule_KeyType,
            raw::RedisModule_StringDMA,
        )
    }) else {
        return Err(RedisError::Str("ERR module API missing"));
    };
    let cache = unsafe { open(ctx.ctx, name, raw::REDISMODULE_READ as c_int) };
    if !cache.is_null() {
        let found = KeyType::from(unsafe { kind(cache) });
        if found == KeyType::String {
            let mut len = 0;
            let doc = unsafe { dma(cache, &mut len, raw::REDISMODULE_READ as c_int) };
            if !doc.is_null() {
                // The reply copies the bytes before the key is closed.
                raw::reply_with_string_buffer(ctx.ctx, doc, len);
                unsafe { close(cache) };
                return Ok(RedisValue::NoReply);
            }
        }
        unsafe { close(cache) };
        if !matches!(found, KeyType::String | KeyType::Empty) {
            return Err(wrong_type(
                RedisString::string_as_slice(name),
                "expected a string (the cached JWKS)",
            ));
        }
    }
    let key = &RedisString::create_from_slice(ctx.ctx, key);
    with_keyset(ctx, key, |set| {
        let Some(set) = set else {
            return Ok(RedisValue::Null);
        };
        let keys = DerivedKeys::for_key(key.as_slice())?;
        let doc = set.render();
        let filled = Key::open(ctx, &keys.cache)
            .map_err(str::to_owned)
            .and_then(|c| c.set_with_ttl(doc.as_bytes(), config::cache_ttl_ms(), now_ms()));
        match filled {
            Ok(()) => {
                // A metrics key of another type is left alone: the fill itself succeeded.
                if let Ok(m) = Key::open(ctx, &keys.metrics) {
                    if matches!(m.kind(), KeyType::Hash | KeyType::Empty) {
                        crate::registry::note(&keys.metrics);
                        record::count(&m, metrics::CACHE_FILLS);
                    }
                }
            }
            // Serving the rendered document is still right; the next read retries the fill.
            Err(e) => log::write_failed(&keys.cache, &e),
        }
        Ok(RedisValue::BulkString(doc))
    })
}

//! Redis glue: one file per command. Handlers parse with `args`, decide with `keyset`, and
//! only then touch keys, so a rejected command changes nothing.

pub mod debug;
pub mod get;
pub mod info;
pub mod invalidate;
pub mod rotate;
pub mod setstate;
pub mod stats;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{SystemTime, UNIX_EPOCH};

use redis_module::{raw::KeyType, Context, RedisError, RedisResult, RedisString};

use crate::datatype::KEYSET_TYPE;
use crate::effects::Key;
use crate::error::{Error, Shown};
use crate::keys::DerivedKeys;
use crate::keyset::KeySet;
use crate::observe::log;

impl From<Error> for RedisError {
    fn from(e: Error) -> Self {
        // Error text goes into a C string and a RESP line: no NUL, CR or LF.
        let text: String = e
            .to_string()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        RedisError::String(text)
    }
}

type Handler = fn(&Context, &[RedisString]) -> RedisResult;

/// Runs a handler, turning a panic into an error reply: a panic unwinding into Redis
/// would abort the whole server.
pub fn guarded(ctx: &Context, args: Vec<RedisString>, handler: Handler) -> RedisResult {
    let name = args.first().map_or(&b""[..], RedisString::as_slice);
    catch_panic(name, || handler(ctx, &args))
}

/// The panic guard itself; `command` is only decoded if there was a panic to log.
pub fn catch_panic(command: &[u8], f: impl FnOnce() -> RedisResult) -> RedisResult {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(_) => {
            log::internal_error(&String::from_utf8_lossy(command));
            Err(RedisError::Str(
                "ERR redis-jwks internal error; the command was aborted",
            ))
        }
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The ACL user running the command, for the audit trail.
pub fn current_user(ctx: &Context) -> String {
    let Some(get) = (unsafe { redis_module::raw::RedisModule_GetCurrentUserName }) else {
        return "unknown".into();
    };
    let ptr = unsafe { get(ctx.ctx) };
    if ptr.is_null() {
        return "unknown".into();
    }
    let name = RedisString::from_redis_module_string(std::ptr::null_mut(), ptr);
    String::from_utf8_lossy(name.as_slice()).into_owned()
}

/// Reads the key set at `key`: `None` if the key does not exist.
pub fn with_keyset<T>(
    ctx: &Context,
    key: &RedisString,
    f: impl FnOnce(Option<&KeySet>) -> Result<T, RedisError>,
) -> Result<T, RedisError> {
    let handle = ctx.open_key(key);
    match handle.get_value::<KeySet>(&KEYSET_TYPE) {
        Ok(set) => f(set),
        Err(_) => Err(wrong_type(key.as_slice(), "not a JWKS key set")),
    }
}

pub fn wrong_type(key: &[u8], what: &'static str) -> RedisError {
    Error::WrongType(Shown::bytes(key), what).into()
}

/// The derived keys, opened once for a command that writes them.
pub struct Derived {
    pub cache: Key,
    pub audit: Key,
    pub metrics: Key,
}

/// Opens the derived keys and refuses up front if one holds the wrong type, so no write
/// can fail midway and leave a command half-applied.
pub fn open_derived(ctx: &Context, keys: &DerivedKeys) -> Result<Derived, RedisError> {
    let open = |name: &[u8], wanted: KeyType, what: &'static str| {
        let key = Key::open(ctx, name).map_err(RedisError::Str)?;
        match key.kind() {
            KeyType::Empty => Ok(key),
            kind if kind == wanted => Ok(key),
            _ => Err(wrong_type(name, what)),
        }
    };
    crate::registry::note(&keys.metrics);
    Ok(Derived {
        cache: open(
            &keys.cache,
            KeyType::String,
            "expected a string (the cached JWKS)",
        )?,
        audit: open(
            &keys.audit,
            KeyType::Stream,
            "expected a stream (the audit trail)",
        )?,
        metrics: open(
            &keys.metrics,
            KeyType::Hash,
            "expected a hash (the counters)",
        )?,
    })
}

pub fn slices(args: &[RedisString]) -> Vec<&[u8]> {
    args.iter().map(RedisString::as_slice).collect()
}

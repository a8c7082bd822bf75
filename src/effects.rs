//! Writes to the derived keys through Redis's low-level key API, each propagated to
//! replicas and the AOF as the exact effect (XADD with its real ID and resulting length,
//! SET with an absolute expiry), so a replica never re-decides anything. Going through the
//! key API instead of `RM_Call` keeps JWKS.INVALIDATE cheaper than the Lua a user would write.

use std::ffi::{c_void, CStr};
use std::os::raw::c_int;
use std::ptr::{self, NonNull};

use redis_module::raw::{self, KeyType, RedisModuleKey, RedisModuleString};
use redis_module::{Context, RedisString};

use crate::observe::audit::{Fields, Value};
use crate::strings::{self, fixed};

/// A key opened for reading and writing; closed on drop.
pub struct Key {
    ctx: *mut raw::RedisModuleCtx,
    ptr: *mut RedisModuleKey,
    name: RedisString,
}

macro_rules! api {
    ($name:ident) => {
        unsafe { raw::$name }.ok_or(concat!(stringify!($name), " is not available"))
    };
}

/// Decimal text of an integer, without a heap allocation.
fn decimal(buf: &mut itoa::Buffer, n: impl itoa::Integer) -> &[u8] {
    buf.format(n).as_bytes()
}

impl Key {
    pub fn open(ctx: &Context, name: &[u8]) -> Result<Key, &'static str> {
        let open = api!(RedisModule_OpenKey)?;
        let name = RedisString::create_from_slice(ctx.ctx, name);
        let mode = (raw::REDISMODULE_READ | raw::REDISMODULE_WRITE) as c_int;
        let ptr = unsafe { open(ctx.ctx, name.inner, mode) };
        if ptr.is_null() {
            return Err("cannot open key");
        }
        Ok(Key {
            ctx: ctx.ctx,
            ptr,
            name,
        })
    }

    pub fn kind(&self) -> KeyType {
        match api!(RedisModule_KeyType) {
            Ok(f) => KeyType::from(unsafe { f(self.ptr) }),
            Err(_) => KeyType::Empty,
        }
    }

    pub fn name(&self) -> &[u8] {
        self.name.as_slice()
    }

    fn string(&self, bytes: &[u8]) -> RedisString {
        RedisString::create_from_slice(self.ctx, bytes)
    }

    fn notify(&self, class: i32, event: &CStr) {
        if let Ok(f) = api!(RedisModule_NotifyKeyspaceEvent) {
            unsafe { f(self.ctx, class, event.as_ptr(), self.name.inner) };
        }
    }

    /// Propagates `cmd` with `argv` as its arguments; `argv[0]` must be this key's name.
    fn replicate(&self, cmd: &CStr, argv: &mut [*mut RedisModuleString]) {
        let Ok(f) = api!(RedisModule_Replicate) else {
            return;
        };
        debug_assert_eq!(argv.first(), Some(&self.name.inner));
        unsafe {
            f(
                self.ctx,
                cmd.as_ptr(),
                c"v".as_ptr(),
                argv.as_mut_ptr(),
                argv.len(),
            )
        };
    }

    /// Deletes the key. Returns whether it existed (only then is a DEL propagated, as
    /// Redis itself does).
    pub fn delete(&self) -> bool {
        if self.kind() == KeyType::Empty {
            return false;
        }
        if let Ok(f) = api!(RedisModule_DeleteKey) {
            unsafe { f(self.ptr) };
        }
        self.replicate(c"DEL", &mut [self.name.inner]);
        self.notify(raw::REDISMODULE_NOTIFY_GENERIC, c"del");
        true
    }

    /// HINCRBY field 1 on a hash (or a missing key).
    pub fn hincr(&self, field: &'static str) -> Result<i64, String> {
        let get = api!(RedisModule_HashGet)?;
        let set = api!(RedisModule_HashSet)?;
        let name = fixed(field);
        let flags = raw::REDISMODULE_HASH_NONE as c_int;
        let mut current: *mut RedisModuleString = ptr::null_mut();
        if self.kind() == KeyType::Hash {
            unsafe {
                get(
                    self.ptr,
                    flags,
                    name,
                    &mut current as *mut *mut RedisModuleString,
                    ptr::null_mut::<c_void>(),
                )
            };
        }
        let before = match NonNull::new(current) {
            None => 0,
            Some(p) => {
                // HashGet hands over a new string: take ownership (no extra retain), free on drop.
                let s = RedisString::from_redis_module_string(self.ctx, p.as_ptr());
                std::str::from_utf8(s.as_slice())
                    .ok()
                    .and_then(|t| t.parse::<i64>().ok())
                    .ok_or_else(|| format!("counter {field} is not an integer"))?
            }
        };
        let after = before.saturating_add(1);
        let value = self.string(decimal(&mut itoa::Buffer::new(), after));
        unsafe { set(self.ptr, flags, name, value.inner, ptr::null_mut::<c_void>()) };
        self.replicate(c"HINCRBY", &mut [self.name.inner, name, fixed("1")]);
        self.notify(raw::REDISMODULE_NOTIFY_HASH, c"hincrby");
        Ok(after)
    }

    /// XADD with an automatic ID, trimmed to about `maxlen` entries. Propagated as
    /// `XADD key MAXLEN = <resulting length> <id> ...`, exactly as Redis propagates an
    /// approximate trim, so replicas keep the very same entries.
    pub fn xadd(&self, fields: &Fields, maxlen: i64) -> Result<(), String> {
        let add = api!(RedisModule_StreamAdd)?;
        let trim = api!(RedisModule_StreamTrimByLength)?;
        let len = api!(RedisModule_ValueLength)?;
        // The propagated command's arguments; the entry's fields are its tail.
        const HEAD: usize = 5;
        let mut argv: Vec<*mut RedisModuleString> = Vec::with_capacity(HEAD + 2 * fields.len());
        let mut owned: Vec<RedisString> = Vec::with_capacity(fields.len());
        strings::with(|t| {
            argv.extend([
                self.name.inner,
                t.fixed("MAXLEN"),
                t.fixed("="),
                ptr::null_mut(),
                ptr::null_mut(),
            ]);
            for (name, value) in fields {
                argv.push(t.fixed(name));
                argv.push(match value {
                    Value::Fixed(text) => t.fixed(text),
                    Value::Text(_) => {
                        let s = t.shared(value.as_str().as_bytes());
                        let inner = s.inner;
                        owned.push(s);
                        inner
                    }
                });
            }
        });
        let mut id = raw::RedisModuleStreamID { ms: 0, seq: 0 };
        let status = unsafe {
            add(
                self.ptr,
                raw::REDISMODULE_STREAM_ADD_AUTOID as c_int,
                &mut id,
                argv.as_mut_ptr().add(HEAD),
                fields.len() as i64,
            )
        };
        if status != raw::REDISMODULE_OK as c_int {
            return Err("XADD failed (stream ID space exhausted?)".into());
        }
        unsafe {
            trim(
                self.ptr,
                raw::REDISMODULE_STREAM_TRIM_APPROX as c_int,
                maxlen,
            )
        };
        let length = self.string(decimal(&mut itoa::Buffer::new(), unsafe { len(self.ptr) }));
        let mut text = [0u8; 41];
        let id = self.string(stream_id(&mut text, id.ms, id.seq));
        argv[3] = length.inner;
        argv[4] = id.inner;
        self.replicate(c"XADD", &mut argv);
        self.notify(raw::REDISMODULE_NOTIFY_STREAM, c"xadd");
        Ok(())
    }

    /// SET value with a TTL, propagated as `SET key value PXAT <absolute ms>`.
    pub fn set_with_ttl(&self, value: &[u8], ttl_ms: i64, now_ms: i64) -> Result<(), String> {
        let set = api!(RedisModule_StringSet)?;
        let value = self.string(value);
        if unsafe { set(self.ptr, value.inner) } != raw::REDISMODULE_OK as c_int {
            return Err("SET failed".into());
        }
        let at = now_ms.saturating_add(ttl_ms);
        let ok = match (unsafe { raw::RedisModule_SetAbsExpire }, unsafe {
            raw::RedisModule_SetExpire
        }) {
            (Some(abs), _) => unsafe { abs(self.ptr, at) },
            (None, Some(rel)) => unsafe { rel(self.ptr, ttl_ms) },
            (None, None) => raw::REDISMODULE_ERR as c_int,
        };
        if ok != raw::REDISMODULE_OK as c_int {
            return Err("setting the cache TTL failed".into());
        }
        let at = self.string(decimal(&mut itoa::Buffer::new(), at));
        self.replicate(c"SET", &mut [self.name.inner, value.inner, fixed("PXAT"), at.inner]);
        self.notify(raw::REDISMODULE_NOTIFY_STRING, c"set");
        self.notify(raw::REDISMODULE_NOTIFY_GENERIC, c"expire");
        Ok(())
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        if let Ok(close) = api!(RedisModule_CloseKey) {
            unsafe { close(self.ptr) };
        }
    }
}

/// `<ms>-<seq>` into `buf` (two u64s and a dash fit in 41 bytes).
fn stream_id(buf: &mut [u8; 41], ms: u64, seq: u64) -> &[u8] {
    let (mut a, mut b) = (itoa::Buffer::new(), itoa::Buffer::new());
    let (ms, seq) = (a.format(ms).as_bytes(), b.format(seq).as_bytes());
    let n = ms.len() + 1 + seq.len();
    buf[..ms.len()].copy_from_slice(ms);
    buf[ms.len()] = b'-';
    buf[ms.len() + 1..n].copy_from_slice(seq);
    &buf[..n]
}

#[cfg(test)]
mod tests {
    #[test]
    fn stream_ids_are_ms_dash_seq() {
        let mut buf = [0u8; 41];
        assert_eq!(super::stream_id(&mut buf, 1_795_917_450_740, 2), b"1795917450740-2");
        assert_eq!(
            super::stream_id(&mut buf, u64::MAX, u64::MAX),
            b"18446744073709551615-18446744073709551615"
        );
    }
}

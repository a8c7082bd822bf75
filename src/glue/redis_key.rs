//! The one wrapper for a Redis key the module opens: read or write mode, closed on drop.
//! Every read and write of a key set or a derived key goes through it.
//!
//! Writes go through Redis's low-level key API and are propagated to replicas and the AOF
//! as their exact effect (XADD with its real ID and resulting length, SET with an absolute
//! expiry, HSET with the resulting value), so a replica never re-decides anything and no
//! replicated effect can fail there. A key is opened for writing only when the command is
//! about to write it: closing a key opened for writing touches WATCH and client tracking.

use std::ffi::{c_void, CStr};
use std::os::raw::c_int;
use std::ptr::{self, NonNull};

use redis_module::raw::{self, KeyType, RedisModuleKey, RedisModuleString};
use redis_module::{Context, RedisString};

use super::args::Arg;
use super::strings::{self, fixed};
use crate::datatype::Stored;
use crate::tracking;
use redis_jwks_core::audit::{Fields, Value};
use redis_jwks_core::error::{Error, Result, Shown};

use super::ffi::api;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A read by the command: counts as an access (LRU/LFU, keyspace hits).
    Read,
    /// A read for the module's own bookkeeping: leaves the key's access time alone.
    Peek,
    Write,
}

/// A key's name: the client's own argument, or one the module made.
enum KeyName {
    Arg(*mut RedisModuleString),
    Made(RedisString),
}

impl KeyName {
    fn ptr(&self) -> *mut RedisModuleString {
        match self {
            KeyName::Arg(p) => *p,
            KeyName::Made(s) => s.inner,
        }
    }
}

pub(crate) struct Key {
    ctx: *mut raw::RedisModuleCtx,
    /// Null when a key opened for reading does not exist.
    ptr: *mut RedisModuleKey,
    name: KeyName,
    mode: Mode,
}

impl Key {
    fn open_name(ctx: &Context, name: KeyName, mode: Mode) -> Result<Key> {
        let open = api!(RedisModule_OpenKey)?;
        let flags = match mode {
            Mode::Read => raw::REDISMODULE_READ,
            Mode::Peek => raw::REDISMODULE_READ | raw::REDISMODULE_OPEN_KEY_NOTOUCH,
            Mode::Write => raw::REDISMODULE_READ | raw::REDISMODULE_WRITE,
        };
        // SAFETY: a live context and a live string; the key is closed in `drop`.
        let ptr = unsafe { open(ctx.ctx, name.ptr(), flags as c_int) }.cast::<RedisModuleKey>();
        if ptr.is_null() && mode == Mode::Write {
            return Err(Error::Api("RedisModule_OpenKey (write)"));
        }
        Ok(Key {
            ctx: ctx.ctx,
            ptr,
            name,
            mode,
        })
    }

    /// Opens the key named by a command argument (no copy of the name).
    pub(crate) fn arg(ctx: &Context, name: Arg<'_>, mode: Mode) -> Result<Key> {
        Key::open_name(ctx, KeyName::Arg(name.as_ptr()), mode)
    }

    /// Opens the key with this name.
    pub(crate) fn named(ctx: &Context, name: &[u8], mode: Mode) -> Result<Key> {
        let name = RedisString::create_from_slice(ctx.ctx, name);
        Key::open_name(ctx, KeyName::Made(name), mode)
    }

    pub(crate) fn name(&self) -> &[u8] {
        RedisString::string_as_slice(self.name.ptr())
    }

    pub(crate) fn kind(&self) -> KeyType {
        if self.ptr.is_null() {
            return KeyType::Empty;
        }
        match api!(RedisModule_KeyType) {
            // SAFETY: an open key.
            Ok(f) => KeyType::from(unsafe { f(self.ptr) }),
            Err(_) => KeyType::Empty,
        }
    }

    pub(crate) fn exists(&self) -> bool {
        self.kind() != KeyType::Empty
    }

    /// Refuses a key that holds something other than `wanted` (or nothing).
    pub(crate) fn require_type(&self, wanted: KeyType, what: &'static str) -> Result<()> {
        match self.kind() {
            KeyType::Empty => Ok(()),
            kind if kind == wanted => Ok(()),
            _ => Err(Error::WrongType(Shown::bytes(self.name()), what)),
        }
    }

    /// The key set stored here: `None` for no key, `WRONGTYPE` for another type. The
    /// reference lives as long as the key is open and the command runs.
    /// The key set at this key, or `NOKEYSET` naming the key.
    pub(crate) fn existing_keyset(&self) -> Result<&Stored> {
        self.keyset()?
            .ok_or_else(|| Error::NoKeySet(Shown::bytes(self.name())))
    }

    pub(crate) fn keyset(&self) -> Result<Option<&Stored>> {
        if self.ptr.is_null() {
            return Ok(None);
        }
        let get_type = api!(RedisModule_ModuleTypeGetType)?;
        // NULL unless the key holds a module value: one call for the common case.
        // SAFETY: an open key.
        let found = unsafe { get_type(self.ptr) };
        if !found.is_null() && found == crate::datatype::raw_type() {
            let get_value = api!(RedisModule_ModuleTypeGetValue)?;
            // The value lives while the key is open and unchanged.
            // SAFETY: a value of our type, which is a Stored.
            let stored = unsafe { get_value(self.ptr).cast::<Stored>().as_ref() };
            if let Some(s) = stored {
                // Renamed or moved here since it was registered: register it here.
                if s.take_moved() {
                    let db = db(&Context::new(self.ctx));
                    tracking::placed(db, self.name(), s.set());
                }
            }
            return Ok(stored);
        }
        match self.kind() {
            KeyType::Empty => Ok(None),
            _ => Err(Error::WrongType(
                Shown::bytes(self.name()),
                "not a JWKS key set",
            )),
        }
    }

    /// The bytes of a string key, or `None` for no key or another type.
    pub(crate) fn string(&self) -> Option<&[u8]> {
        if self.kind() != KeyType::String {
            return None;
        }
        let dma = api!(RedisModule_StringDMA).ok()?;
        let mut len = 0;
        // SAFETY: an open string key; READ access only; the bytes live while it is open.
        let ptr = unsafe { dma(self.ptr, &mut len, raw::REDISMODULE_READ as c_int) };
        if ptr.is_null() {
            return None;
        }
        // SAFETY: `len` bytes at `ptr`, valid until the key is closed or written.
        Some(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
    }

    /// Milliseconds to live, as PTTL: -2 for no key, -1 for no expiry.
    pub(crate) fn pttl(&self) -> i64 {
        if !self.exists() {
            return -2;
        }
        match api!(RedisModule_GetExpire) {
            // SAFETY: an open key.
            Ok(f) => match unsafe { f(self.ptr) } {
                t if t < 0 => -1,
                t => t,
            },
            Err(_) => -1,
        }
    }

    /// Number of elements (stream entries, hash fields), 0 for no key.
    pub(crate) fn len(&self) -> i64 {
        if !self.exists() {
            return 0;
        }
        match api!(RedisModule_ValueLength) {
            // SAFETY: an open key.
            Ok(f) => i64::try_from(unsafe { f(self.ptr) }).unwrap_or(i64::MAX),
            Err(_) => 0,
        }
    }

    /// An integer field of a hash key; 0 when missing or not an integer.
    pub(crate) fn hash_int(&self, field: &'static str) -> i64 {
        if self.kind() != KeyType::Hash {
            return 0;
        }
        let Ok(get) = api!(RedisModule_HashGet) else {
            return 0;
        };
        let mut value: *mut RedisModuleString = ptr::null_mut();
        // SAFETY: an open hash key; one (field, out) pair and the NULL terminator.
        unsafe {
            get(
                self.ptr,
                raw::REDISMODULE_HASH_NONE as c_int,
                fixed(field),
                &mut value as *mut *mut RedisModuleString,
                ptr::null_mut::<c_void>(),
            )
        };
        let Some(value) = NonNull::new(value) else {
            return 0;
        };
        // HashGet hands over a new string: take ownership, freed on drop.
        let value = RedisString::from_redis_module_string(self.ctx, value.as_ptr());
        std::str::from_utf8(value.as_slice())
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0)
    }

    // ---------------------------------------------------------------- writes

    fn writable(&self) -> Result<()> {
        if self.mode == Mode::Write && !self.ptr.is_null() {
            Ok(())
        } else {
            Err(Error::Api("a key opened for reading was written"))
        }
    }

    fn string_of(&self, bytes: &[u8]) -> RedisString {
        RedisString::create_from_slice(self.ctx, bytes)
    }

    /// Tells keyspace-event subscribers, marked as the module's own write.
    fn notify(&self, class: i32, event: &CStr) {
        if let Ok(f) = api!(RedisModule_NotifyKeyspaceEvent) {
            // SAFETY: a live context, a static event name and the key's name.
            tracking::ours(|| unsafe { f(self.ctx, class, event.as_ptr(), self.name.ptr()) });
        }
    }

    /// Propagates `cmd` with `argv` (whose first element is this key's name).
    fn replicate(&self, cmd: &CStr, argv: &mut [*mut RedisModuleString]) {
        // SAFETY: the key's context and its strings are alive while the key is open.
        unsafe { replicate_raw(self.ctx, cmd, argv) };
    }

    /// Stores a key set here, replacing what was there. A key set already here is replaced
    /// in place, so the key keeps what Redis keeps with it (its TTL, LRU/LFU data): an
    /// operator's `EXPIRE` on a key set outlives a rotation, as it outlives an `HSET` on a
    /// hash. Closing the key (opened for writing) still tells WATCH and client tracking.
    pub(crate) fn set_keyset(&self, value: Stored) -> Result<()> {
        self.writable()?;
        let raw_type = crate::datatype::raw_type();
        let replacing = self.keyset()?.is_some();
        let value = Box::into_raw(Box::new(value)).cast::<c_void>();
        let status = if replacing {
            let replace = api!(RedisModule_ModuleTypeReplaceValue)?;
            let mut old: *mut c_void = ptr::null_mut();
            // Redis owns `value` from here and hands the old one back to us.
            // SAFETY: an open writable key holding a value of our type.
            let status = unsafe { replace(self.ptr, raw_type, value, &mut old) };
            if status == raw::REDISMODULE_OK as c_int && !old.is_null() {
                // SAFETY: the old value, a Stored of ours, no longer reachable from Redis.
                drop(unsafe { Box::from_raw(old.cast::<Stored>()) });
            }
            status
        } else {
            let set = api!(RedisModule_ModuleTypeSetValue)?;
            // Replacing a value of another type unlinks it: marked as our own write.
            tracking::ours(|| {
                // Redis owns the value from here (freed through the type's `free`).
                // SAFETY: an open writable key and a value of our type.
                unsafe { set(self.ptr, raw_type, value) }
            })
        };
        if status != raw::REDISMODULE_OK as c_int {
            // SAFETY: Redis did not take the value.
            drop(unsafe { Box::from_raw(value.cast::<Stored>()) });
            return Err(Error::Api("RedisModule_ModuleTypeSetValue"));
        }
        Ok(())
    }

    /// Deletes the key; whether it existed. Propagated as DEL only when it did, as Redis does.
    pub(crate) fn delete(&self) -> Result<bool> {
        if !self.exists() {
            return Ok(false);
        }
        self.writable()?;
        let delete = api!(RedisModule_DeleteKey)?;
        // SAFETY: an open writable key.
        tracking::ours(|| unsafe { delete(self.ptr) });
        self.replicate(c"DEL", &mut [self.name.ptr()]);
        self.notify(raw::REDISMODULE_NOTIFY_GENERIC, c"del");
        Ok(true)
    }

    /// Deletes the key in a snapshot's child process only: nothing propagated or notified
    /// (the child's copy of the dataset becomes the file, then the child exits).
    pub(crate) fn delete_in_snapshot(&self) -> Result<()> {
        self.writable()?;
        let delete = api!(RedisModule_DeleteKey)?;
        // SAFETY: an open writable key.
        tracking::ours(|| unsafe { delete(self.ptr) });
        Ok(())
    }

    /// SET value with an absolute expiry, propagated as `SET key value PXAT <ms>`.
    pub(crate) fn set_string_until(&self, value: &[u8], at_ms: i64) -> Result<()> {
        self.writable()?;
        let (set, expire) = (
            api!(RedisModule_StringSet)?,
            api!(RedisModule_SetAbsExpire)?,
        );
        let value = self.string_of(value);
        // SAFETY: an open writable key and a live string.
        if tracking::ours(|| unsafe { set(self.ptr, value.inner) }) != raw::REDISMODULE_OK as c_int
        {
            return Err(Error::Api("RedisModule_StringSet"));
        }
        // SAFETY: an open writable key now holding a string.
        if unsafe { expire(self.ptr, at_ms) } != raw::REDISMODULE_OK as c_int {
            return Err(Error::Api("RedisModule_SetAbsExpire"));
        }
        let at = self.string_of(itoa::Buffer::new().format(at_ms).as_bytes());
        self.replicate(
            c"SET",
            &mut [self.name.ptr(), value.inner, fixed("PXAT"), at.inner],
        );
        self.notify(raw::REDISMODULE_NOTIFY_STRING, c"set");
        self.notify(raw::REDISMODULE_NOTIFY_GENERIC, c"expire");
        Ok(())
    }

    /// Adds 1 to an integer field of a hash (created if missing), saturating at i64::MAX.
    /// Propagated as `HSET key field <result>`: an absolute value cannot fail on a replica
    /// the way an increment past i64::MAX would.
    pub(crate) fn hash_incr(&self, field: &'static str) -> Result<i64> {
        self.writable()?;
        let set = api!(RedisModule_HashSet)?;
        let after = self.hash_int(field).saturating_add(1);
        let value = self.string_of(itoa::Buffer::new().format(after).as_bytes());
        let name = fixed(field);
        // SAFETY: an open writable key (a hash or empty); one (field, value) pair and NULL.
        unsafe {
            set(
                self.ptr,
                raw::REDISMODULE_HASH_NONE as c_int,
                name,
                value.inner,
                ptr::null_mut::<c_void>(),
            )
        };
        self.replicate(c"HSET", &mut [self.name.ptr(), name, value.inner]);
        self.notify(raw::REDISMODULE_NOTIFY_HASH, c"hset");
        Ok(after)
    }

    /// XADD with an automatic ID, trimmed to about `maxlen` entries. Propagated as
    /// `XADD key MAXLEN = <resulting length> <id> ...`, exactly as Redis propagates an
    /// approximate trim, so replicas keep the very same entries. Fails (writing nothing)
    /// when the stream's last ID is at the maximum.
    pub(crate) fn xadd(&self, fields: &Fields, maxlen: i64) -> Result<()> {
        self.writable()?;
        let (add, trim, len) = (
            api!(RedisModule_StreamAdd)?,
            api!(RedisModule_StreamTrimByLength)?,
            api!(RedisModule_ValueLength)?,
        );
        // The propagated command's arguments; the entry's fields are its tail.
        const HEAD: usize = 5;
        let mut argv: Vec<*mut RedisModuleString> = Vec::with_capacity(HEAD + 2 * fields.len());
        let mut owned: Vec<RedisString> = Vec::with_capacity(fields.len());
        strings::with(|t| {
            argv.extend([
                self.name.ptr(),
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
        // `fields.len()` name/value pairs start at HEAD in `argv`, all live strings.
        // SAFETY: an open writable key (a stream or empty) and the pairs above.
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
            return Err(Error::AuditFull(Shown::bytes(self.name())));
        }
        // SAFETY: an open writable stream key.
        unsafe {
            trim(
                self.ptr,
                raw::REDISMODULE_STREAM_TRIM_APPROX as c_int,
                maxlen,
            )
        };
        // SAFETY: as above.
        let length = unsafe { len(self.ptr) };
        let length = self.string_of(itoa::Buffer::new().format(length).as_bytes());
        let mut text = [0u8; 41];
        let id = self.string_of(stream_id(&mut text, id.ms, id.seq));
        argv[3] = length.inner;
        argv[4] = id.inner;
        self.replicate(c"XADD", &mut argv);
        self.notify(raw::REDISMODULE_NOTIFY_STREAM, c"xadd");
        Ok(())
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        if self.ptr.is_null() {
            return;
        }
        if let Ok(close) = api!(RedisModule_CloseKey) {
            // SAFETY: opened in `open_name`, closed once.
            unsafe { close(self.ptr) };
        }
    }
}

/// Publishes `message` on the sharded channel `channel`, as SPUBLISH would: in a cluster
/// Redis sends it to the shard's nodes; standalone, the command is propagated to replicas
/// (not the AOF) so their subscribers get it too, as Redis does for SPUBLISH.
pub(crate) fn publish(ctx: &Context, channel: &[u8], message: &str) -> Result<()> {
    let publish = api!(RedisModule_PublishMessageShard)?;
    let channel = RedisString::create_from_slice(ctx.ctx, channel);
    let message = RedisString::create_from_slice(ctx.ctx, message.as_bytes());
    // SAFETY: a live context and two live strings.
    unsafe { publish(ctx.ctx, channel.inner, message.inner) };
    if !ctx
        .get_flags()
        .contains(redis_module::ContextFlags::CLUSTER)
    {
        let replicate = api!(RedisModule_Replicate)?;
        let mut argv = [channel.inner, message.inner];
        // SAFETY: "vA" takes an array of live strings and keeps it out of the AOF.
        unsafe {
            replicate(
                ctx.ctx,
                c"SPUBLISH".as_ptr(),
                c"vA".as_ptr(),
                argv.as_mut_ptr(),
                argv.len(),
            )
        };
    }
    Ok(())
}

/// Propagates a command to replicas and the AOF as part of the running command.
/// Propagates `cmd args...` to replicas and the AOF, as the running command's effect.
pub(crate) fn replicate<const N: usize>(ctx: &Context, cmd: &CStr, args: [&RedisString; N]) {
    let mut argv = args.map(|s| s.inner);
    // SAFETY: a live context, and strings borrowed for the call.
    unsafe { replicate_raw(ctx.ctx, cmd, &mut argv) };
}

/// # Safety
/// `ctx` must be a live context and `argv` live strings.
unsafe fn replicate_raw(
    ctx: *mut raw::RedisModuleCtx,
    cmd: &CStr,
    argv: &mut [*mut RedisModuleString],
) {
    let Ok(f) = api!(RedisModule_Replicate) else {
        return;
    };
    // SAFETY: "v" takes an array of `argv.len()` live strings.
    unsafe {
        f(
            ctx,
            cmd.as_ptr(),
            c"v".as_ptr(),
            argv.as_mut_ptr(),
            argv.len(),
        )
    };
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

/// The db the context has selected.
pub(crate) fn db(ctx: &Context) -> i32 {
    match api!(RedisModule_GetSelectedDb) {
        // SAFETY: a live context.
        Ok(f) => unsafe { f(ctx.ctx) },
        Err(_) => 0,
    }
}

/// Selects db `db` on the context: false if the server refuses it.
pub(crate) fn select_db(ctx: &Context, db: i32) -> bool {
    match api!(RedisModule_SelectDb) {
        // SAFETY: a live context.
        Ok(f) => (unsafe { f(ctx.ctx, db) }) == raw::REDISMODULE_OK as c_int,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stream_ids_are_ms_dash_seq() {
        let mut buf = [0u8; 41];
        assert_eq!(
            super::stream_id(&mut buf, 1_795_917_450_740, 2),
            b"1795917450740-2"
        );
        assert_eq!(
            super::stream_id(&mut buf, u64::MAX, u64::MAX),
            b"18446744073709551615-18446744073709551615"
        );
    }
}

//! Replies written straight into Redis's output, for lists too long to build as a
//! `RedisValue` first (JWKS.STATS with tens of thousands of key sets), and the module's
//! `INFO` section.

use std::ffi::CString;
use std::os::raw::{c_char, c_int, c_long};

use redis_module::raw::{self, RedisModuleCtx, RedisModuleInfoCtx};
use redis_module::{Context, InfoContext, RedisValue};

use super::ffi::api;
use redis_jwks_core::error::Result;

type AddString = unsafe extern "C" fn(*mut RedisModuleCtx, *const c_char, usize) -> c_int;
type SetLength = unsafe extern "C" fn(*mut RedisModuleCtx, c_long);

/// A flat array reply of strings whose length is set when it is finished.
pub(crate) struct StreamedArray<'c> {
    ctx: &'c Context,
    string: AddString,
    set_len: SetLength,
    len: c_long,
}

impl<'c> StreamedArray<'c> {
    /// Opens the array as the command's reply; [`StreamedArray::finish`] closes it.
    pub(crate) fn open(ctx: &'c Context) -> Result<StreamedArray<'c>> {
        let (array, string, set_len) = (
            api!(RedisModule_ReplyWithArray)?,
            api!(RedisModule_ReplyWithStringBuffer)?,
            api!(RedisModule_ReplySetArrayLength)?,
        );
        // SAFETY: a command context; the length is set by `finish`.
        unsafe { array(ctx.ctx, raw::REDISMODULE_POSTPONED_LEN as c_long) };
        Ok(StreamedArray {
            ctx,
            string,
            set_len,
            len: 0,
        })
    }

    pub(crate) fn push(&mut self, text: &str) {
        // SAFETY: a command context and a buffer alive for the call.
        unsafe { (self.string)(self.ctx.ctx, text.as_ptr().cast(), text.len()) };
        self.len += 1;
    }

    /// Sets the array's length; the reply is sent, so the handler returns no other.
    pub(crate) fn finish(self) -> RedisValue {
        // SAFETY: the postponed array `open` started.
        unsafe { (self.set_len)(self.ctx.ctx, self.len) };
        RedisValue::NoReply
    }
}

type AddField =
    unsafe extern "C" fn(*mut RedisModuleInfoCtx, *const c_char, *const c_char) -> c_int;

/// The module's own section of an `INFO` reply (fields prefixed with the module's name).
pub(crate) struct InfoSection<'i> {
    info: &'i InfoContext,
    field: AddField,
}

impl<'i> InfoSection<'i> {
    /// Starts the section; `None` if the server refuses it or lacks the API.
    pub(crate) fn open(info: &'i InfoContext) -> Option<InfoSection<'i>> {
        let (section, field) = (
            api!(RedisModule_InfoAddSection).ok()?,
            api!(RedisModule_InfoAddFieldCString).ok()?,
        );
        // SAFETY: the INFO context of this call; an empty name is the module's own section.
        if unsafe { section(info.ctx, c"".as_ptr()) } != raw::REDISMODULE_OK as c_int {
            return None;
        }
        Some(InfoSection { info, field })
    }

    /// Adds a field (skipped if either text holds a NUL).
    pub(crate) fn field(&self, name: &str, value: &str) {
        if let (Ok(name), Ok(value)) = (CString::new(name), CString::new(value)) {
            // SAFETY: the INFO context of this call and two C strings.
            unsafe { (self.field)(self.info.ctx, name.as_ptr(), value.as_ptr()) };
        }
    }
}

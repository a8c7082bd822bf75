//! Who a command runs as: the ACL user it is checked against and audited as.
//!
//! A command's arguments are in `args`, its entry point in `dispatch`, the clock in
//! `clock`, the selected db in `redis_key`; they are re-exported here under their old
//! paths (`glue::call::{Args, dispatch, Handler, now_ms, db}`).

use std::cell::OnceCell;
use std::os::raw::c_int;
use std::ptr::NonNull;

use redis_module::raw::{self, RedisModuleUser};
use redis_module::{Context, ContextFlags, RedisString};

pub(crate) use super::args::Args;
pub(crate) use super::clock::now_ms;
pub(crate) use super::dispatch::{dispatch, Handler};
use super::redis_key::api;
pub(crate) use super::redis_key::db;
use redis_jwks_core::error::{Access, Error, Result, Shown};

/// Who a command runs as, for ACL checks on the keys the module uses besides the one the
/// command names (Redis checks that one itself), and for the audit trail.
pub(crate) struct Caller<'c> {
    ctx: &'c Context,
    /// The ACL user, fetched on first use; `None` inside: unrestricted (replication, AOF,
    /// the lifecycle schedule).
    user: OnceCell<Option<(RedisString, Option<NonNull<RedisModuleUser>>)>>,
    /// Who an unrestricted caller is, for the audit trail.
    unrestricted: &'static str,
}

impl<'c> Caller<'c> {
    pub(crate) fn new(ctx: &'c Context) -> Caller<'c> {
        Caller {
            ctx,
            user: OnceCell::new(),
            unrestricted: "(replication)",
        }
    }

    /// The module's own lifecycle schedule: no ACL user, named `(schedule)` in the audit.
    pub(crate) fn schedule(ctx: &'c Context) -> Caller<'c> {
        let user = OnceCell::new();
        let _ = user.set(None);
        Caller {
            ctx,
            user,
            unrestricted: "(schedule)",
        }
    }

    fn user(&self) -> Option<&(RedisString, Option<NonNull<RedisModuleUser>>)> {
        self.user
            .get_or_init(|| {
                // The primary's link and the AOF loader run as no user: nothing to check.
                let flags = self.ctx.get_flags();
                if flags.intersects(ContextFlags::REPLICATED | ContextFlags::LOADING) {
                    return None;
                }
                let (name_of, user_of) = (
                    api!(RedisModule_GetCurrentUserName).ok()?,
                    api!(RedisModule_GetModuleUserFromUserName).ok()?,
                );
                // SAFETY: a live command context with a client (not a replication one).
                let name = unsafe { name_of(self.ctx.ctx) };
                if name.is_null() {
                    return None;
                }
                let name = RedisString::from_redis_module_string(self.ctx.ctx, name);
                // SAFETY: a live string; the user is freed in `drop`.
                let user = NonNull::new(unsafe { user_of(name.inner) });
                Some((name, user))
            })
            .as_ref()
    }

    /// The user's name for the audit trail.
    pub(crate) fn name(&self) -> String {
        match self.user() {
            Some((name, _)) => String::from_utf8_lossy(name.as_slice()).into_owned(),
            None => self.unrestricted.into(),
        }
    }

    /// Refuses (`NOPERM`, naming the key) if the user may not `access` the key `name`.
    pub(crate) fn check(&self, name: &[u8], access: Access) -> Result<()> {
        let Some((user_name, user)) = self.user() else {
            return Ok(());
        };
        let denied = || Error::NoPerm {
            user: Shown::bytes(user_name.as_slice()),
            access,
            key: Shown::bytes(name),
        };
        // A user deleted or disabled while its client stays connected may do nothing.
        let user = user.ok_or_else(denied)?;
        let allowed = match access {
            Access::Publish => {
                let check = api!(RedisModule_ACLCheckChannelPermissions)?;
                let channel = RedisString::create_from_slice(self.ctx.ctx, name);
                let flags = raw::REDISMODULE_CMD_CHANNEL_PUBLISH as c_int;
                // SAFETY: a live user and string.
                unsafe { check(user.as_ptr(), channel.inner, flags) }
            }
            Access::Read | Access::Write => {
                let check = api!(RedisModule_ACLCheckKeyPermissions)?;
                let flags = match access {
                    Access::Read => raw::REDISMODULE_CMD_KEY_ACCESS,
                    _ => {
                        raw::REDISMODULE_CMD_KEY_INSERT
                            | raw::REDISMODULE_CMD_KEY_UPDATE
                            | raw::REDISMODULE_CMD_KEY_DELETE
                    }
                };
                let key = RedisString::create_from_slice(self.ctx.ctx, name);
                // SAFETY: a live user and string.
                unsafe { check(user.as_ptr(), key.inner, flags as c_int) }
            }
        };
        if allowed == raw::REDISMODULE_OK as c_int {
            Ok(())
        } else {
            Err(denied())
        }
    }
}

impl Drop for Caller<'_> {
    fn drop(&mut self) {
        if let Some(Some((_, Some(user)))) = self.user.get() {
            if let Ok(free) = api!(RedisModule_FreeModuleUser) {
                // SAFETY: made by GetModuleUserFromUserName, freed once.
                unsafe { free(user.as_ptr()) };
            }
        }
    }
}

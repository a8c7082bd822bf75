//! Who a command runs as: the ACL user it is checked against and audited as.

use std::cell::OnceCell;
use std::ptr::NonNull;

use redis_module::raw::{self, RedisModuleUser};
use redis_module::{Context, ContextFlags, RedisString};

use super::acl::{self, Argv, Scope};
use super::ffi::api;
use redis_jwks_core::audit;
use redis_jwks_core::error::{Access, Error, Result, Shown};

/// Who a command runs as, for ACL checks on the keys the module uses besides the one the
/// command names (Redis checks that one itself), and for the audit trail.
pub(crate) struct Caller<'c> {
    ctx: &'c Context,
    /// The ACL user, fetched on first use; `None` inside: unrestricted (replication, AOF,
    /// the lifecycle schedule).
    user: OnceCell<Option<(RedisString, Option<NonNull<RedisModuleUser>>)>>,
    /// The running command's arguments (`None` outside a command).
    argv: Option<Argv>,
    /// Which of the user's selectors allow the command and every access checked so far
    /// (see `acl`), worked out on the first access Redis's own check allows.
    scope: OnceCell<Scope>,
    /// Who an unrestricted caller is, for the audit trail.
    unrestricted: &'static str,
}

impl<'c> Caller<'c> {
    pub(crate) fn new(ctx: &'c Context) -> Caller<'c> {
        Caller {
            ctx,
            user: OnceCell::new(),
            argv: super::dispatch::running(),
            scope: OnceCell::new(),
            unrestricted: "(replication)",
        }
    }

    /// The module's own lifecycle schedule: no ACL user, named `(schedule)` in the audit.
    pub(crate) fn schedule(ctx: &'c Context) -> Caller<'c> {
        Caller::module(ctx, "(schedule)")
    }

    /// The module's clean-up after another command removed or replaced a key set: no ACL
    /// user, named `(upkeep)` in the audit.
    pub(crate) fn upkeep(ctx: &'c Context) -> Caller<'c> {
        Caller::module(ctx, "(upkeep)")
    }

    fn module(ctx: &'c Context, who: &'static str) -> Caller<'c> {
        let user = OnceCell::new();
        let _ = user.set(None);
        Caller {
            ctx,
            user,
            argv: None,
            scope: OnceCell::new(),
            unrestricted: who,
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
            Some((name, _)) => audit::user_name(name.as_slice()),
            None => self.unrestricted.into(),
        }
    }

    /// Refuses (`NOPERM`, naming the key) unless the selector of the user's ACL that allows
    /// the running command also allows it to `access` the key `name`, together with every
    /// access checked before on this caller.
    pub(crate) fn check(&self, name: &[u8], access: Access) -> Result<()> {
        let Some((user_name, user)) = self.user() else {
            return Ok(());
        };
        let denied = || Error::NoPerm {
            user: Shown::bytes(user_name.as_slice()),
            access,
            key: Shown::bytes(name),
        };
        // A user deleted while its client stays connected may do nothing.
        let user = user.ok_or_else(denied)?;
        if acl::allowed(self.ctx, user, &self.scope, self.argv, name, access)? {
            Ok(())
        } else {
            self.log_denial(user, name, access);
            Err(denied())
        }
    }

    /// Adds the refusal to `ACL LOG`, as Redis does for its own key and channel checks, so
    /// an operator sees the module's NOPERMs where they look for the others.
    fn log_denial(&self, user: NonNull<RedisModuleUser>, name: &[u8], access: Access) {
        let Ok(add) = api!(RedisModule_ACLAddLogEntry) else {
            return;
        };
        let reason = match access {
            Access::Publish => raw::RedisModuleACLLogEntryReason_REDISMODULE_ACL_LOG_CHANNEL,
            Access::Read | Access::Write => {
                raw::RedisModuleACLLogEntryReason_REDISMODULE_ACL_LOG_KEY
            }
        };
        let object = RedisString::create_from_slice(self.ctx.ctx, name);
        // SAFETY: a command's context with its client, a live module user and string.
        unsafe { add(self.ctx.ctx, user.as_ptr(), object.inner, reason) };
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

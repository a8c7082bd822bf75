//! One command invocation: its arguments (borrowed from Redis, never copied), the ACL user
//! it runs as, and how its result becomes a reply.

use std::cell::{Cell, OnceCell};
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::time::{SystemTime, UNIX_EPOCH};

use redis_module::raw::{RedisModuleCtx, RedisModuleString, RedisModuleUser};
use redis_module::{Context, ContextFlags, RedisError, RedisResult, RedisString, RedisValue};
use smallvec::SmallVec;

use super::acl::{self, Argv, Scope};
use super::key::api;
use crate::error::{Access, Error, Result, Shown};
use crate::observe::log;

/// A command's arguments as Redis passed them: `args.get(0)` is the command name.
#[derive(Clone, Copy)]
pub struct Args<'a> {
    raw: &'a [*mut RedisModuleString],
}

impl<'a> Args<'a> {
    /// # Safety
    /// `argv` must point to `argc` live strings that outlive `'a` (a command's arguments).
    pub unsafe fn new(argv: *mut *mut RedisModuleString, argc: c_int) -> Args<'a> {
        let raw = match usize::try_from(argc) {
            // SAFETY: the caller's promise.
            Ok(n) if !argv.is_null() => unsafe { std::slice::from_raw_parts(argv, n) },
            _ => &[],
        };
        Args { raw }
    }

    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// The bytes of argument `i` (empty if there is none).
    pub fn bytes(&self, i: usize) -> &'a [u8] {
        self.raw
            .get(i)
            .map_or(&[][..], |&s| RedisString::string_as_slice(s))
    }

    /// The Redis string of argument `i`, to open a key without copying its name.
    pub fn string(&self, i: usize) -> Option<*mut RedisModuleString> {
        self.raw.get(i).copied()
    }

    /// Arguments `from..` as byte slices.
    pub fn rest(&self, from: usize) -> SmallVec<[&'a [u8]; 8]> {
        (from..self.raw.len()).map(|i| self.bytes(i)).collect()
    }
}

/// A command's handler: arguments in, reply out.
pub type Handler = fn(&Context, &Args) -> Result<RedisValue>;

/// The command entry point behind every registered command: arguments borrowed, the
/// handler behind a panic guard (a panic unwinding into Redis would abort the server), the
/// result sent as the reply.
///
/// # Safety
/// Called by Redis with a command's context and arguments.
pub unsafe fn dispatch(
    ctx: *mut RedisModuleCtx,
    argv: *mut *mut RedisModuleString,
    argc: c_int,
    handler: Handler,
) -> c_int {
    let context = Context::new(ctx);
    // SAFETY: the arguments of the running command.
    let args = unsafe { Args::new(argv, argc) };
    let _running = Running::enter(Argv { ptr: argv, len: argc });
    let result: RedisResult = match catch_unwind(AssertUnwindSafe(|| handler(&context, &args))) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(reply_error(e)),
        Err(_) => {
            log::internal_error_in(args.bytes(0));
            Err(reply_error(Error::Internal))
        }
    };
    context.reply(result) as c_int
}

thread_local! {
    /// The arguments of the module command running on this thread (Redis runs commands on
    /// its main thread), for the ACL check of the selector that allows it.
    static RUNNING: Cell<Option<Argv>> = const { Cell::new(None) };
}

/// Marks a command's arguments as the running command's until dropped; restores the outer
/// command's (a module command called from another through `RedisModule_Call`).
struct Running {
    outer: Option<Argv>,
}

impl Running {
    fn enter(argv: Argv) -> Running {
        Running {
            outer: RUNNING.with(|r| r.replace(Some(argv))),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.with(|r| r.set(self.outer));
    }
}

/// Error text goes into a C string and a RESP line: no NUL, CR or LF.
fn reply_error(e: Error) -> RedisError {
    let text: String = e
        .to_string()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    RedisError::String(text)
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The db the context has selected.
pub fn db(ctx: &Context) -> i32 {
    match api!(RedisModule_GetSelectedDb) {
        // SAFETY: a live context.
        Ok(f) => unsafe { f(ctx.ctx) },
        Err(_) => 0,
    }
}

/// Who a command runs as, for ACL checks on the keys the module uses besides the one the
/// command names (Redis checks that one itself), and for the audit trail.
pub struct Caller<'c> {
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
    pub fn new(ctx: &'c Context) -> Caller<'c> {
        Caller {
            ctx,
            user: OnceCell::new(),
            argv: RUNNING.with(Cell::get),
            scope: OnceCell::new(),
            unrestricted: "(replication)",
        }
    }

    /// The module's own lifecycle schedule: no ACL user, named `(schedule)` in the audit.
    pub fn schedule(ctx: &'c Context) -> Caller<'c> {
        let user = OnceCell::new();
        let _ = user.set(None);
        Caller {
            ctx,
            user,
            argv: None,
            scope: OnceCell::new(),
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
    pub fn name(&self) -> String {
        match self.user() {
            Some((name, _)) => crate::observe::audit::user_name(name.as_slice()),
            None => self.unrestricted.into(),
        }
    }

    /// Refuses (`NOPERM`, naming the key) unless the selector of the user's ACL that allows
    /// the running command also allows it to `access` the key `name`, together with every
    /// access checked before on this caller.
    pub fn check(&self, name: &[u8], access: Access) -> Result<()> {
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

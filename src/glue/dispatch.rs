//! The entry point behind every registered command: arguments borrowed, the handler
//! behind a panic guard, its result sent as the reply.

use std::cell::Cell;
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::raw::{RedisModuleCtx, RedisModuleString};
use redis_module::{Context, RedisError, RedisResult, RedisValue};

use super::acl::Argv;
use super::args::Args;
use crate::observe::log;
use redis_jwks_core::error::{Error, Result};

/// A command's handler: arguments in, reply out.
pub(crate) type Handler = fn(&Context, &Args) -> Result<RedisValue>;

/// The command entry point behind every registered command: arguments borrowed, the
/// handler behind a panic guard (a panic unwinding into Redis would abort the server), the
/// result sent as the reply.
///
/// # Safety
/// Called by Redis with a command's context and arguments.
pub(crate) unsafe fn dispatch(
    ctx: *mut RedisModuleCtx,
    argv: *mut *mut RedisModuleString,
    argc: c_int,
    handler: Handler,
) -> c_int {
    let context = Context::new(ctx);
    // SAFETY: the arguments of the running command.
    let args = unsafe { Args::new(argv, argc) };
    let _running = Running::enter(Argv {
        ptr: argv,
        len: argc,
    });
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

/// The arguments of the module command running on this thread, if any.
pub(super) fn running() -> Option<Argv> {
    RUNNING.with(Cell::get)
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

//! Calling Redis commands from the module. Writes go through `RM_Call` with `!`, so Redis
//! propagates the command as executed (XADD with its real ID and trimming, SET with an
//! absolute expiry): replicas and the AOF get effects, never re-executions.

use redis_module::{CallOptions, CallOptionsBuilder, CallReply, CallResult, Context};

fn replicated() -> CallOptions {
    CallOptionsBuilder::new().replicate().build()
}

/// Runs a write command and propagates it. The error is the text Redis replied with.
pub fn write(ctx: &Context, cmd: &str, args: &[&[u8]]) -> Result<Option<i64>, String> {
    let reply: CallResult = ctx.call_ext(cmd, &replicated(), args);
    match reply {
        Ok(CallReply::I64(n)) => Ok(Some(n.to_i64())),
        Ok(_) => Ok(None),
        Err(e) => Err(e
            .to_utf8_string()
            .unwrap_or_else(|| format!("{cmd} failed"))),
    }
}

//! Writes audit entries and counters through Redis (replicated with the command).

use redis_module::Context;

use super::{audit::Fields, log};
use crate::calls;
use crate::config;

/// `XADD <audit> MAXLEN ~ <n> * field value ...`. A failure here must not undo the
/// rotation it describes, so it is logged and reported, not propagated as an error.
pub fn append(ctx: &Context, audit_key: &[u8], fields: &Fields) -> bool {
    let maxlen = config::audit_maxlen().to_string();
    let mut args: Vec<&[u8]> = Vec::with_capacity(5 + 2 * fields.len());
    args.extend_from_slice(&[audit_key, b"MAXLEN", b"~", maxlen.as_bytes(), b"*"]);
    for (name, value) in fields {
        args.push(name.as_bytes());
        args.push(value.as_bytes());
    }
    match calls::write(ctx, "XADD", &args) {
        Ok(_) => true,
        Err(e) => {
            log::audit_write_failed(ctx, audit_key, &e);
            false
        }
    }
}

pub fn count(ctx: &Context, metrics_key: &[u8], counter: &str) -> bool {
    match calls::write(ctx, "HINCRBY", &[metrics_key, counter.as_bytes(), b"1"]) {
        Ok(_) => true,
        Err(e) => {
            log::audit_write_failed(ctx, metrics_key, &e);
            false
        }
    }
}

//! Redis log lines. Every invalidation at notice (Redis's INFO level), failures at warning.

use redis_module::Context;

use crate::error::Shown;

pub fn invalidated(ctx: &Context, key: &[u8], reason: &str, generation: u64, deleted: bool) {
    ctx.log_notice(&format!(
        "JWKS_CACHE_INVALIDATED key={} reason={} generation={generation} deleted={}",
        Shown::bytes(key),
        Shown::new(reason),
        u8::from(deleted)
    ));
}

pub fn invalidation_failed(ctx: &Context, key: &[u8], reason: &str, generation: u64, error: &str) {
    ctx.log_warning(&format!(
        "JWKS_CACHE_INVALIDATION_FAILED key={} reason={} generation={generation} error={} \
         (the cached JWKS expires within jwks.cache-ttl)",
        Shown::bytes(key),
        Shown::new(reason),
        Shown::new(error)
    ));
}

pub fn rotated(ctx: &Context, key: &[u8], reason: &str, generation: u64, changes: usize) {
    ctx.log_notice(&format!(
        "JWKS_ROTATED key={} reason={} generation={generation} changes={changes}",
        Shown::bytes(key),
        Shown::new(reason)
    ));
}

pub fn audit_write_failed(ctx: &Context, key: &[u8], error: &str) {
    ctx.log_warning(&format!(
        "JWKS audit/counter write failed key={} error={}",
        Shown::bytes(key),
        Shown::new(error)
    ));
}

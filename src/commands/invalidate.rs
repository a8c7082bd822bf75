//! `JWKS.INVALIDATE K [REASON reason]`, and the invalidation step JWKS.ROTATE shares.

use redis_module::{Context, RedisError, RedisResult, RedisString, RedisValue};

use super::{check_derived_types, current_user, debug, now_ms, slices, with_keyset};
use crate::args;
use crate::calls;
use crate::keys::DerivedKeys;
use crate::observe::{audit, log, metrics, record};

pub struct Outcome {
    pub deleted: bool,
    pub error: Option<String>,
}

/// Deletes the cached JWKS, then audits, counts and logs the attempt. A failure is
/// reported in the outcome, never raised: the caller's rotation has already committed and
/// the cache TTL bounds the staleness.
pub fn invalidate(
    ctx: &Context,
    key: &[u8],
    keys: &DerivedKeys,
    actx: &audit::Context,
    kids: &[&str],
) -> Outcome {
    let result = match debug::take_injected_failure() {
        Some(fault) => Err(fault),
        None => calls::write(ctx, "DEL", &[&keys.cache]).map(|n| n == Some(1)),
    };
    match result {
        Ok(deleted) => {
            record::append(ctx, &keys.audit, &audit::invalidated(actx, kids, deleted));
            record::count(ctx, &keys.metrics, metrics::INVALIDATIONS);
            log::invalidated(ctx, key, &actx.reason, actx.generation, deleted);
            Outcome {
                deleted,
                error: None,
            }
        }
        Err(error) => {
            record::append(
                ctx,
                &keys.audit,
                &audit::invalidation_failed(actx, kids, &error),
            );
            record::count(ctx, &keys.metrics, metrics::INVALIDATION_ERRORS);
            log::invalidation_failed(ctx, key, &actx.reason, actx.generation, &error);
            Outcome {
                deleted: false,
                error: Some(error),
            }
        }
    }
}

pub fn run(ctx: &Context, args: &[RedisString]) -> RedisResult {
    let [_, key, rest @ ..] = args else {
        return Err(RedisError::WrongArity);
    };
    let keys = DerivedKeys::for_key(key.as_slice())?;
    let reason = args::parse_invalidate(&slices(rest))?;
    let generation = with_keyset(ctx, key, |set| Ok(set.map_or(0, |s| s.generation())))?;
    check_derived_types(ctx, &keys)?;
    let actx = audit::Context {
        timestamp: audit::timestamp(now_ms()),
        reason,
        generation,
        user: current_user(ctx),
    };
    let outcome = invalidate(ctx, key.as_slice(), &keys, &actx, &[]);
    match outcome.error {
        Some(e) => Err(RedisError::String(format!(
            "ERR cache invalidation failed: {e} (audited; the cached JWKS expires within jwks.cache-ttl)"
        ))),
        None => Ok(RedisValue::Integer(i64::from(outcome.deleted))),
    }
}

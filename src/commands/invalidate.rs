//! `JWKS.INVALIDATE K [REASON reason]`, and the invalidation step JWKS.ROTATE shares.

use redis_module::{Context, RedisError, RedisResult, RedisString, RedisValue};

use super::{current_user, debug, now_ms, open_derived, slices, with_keyset, Derived};
use crate::args;
use crate::keys::DerivedKeys;
use crate::observe::{audit, log, metrics, record};

pub struct Outcome {
    pub deleted: bool,
    pub error: Option<String>,
}

/// Deletes the cached JWKS, then audits, counts and logs the attempt. A failure is
/// reported in the outcome, never raised: the caller's rotation has already committed and
/// the cache TTL bounds the staleness. `kids` are the keys a rotation changed (none for a
/// plain invalidation); its log line stands for the whole rotation.
pub fn invalidate(
    key: &[u8],
    derived: &Derived,
    actx: &audit::Context,
    kids: &[&str],
    changes: usize,
) -> Outcome {
    let result = match debug::take_injected_failure() {
        Some(fault) => Err(fault),
        None => Ok(derived.cache.delete()),
    };
    match result {
        Ok(deleted) => {
            record::append(&derived.audit, &audit::invalidated(actx, kids, deleted));
            record::count(&derived.metrics, metrics::INVALIDATIONS);
            log::invalidated(key, &actx.reason, actx.generation, changes, deleted);
            Outcome {
                deleted,
                error: None,
            }
        }
        Err(error) => {
            record::append(
                &derived.audit,
                &audit::invalidation_failed(actx, kids, &error),
            );
            record::count(&derived.metrics, metrics::INVALIDATION_ERRORS);
            log::invalidation_failed(key, &actx.reason, actx.generation, changes, &error);
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
    let derived = open_derived(ctx, &keys)?;
    let actx = audit::Context {
        timestamp: audit::timestamp(now_ms()),
        reason,
        generation,
        user: current_user(ctx),
    };
    let outcome = invalidate(key.as_slice(), &derived, &actx, &[], 0);
    match outcome.error {
        Some(e) => Err(RedisError::String(format!(
            "ERR cache invalidation failed: {e} (audited; the cached JWKS expires within jwks.cache-ttl)"
        ))),
        None => Ok(RedisValue::Integer(i64::from(outcome.deleted))),
    }
}

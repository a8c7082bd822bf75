//! Applies the lifecycle policy's changes when they fall due (the schedule's runner; the
//! times are kept in `tracking::schedule`). Only a primary applies changes; each is an
//! ordinary change through the write path (audit, cache invalidation, counters, log,
//! replication as effects), stamped with its due time, so changes that fell due while the
//! server was down are applied at start, in order, with their real times. Under CONFIRM, a
//! promotion the verifiers confirm is due when MIN-WAIT ends (at once after the confirming
//! ack, if that has passed) and is stamped with the time it is made.

use redis_module::Context;

use super::{gate, Gate};
use crate::fleets;
use crate::glue::caller::Caller;
use crate::glue::clock::now_ms;
use crate::glue::redis_key::{db, select_db, Key, Mode};
use crate::observe::{log, stats};
use crate::tracking::schedule;
use crate::write::{self, Targets, What, Write};
use redis_jwks_core::counter_names;
use redis_jwks_core::error::Result;
use redis_jwks_core::names;

/// How long to wait before retrying a change that could not be applied (a derived key of
/// the wrong type, say): doubling from 1 s to a minute, so the scheduler neither spins nor
/// fills the log.
const RETRY_MS: i64 = 1000;
const MAX_RETRY_MS: i64 = 60_000;
/// How soon to look again while writes are not allowed (a pause for a failover, OOM).
const HOLD_MS: i64 = 10;

/// Applies every change that is due (on a primary; a replica waits to be promoted), when
/// the server allows writes: during a pause (a failover) or OOM the change waits and is
/// applied right after, once, stamped with its due time.
pub(super) fn run_due(ctx: &Context) {
    match gate(ctx) {
        Gate::Replica => return,
        Gate::Wait => {
            schedule::hold(now_ms().saturating_add(HOLD_MS));
            return;
        }
        Gate::Open => schedule::hold(0),
    }
    let now = now_ms();
    let home = db(ctx);
    for (db, name) in schedule::take_due(now) {
        if !select_db(ctx, db) {
            continue;
        }
        match apply(ctx, db, &name, now) {
            Ok(()) => schedule::succeeded(db, &name),
            Err(e) => {
                let attempt = schedule::failed(db, &name);
                let delay = RETRY_MS
                    .saturating_mul(1i64 << attempt.saturating_sub(1).min(6))
                    .min(MAX_RETRY_MS);
                // Attempts 1, 2, 4, 8...: a stuck key set logs a few lines, not one a second.
                if attempt.is_power_of_two() {
                    log::scheduled_change_failed(&name, &e.to_string(), attempt, delay);
                }
                schedule::retry(db, &name, now.saturating_add(delay));
            }
        }
    }
    select_db(ctx, home);
}

/// Applies the due changes of one key set, in order, each as an ordinary change.
fn apply(ctx: &Context, db: i32, name: &[u8], now: i64) -> Result<()> {
    if names::check_name(name).is_err() {
        return Ok(());
    }
    loop {
        let key = Key::named(ctx, name, Mode::Peek)?;
        let Some(stored) = key.keyset().ok().flatten() else {
            return Ok(());
        };
        let fleet = fleets::held(db, name, now);
        let Some((next, changes, due)) = stored.set().apply_due_with(now, &fleet) else {
            schedule::set(db, name, fleets::wake_at(db, name, stored.set(), now));
            return Ok(());
        };
        drop(key);
        let caller = Caller::schedule(ctx);
        let targets = Targets::check(ctx, &caller, name)?;
        write::commit(
            ctx,
            &caller,
            &targets,
            Write {
                what: What::Keys {
                    next: &next,
                    changes: &changes,
                },
                at_ms: due.at_ms,
                // A promotion the verifiers confirmed says so in the audit trail.
                reason: if due.confirmed { "confirmed" } else { "policy" }.into(),
                forced: false,
            },
        )?;
        stats::count(counter_names::SCHEDULED_CHANGES);
    }
}

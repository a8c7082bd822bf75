//! A key set's lifecycle policy: when its keys change state by themselves, and what a
//! manual change may not do too early. Pure: time comes in as a parameter.
//!
//! - `PROMOTE-AFTER d`: each `next` key becomes `current` d ms after it was added, in the
//!   order added (the old `current` becomes `previous`). Verifiers that refresh their JWKS
//!   more often than d learn a key before anything signs with it.
//! - `RETIRE-AFTER d`: each `previous` key is retired d ms after it was demoted. With d
//!   above the longest token lifetime, no valid token loses its key.
//!
//! - `CONFIRM pct [MIN-WAIT ms]`: the first `next` key becomes `current` as soon as pct %
//!   of the live verifiers (and at least one) hold a document that publishes it and MIN-WAIT
//!   has passed since it was added (`confirm.rs`); PROMOTE-AFTER, if set, stays the ceiling.
//!
//! While a policy is set, a manual PROMOTE of a `next` key younger than PROMOTE-AFTER (unless
//! the set has no current key: bootstrap) and a manual RETIRE of a `previous` key demoted
//! less than RETIRE-AFTER ago are refused; FORCE overrides both. Under CONFIRM, a manual
//! PROMOTE of a `next` key is refused until the verifiers confirm it (or PROMOTE-AFTER, if
//! set, has passed), with what is missing in the error.

use serde::{Deserialize, Serialize};

use super::{Change, Confirmation, Entry, KeySet, State};
use crate::error::{Error, Result, Shown};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifecycle {
    /// 0: off.
    #[serde(default)]
    pub promote_after_ms: u64,
    /// 0: off.
    #[serde(default)]
    pub retire_after_ms: u64,
    /// 0: off; 1 to 100: the share of live verifiers that must hold a next key.
    #[serde(default, skip_serializing_if = "is_zero_u8")]
    pub confirm_pct: u8,
    /// With CONFIRM: how long after it was added a confirmed key still waits.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub min_wait_ms: u64,
}

fn is_zero_u8(v: &u8) -> bool {
    *v == 0
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

/// The longest PROMOTE-AFTER or RETIRE-AFTER: ten years.
pub const MAX_AFTER_MS: u64 = 10 * 366 * 24 * 3600 * 1000;

impl Lifecycle {
    pub fn is_set(&self) -> bool {
        self.promote_after_ms > 0 || self.retire_after_ms > 0 || self.confirms()
    }

    /// A CONFIRM policy is set.
    pub fn confirms(&self) -> bool {
        self.confirm_pct > 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Promote,
    Retire,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Promote => "promote",
            Action::Retire => "retire",
        }
    }
}

/// The next change the policy will make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub action: Action,
    pub kid: String,
    pub at_ms: i64,
    /// A promotion the verifiers confirmed (applied at the time it is made), rather than
    /// one PROMOTE-AFTER schedules (applied at its due time).
    pub confirmed: bool,
}

pub(super) fn after(t: i64, ms: u64) -> i64 {
    t.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
}

impl KeySet {
    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle
    }

    /// The same set under another policy (same generation: the document does not change).
    pub fn with_lifecycle(&self, lifecycle: Lifecycle) -> KeySet {
        KeySet {
            lifecycle,
            ..self.clone()
        }
    }

    /// The earliest change the policy will make by the clock alone (no verifier confirms
    /// anything), if any: the latest a change comes.
    pub fn next_change(&self) -> Option<Due> {
        self.next_change_with(&[])
    }

    /// The earliest change the policy will make, given the generations the live verifiers
    /// hold (`fleet`): a confirmed promotion comes when MIN-WAIT ends, if before the ceiling.
    pub fn next_change_with(&self, fleet: &[(u64, usize)]) -> Option<Due> {
        let l = self.lifecycle;
        let first_next = self.entries.iter().find(|e| e.state == State::Next);
        let ceiling = (l.promote_after_ms > 0)
            .then_some(first_next)
            .flatten()
            .map(|e| Due {
                action: Action::Promote,
                kid: e.jwk.kid().to_owned(),
                at_ms: after(e.added_ms, l.promote_after_ms),
                confirmed: false,
            });
        let confirmed = first_next
            .and_then(|e| self.confirmation_of(e, fleet))
            .filter(Confirmation::confirmed)
            .map(|c| Due {
                action: Action::Promote,
                kid: c.kid,
                at_ms: c.min_wait_until_ms,
                confirmed: true,
            });
        let promote = match (ceiling, confirmed) {
            (Some(c), Some(f)) if c.at_ms <= f.at_ms => Some(c),
            (_, Some(f)) => Some(f),
            (c, None) => c,
        };
        let retire = (l.retire_after_ms > 0)
            .then(|| {
                self.entries
                    .iter()
                    .filter(|e| e.state == State::Previous)
                    .map(|e| Due {
                        action: Action::Retire,
                        kid: e.jwk.kid().to_owned(),
                        at_ms: after(e.demoted_ms.unwrap_or(e.added_ms), l.retire_after_ms),
                        confirmed: false,
                    })
                    .min_by_key(|d| d.at_ms)
            })
            .flatten();
        match (promote, retire) {
            (Some(p), Some(r)) if r.at_ms < p.at_ms => Some(r),
            (Some(p), _) => Some(p),
            (None, r) => r,
        }
    }

    /// Applies the earliest change if it is due at `now_ms`, at its own due time (so a
    /// change that fell due while the server was down carries its real time). Call again
    /// to catch up on several, in order.
    pub fn apply_due(&self, now_ms: i64) -> Option<(KeySet, Vec<Change>, Due)> {
        self.apply_due_with(now_ms, &[])
    }

    /// `apply_due` with the live verifiers' generations: a confirmed promotion is stamped
    /// with `now_ms`, when the confirmation came (`due.at_ms` is set to it).
    pub fn apply_due_with(
        &self,
        now_ms: i64,
        fleet: &[(u64, usize)],
    ) -> Option<(KeySet, Vec<Change>, Due)> {
        let mut due = self.next_change_with(fleet).filter(|d| d.at_ms <= now_ms)?;
        if due.confirmed {
            due.at_ms = now_ms;
        }
        let mut next = self.clone();
        let mut changes = Vec::with_capacity(1);
        let done = match due.action {
            Action::Promote => next.promote(&due.kid, due.at_ms, true, fleet, &mut changes),
            Action::Retire => next.retire(&due.kid, due.at_ms, true, &mut changes),
        };
        done.ok()?;
        next.generation = self.generation.saturating_add(1).min(super::MAX_GENERATION);
        Some((next, changes, due))
    }

    /// Until when a cached copy of the document may be kept, filled at `now_ms` with a TTL
    /// of `ttl_ms`: never past the next scheduled change.
    pub fn cache_until(&self, now_ms: i64, ttl_ms: i64) -> i64 {
        let until = now_ms.saturating_add(ttl_ms);
        match self.next_change() {
            Some(due) => until.min(due.at_ms),
            None => until,
        }
    }
}

fn too_early(e: &Entry, since: i64, window: &'static str, window_ms: u64, now_ms: i64) -> Error {
    let ago = now_ms.saturating_sub(since).max(0);
    let remaining = after(since, window_ms).saturating_sub(now_ms).max(0);
    Error::TooEarly {
        kid: Shown::new(e.jwk.kid()),
        ago_ms: ago,
        window,
        window_ms,
        remaining_ms: remaining,
    }
}

/// A manual PROMOTE of `e` at `now_ms`: allowed once PROMOTE-AFTER has passed or the
/// verifiers confirm it, whichever comes first (only the ones set count).
pub(super) fn check_promote(
    l: Lifecycle,
    e: &Entry,
    has_current: bool,
    confirmation: Option<&Confirmation>,
    now_ms: i64,
) -> Result<()> {
    if (l.promote_after_ms == 0 && !l.confirms()) || e.state != State::Next || !has_current {
        return Ok(());
    }
    let ceiling = (l.promote_after_ms > 0).then(|| after(e.added_ms, l.promote_after_ms));
    if ceiling.is_some_and(|at| now_ms >= at) || confirmation.is_some_and(|c| c.allows(now_ms)) {
        return Ok(());
    }
    match confirmation {
        Some(c) => Err(Error::Unconfirmed {
            kid: Shown::new(e.jwk.kid()),
            holding: c.holding,
            live: c.live,
            needed: c.needed,
            pct: c.pct,
            wait_remaining_ms: c.min_wait_until_ms.saturating_sub(now_ms).max(0),
            ceiling_remaining_ms: ceiling.map(|at| at.saturating_sub(now_ms).max(0)),
        }),
        None => Err(too_early(
            e,
            e.added_ms,
            "PROMOTE-AFTER",
            l.promote_after_ms,
            now_ms,
        )),
    }
}

/// A manual RETIRE of `e` at `now_ms`.
pub(super) fn check_retire(l: Lifecycle, e: &Entry, now_ms: i64) -> Result<()> {
    if l.retire_after_ms == 0 || e.state != State::Previous {
        return Ok(());
    }
    let demoted = e.demoted_ms.unwrap_or(e.added_ms);
    if now_ms < after(demoted, l.retire_after_ms) {
        return Err(too_early(
            e,
            demoted,
            "RETIRE-AFTER",
            l.retire_after_ms,
            now_ms,
        ));
    }
    Ok(())
}

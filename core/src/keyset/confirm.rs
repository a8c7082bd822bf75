//! Confirmation by the verifiers (`CONFIRM pct [MIN-WAIT ms]`): a `next` key may become
//! `current` once enough live verifiers hold a document that publishes it. Pure: the
//! verifiers come in as the generations the live ones acknowledged, each with how many
//! verifiers hold it (`fleet`: `&[(generation, count)]`), so counting costs O(generations),
//! not O(verifiers).
//!
//! A document of generation g publishes a key still in the set if g is at least the
//! generation that added it: keys that are `next` or `current` have been published from
//! then on without a break (retiring and re-adding a kid makes a new entry).

use super::{Entry, KeySet, State};

/// How far a `next` key's confirmation has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    pub kid: String,
    /// Live verifiers.
    pub live: usize,
    /// Live verifiers holding a document that publishes the key.
    pub holding: usize,
    /// Holders needed: `pct` % of the live verifiers, rounded up, and at least one.
    pub needed: usize,
    pub pct: u8,
    /// Before this time no confirmation promotes the key (added + MIN-WAIT).
    pub min_wait_until_ms: i64,
}

impl Confirmation {
    /// Enough live verifiers hold the key (MIN-WAIT aside).
    pub fn confirmed(&self) -> bool {
        self.live > 0 && self.holding >= self.needed
    }

    /// Confirmed, and MIN-WAIT has passed at `now_ms`.
    pub fn allows(&self, now_ms: i64) -> bool {
        self.confirmed() && now_ms >= self.min_wait_until_ms
    }
}

/// `pct` % of `live`, rounded up, at least one.
pub(super) fn needed(pct: u8, live: usize) -> usize {
    (live.saturating_mul(usize::from(pct)).div_ceil(100)).max(1)
}

impl KeySet {
    /// Whether a verifier holding generation `generation` has the key of `e` (an entry of
    /// this set).
    pub fn publishes(&self, generation: u64, e: &Entry) -> bool {
        generation >= e.added_gen && generation <= self.generation
    }

    /// Whether a document of `generation` publishes the current key (true if there is
    /// none) and every `next` key (true if there is none).
    pub fn holds(&self, generation: u64) -> (bool, bool) {
        let all = |state: State| {
            self.entries
                .iter()
                .filter(|e| e.state == state)
                .all(|e| self.publishes(generation, e))
        };
        (all(State::Current), all(State::Next))
    }

    /// The confirmation of `e` under the CONFIRM policy: `None` without one, or if `e` is
    /// not a `next` key.
    pub fn confirmation_of(&self, e: &Entry, fleet: &[(u64, usize)]) -> Option<Confirmation> {
        let pct = self.lifecycle.confirm_pct;
        if pct == 0 || e.state != State::Next {
            return None;
        }
        let live = fleet.iter().map(|(_, n)| n).sum();
        let holding = fleet
            .iter()
            .filter(|(g, _)| self.publishes(*g, e))
            .map(|(_, n)| n)
            .sum();
        Some(Confirmation {
            kid: e.jwk.kid().to_owned(),
            live,
            holding,
            needed: needed(pct, live),
            pct,
            min_wait_until_ms: super::lifecycle::after(e.added_ms, self.lifecycle.min_wait_ms),
        })
    }

    /// The confirmation of the key the policy promotes next (the first `next` key added).
    pub fn confirmation(&self, fleet: &[(u64, usize)]) -> Option<Confirmation> {
        let first = self.entries.iter().find(|e| e.state == State::Next)?;
        self.confirmation_of(first, fleet)
    }
}

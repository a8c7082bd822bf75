//! What a change to a key set writes besides the set itself, and in which order: the rules
//! of the operations spec (audit every invalidation attempt, count it, never let a failed
//! cache invalidation undo the change) in one place, for every change (rotation,
//! invalidation, policy, scheduled change). Pure: the writes go through the `Effects`
//! trait, implemented on Redis keys by the module's write path and in memory in the tests.

use crate::audit::{self, Fields};
use crate::counter_names;
use crate::error::Result;
use crate::keyset::{Change, Lifecycle};

/// The writes a committing command makes, each propagated as the command's effect.
pub trait Effects {
    /// Appends one audit entry. Fails only when the stream can take no more entries.
    fn audit(&mut self, fields: &Fields) -> Result<()>;
    /// Stores the new key set (rotations and policy changes).
    fn store_set(&mut self) -> Result<()>;
    /// Deletes the cached document; whether one was there.
    fn delete_cache(&mut self) -> Result<bool>;
    /// Adds one to a counter of the key set.
    fn count(&mut self, counter: &'static str) -> Result<()>;
    /// Publishes the change event, last: a subscriber that reloads on it sees the change.
    fn announce(&mut self) -> Result<()>;
}

/// What is known before anything is written.
pub struct Plan<'a> {
    pub actx: &'a audit::Context,
    /// The key changes of a rotation (none for a plain invalidation or a policy change).
    pub changes: &'a [Change],
    /// A new lifecycle policy (JWKS.POLICY): audited, then stored with the key set.
    pub policy: Option<Lifecycle>,
    /// The change invalidates the cached document: every rotation and invalidation; a
    /// policy change when the document would outlive the next scheduled change.
    pub invalidate: bool,
    /// A cached document exists now.
    pub cached: bool,
    /// Why the invalidation is to fail, when a fault is injected.
    pub fault: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub deleted: bool,
    /// Why the cache invalidation failed.
    pub error: Option<String>,
    /// A write after the commit point that failed (for the log): an audit entry after the
    /// first, or a counter.
    pub incomplete: Option<String>,
}

/// Writes a change: audit entries first (if the stream refuses the first one, nothing has
/// been written and the command is refused), then the key set, then the invalidation, then
/// the counters, then the change event. Once the key set is stored (for a plain
/// invalidation, once the first entry is written) the change is committed: a later failure,
/// the cache deletion's included, is reported in the outcome and the log, never raised.
pub fn commit(effects: &mut impl Effects, plan: &Plan<'_>) -> Result<Outcome> {
    let mut kids: Vec<&str> = Vec::with_capacity(plan.changes.len());
    for kid in plan.changes.iter().map(audit::kid_of) {
        if !kids.contains(&kid) {
            kids.push(kid);
        }
    }
    let invalidation = plan.invalidate.then(|| match &plan.fault {
        None => audit::invalidated(plan.actx, &kids, plan.cached),
        Some(error) => audit::invalidation_failed(plan.actx, &kids, error),
    });
    let mut entries = plan
        .changes
        .iter()
        .map(|c| audit::key_change(c, plan.actx))
        .chain(plan.policy.map(|p| audit::policy_set(plan.actx, p)))
        .chain(invalidation);
    if let Some(first) = entries.next() {
        effects.audit(&first)?;
    }
    let mut errors = Vec::new();
    for entry in entries {
        if let Err(e) = effects.audit(&entry) {
            errors.push(e.to_string());
        }
    }
    if !plan.changes.is_empty() || plan.policy.is_some() {
        effects.store_set()?;
    }
    // Committed: from here on nothing raises.
    let mut outcome = Outcome {
        deleted: false,
        error: None,
        incomplete: None,
    };
    if plan.invalidate {
        match &plan.fault {
            None => match effects.delete_cache() {
                Ok(deleted) => outcome.deleted = deleted,
                Err(e) => outcome.error = Some(e.to_string()),
            },
            Some(error) => outcome.error = Some(error.clone()),
        }
    }
    let mut counters = Vec::with_capacity(2);
    if !plan.changes.is_empty() {
        counters.push(counter_names::ROTATIONS);
    }
    if plan.invalidate {
        counters.push(match outcome.error {
            None => counter_names::INVALIDATIONS,
            Some(_) => counter_names::INVALIDATION_ERRORS,
        });
    }
    for counter in counters {
        if let Err(e) = effects.count(counter) {
            errors.push(e.to_string());
        }
    }
    if let Err(e) = effects.announce() {
        errors.push(e.to_string());
    }
    outcome.incomplete = errors.into_iter().next();
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, Shown};

    /// Records what was written, in order; can refuse audit entries.
    #[derive(Default)]
    struct Memory {
        writes: Vec<String>,
        audit_full: bool,
        cached: bool,
    }

    impl Effects for Memory {
        fn audit(&mut self, fields: &Fields) -> Result<()> {
            if self.audit_full {
                return Err(Error::AuditFull(Shown::new("k:audit")));
            }
            let action = fields
                .iter()
                .find(|(n, _)| *n == "action")
                .map(|(_, v)| v.as_str());
            self.writes.push(format!("audit {}", action.unwrap_or("?")));
            Ok(())
        }
        fn store_set(&mut self) -> Result<()> {
            self.writes.push("set".into());
            Ok(())
        }
        fn delete_cache(&mut self) -> Result<bool> {
            self.writes.push("del cache".into());
            Ok(std::mem::take(&mut self.cached))
        }
        fn count(&mut self, counter: &'static str) -> Result<()> {
            self.writes.push(format!("count {counter}"));
            Ok(())
        }
        fn announce(&mut self) -> Result<()> {
            self.writes.push("event".into());
            Ok(())
        }
    }

    fn actx() -> audit::Context {
        audit::Context {
            timestamp: audit::timestamp(0),
            reason: "test".into(),
            generation: 2,
            user: "u".into(),
            forced: false,
        }
    }

    #[test]
    fn a_rotation_audits_then_swaps_then_invalidates_then_counts() {
        let actx = actx();
        let changes = [Change::Added { kid: "b".into() }];
        let mut m = Memory {
            cached: true,
            ..Memory::default()
        };
        let plan = Plan {
            actx: &actx,
            changes: &changes,
            policy: None,
            invalidate: true,
            cached: true,
            fault: None,
        };
        let outcome = commit(&mut m, &plan).unwrap();
        assert_eq!((outcome.deleted, outcome.error), (true, None));
        assert_eq!(
            m.writes,
            [
                "audit JWKS_KEY_ADDED",
                "audit JWKS_CACHE_INVALIDATED",
                "set",
                "del cache",
                "count jwt_jwks_rotations_total",
                "count jwt_jwks_cache_invalidations_total",
                "event",
            ]
        );
    }

    #[test]
    fn a_failed_invalidation_still_commits_the_rotation_and_is_audited_and_counted() {
        let actx = actx();
        let changes = [Change::Retired {
            kid: "a".into(),
            was: crate::keyset::State::Previous,
        }];
        let mut m = Memory::default();
        let plan = Plan {
            actx: &actx,
            changes: &changes,
            policy: None,
            invalidate: true,
            cached: true,
            fault: Some("boom".into()),
        };
        let outcome = commit(&mut m, &plan).unwrap();
        assert_eq!(outcome.error.as_deref(), Some("boom"));
        assert_eq!(
            m.writes,
            [
                "audit JWKS_KEY_RETIRED",
                "audit JWKS_CACHE_INVALIDATION_FAILED",
                "set",
                "count jwt_jwks_rotations_total",
                "count jwt_jwks_cache_invalidation_errors_total",
                "event",
            ]
        );
    }

    #[test]
    fn a_full_audit_stream_refuses_before_anything_is_written() {
        let actx = actx();
        let mut m = Memory {
            audit_full: true,
            ..Memory::default()
        };
        let plan = Plan {
            actx: &actx,
            changes: &[],
            policy: None,
            invalidate: true,
            cached: true,
            fault: None,
        };
        assert!(matches!(commit(&mut m, &plan), Err(Error::AuditFull(_))));
        assert!(m.writes.is_empty());
    }

    #[test]
    fn a_plain_invalidation_writes_no_set_and_no_rotation() {
        let actx = actx();
        let mut m = Memory::default();
        let plan = Plan {
            actx: &actx,
            changes: &[],
            policy: None,
            invalidate: true,
            cached: false,
            fault: None,
        };
        let outcome = commit(&mut m, &plan).unwrap();
        assert_eq!((outcome.deleted, outcome.error), (false, None));
        assert_eq!(
            m.writes,
            [
                "audit JWKS_CACHE_INVALIDATED",
                "del cache",
                "count jwt_jwks_cache_invalidations_total",
                "event",
            ]
        );
    }

    /// Records the writes and fails the cache deletion.
    struct FailingDelete(Memory);

    impl Effects for FailingDelete {
        fn audit(&mut self, fields: &Fields<'_>) -> Result<()> {
            self.0.audit(fields)
        }
        fn store_set(&mut self) -> Result<()> {
            self.0.store_set()
        }
        fn delete_cache(&mut self) -> Result<bool> {
            Err(Error::Api("RedisModule_DeleteKey"))
        }
        fn count(&mut self, counter: &'static str) -> Result<()> {
            self.0.count(counter)
        }
        fn announce(&mut self) -> Result<()> {
            self.0.announce()
        }
    }

    fn policy_plan<'a>(actx: &'a audit::Context, invalidate: bool) -> Plan<'a> {
        Plan {
            actx,
            changes: &[],
            policy: Some(Lifecycle {
                promote_after_ms: 10,
                retire_after_ms: 0,
                ..Lifecycle::default()
            }),
            invalidate,
            cached: true,
            fault: None,
        }
    }

    #[test]
    fn a_policy_change_that_drops_the_cache_audits_and_counts_the_invalidation() {
        let actx = actx();
        let mut m = Memory::default();
        let outcome = commit(&mut m, &policy_plan(&actx, true)).unwrap();
        assert_eq!((outcome.deleted, outcome.error), (false, None));
        assert_eq!(
            m.writes,
            [
                "audit JWKS_POLICY_SET",
                "audit JWKS_CACHE_INVALIDATED",
                "set",
                "del cache",
                "count jwt_jwks_cache_invalidations_total",
                "event",
            ]
        );
    }

    #[test]
    fn a_policy_change_that_keeps_the_cache_writes_no_invalidation() {
        let actx = actx();
        let mut m = Memory::default();
        let outcome = commit(&mut m, &policy_plan(&actx, false)).unwrap();
        assert_eq!((outcome.deleted, outcome.error), (false, None));
        assert_eq!(m.writes, ["audit JWKS_POLICY_SET", "set", "event"]);
    }

    #[test]
    fn a_failed_cache_deletion_after_the_store_is_reported_not_raised() {
        let actx = actx();
        let changes = [Change::Added { kid: "b".into() }];
        let mut m = FailingDelete(Memory::default());
        let plan = Plan {
            actx: &actx,
            changes: &changes,
            policy: None,
            invalidate: true,
            cached: true,
            fault: None,
        };
        let outcome = commit(&mut m, &plan).unwrap();
        assert!(outcome.error.is_some());
        assert_eq!(
            m.0.writes,
            [
                "audit JWKS_KEY_ADDED",
                "audit JWKS_CACHE_INVALIDATED",
                "set",
                "count jwt_jwks_rotations_total",
                "count jwt_jwks_cache_invalidation_errors_total",
                "event",
            ]
        );
    }
}

//! CONFIRM: promotion when the verifiers hold the key.
use super::*;
use crate::jwk::{Jwk, Policy};
use crate::testkeys;

fn add(kid: &str, k: u64) -> Op {
    Op::Add(Jwk::from_value(testkeys::ec(kid, k), &Policy { min_rsa_bits: 2048 }).unwrap())
}

/// The fleet as the core takes it: (generation, verifiers holding it).
fn held(generations: &[u64]) -> Vec<(u64, usize)> {
    let mut out: Vec<(u64, usize)> = Vec::new();
    for g in generations {
        match out.iter_mut().find(|(h, _)| h == g) {
            Some((_, n)) => *n += 1,
            None => out.push((*g, 1)),
        }
    }
    out
}

fn confirming(pct: u8, min_wait_ms: u64, promote_after_ms: u64) -> KeySet {
    // a current (generation 1), b added at t=100 (generation 2).
    let (set, _) = KeySet::default()
        .apply(&[add("a", 1), Op::Promote("a".into())], 10, false)
        .unwrap();
    let set = set.with_lifecycle(Lifecycle {
        promote_after_ms,
        confirm_pct: pct,
        min_wait_ms,
        ..Lifecycle::default()
    });
    set.apply(&[add("b", 2)], 100, false).unwrap().0
}

#[test]
fn keys_know_the_generation_that_first_published_them() {
    let set = confirming(100, 0, 0);
    assert_eq!(set.generation(), 2);
    let b = set.entries().iter().find(|e| e.jwk.kid() == "b").unwrap();
    assert_eq!(b.added_gen, 2);
    assert!(!set.publishes(1, b) && set.publishes(2, b) && !set.publishes(3, b));
    assert_eq!(set.holds(1), (true, false));
    assert_eq!(set.holds(2), (true, true));
}

#[test]
fn needs_pct_of_live_verifiers_and_at_least_one() {
    let set = confirming(60, 0, 0);
    assert!(!set.confirmation(&held(&[])).unwrap().confirmed());
    let c = set.confirmation(&held(&[2, 1, 1, 2, 2])).unwrap();
    assert_eq!((c.live, c.holding, c.needed), (5, 3, 3));
    assert!(c.confirmed());
    assert!(!set
        .confirmation(&held(&[2, 1, 1, 1, 2]))
        .unwrap()
        .confirmed());
    assert_eq!(confirm::needed(100, 0), 1);
    assert_eq!(confirm::needed(1, 1000), 10);
    assert_eq!(confirm::needed(100, 7), 7);
}

#[test]
fn a_confirmed_key_is_promoted_when_min_wait_ends_stamped_when_applied() {
    let set = confirming(100, 50, 10_000);
    // Only the ceiling without verifiers.
    assert_eq!(set.next_change().unwrap().at_ms, 10_100);
    assert_eq!(set.next_change_with(&held(&[1])).unwrap().at_ms, 10_100);
    let due = set.next_change_with(&held(&[2, 2])).unwrap();
    assert!(due.confirmed && due.at_ms == 150 && due.kid == "b");
    assert!(set.apply_due_with(149, &held(&[2, 2])).is_none());
    let (next, changes, due) = set.apply_due_with(170, &held(&[2, 2])).unwrap();
    assert_eq!(due.at_ms, 170);
    assert_eq!(next.current_kid(), Some("b"));
    assert_eq!(next.entries()[1].promoted_ms, Some(170));
    assert_eq!(changes.len(), 1);
    // Exactly once: the promoted set has nothing more to confirm.
    assert_eq!(next.next_change_with(&held(&[3, 3])), None);
    // The ceiling still comes without confirmation, at its own time.
    let (late, _, due) = set.apply_due_with(20_000, &held(&[1])).unwrap();
    assert!(!due.confirmed && due.at_ms == 10_100 && late.current_kid() == Some("b"));
}

#[test]
fn the_guard_accepts_a_confirmed_manual_promotion_and_says_what_is_missing() {
    let set = confirming(100, 50, 10_000);
    let promote = [Op::Promote("b".into())];
    let e = set
        .apply_with(&promote, 120, false, &held(&[2, 1]))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "TOOEARLY kid 'b' is not confirmed: 1 of 2 live verifiers hold it and CONFIRM 100 % needs 2, \
and MIN-WAIT has 30 ms to go; PROMOTE-AFTER allows it in 9980 ms (FORCE overrides)"
    );
    assert!(set
        .apply_with(&promote, 120, false, &held(&[2, 2]))
        .is_err());
    assert!(set.apply_with(&promote, 150, false, &held(&[2, 2])).is_ok());
    assert!(set.apply_with(&promote, 10_100, false, &held(&[])).is_ok());
    assert!(set.apply_with(&promote, 120, true, &held(&[])).is_ok());
    // CONFIRM alone: no ceiling, so only confirmation (or FORCE) promotes.
    let only = confirming(50, 0, 0);
    assert!(only.next_change().is_none());
    let e = only
        .apply_with(&promote, 1_000_000, false, &held(&[]))
        .unwrap_err();
    assert!(
        e.to_string().contains("0 of 0 live verifiers") && !e.to_string().contains("PROMOTE-AFTER")
    );
    assert!(only
        .apply_with(&promote, 101, false, &held(&[2, 1]))
        .is_ok());
}

#[test]
fn a_confirm_policy_persists_as_format_3_with_added_generations() {
    let set = confirming(100, 50, 0);
    let text = set.to_stored();
    assert!(text.starts_with(r#"{"v":3,"#), "{text}");
    assert!(text.contains(r#""confirm_pct":100"#) && text.contains(r#""added_gen":2"#));
    assert_eq!(KeySet::from_stored(&text).unwrap(), set);
    for bad in [
        text.replace(r#""v":3"#, r#""v":2"#),
        text.replace(r#""added_gen":2"#, r#""added_gen":3"#),
        text.replace(r#""confirm_pct":100"#, r#""confirm_pct":101"#),
    ] {
        assert!(KeySet::from_stored(&bad).is_err(), "{bad}");
    }
    // Without CONFIRM, format 2 and no added generations: as older builds wrote it.
    let plain = set.with_lifecycle(Lifecycle {
        promote_after_ms: 5,
        ..Lifecycle::default()
    });
    let text = plain.to_stored();
    assert!(text.starts_with(r#"{"v":2,"#) && !text.contains("added_gen"));
    let loaded = KeySet::from_stored(&text).unwrap();
    // Loaded without them: the set's generation, never earlier than the truth.
    assert!(loaded.entries().iter().all(|e| e.added_gen == 2));
    assert!(KeySet::from_stored(&text.replace(r#""v":2"#, r#""v":3"#)).is_err());
}

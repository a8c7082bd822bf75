#[cfg(test)] // a test-only module (declared under #[cfg(test)] by its parent)
use serde_json::Value;

use super::*;
use crate::jwk::{Jwk, Policy};
use crate::testkeys;

const POLICY: Policy = Policy { min_rsa_bits: 2048 };

fn key(kid: &str, k: u64) -> Jwk {
    Jwk::from_value(testkeys::ec(kid, k), &POLICY).unwrap()
}

fn add(kid: &str, k: u64) -> Op {
    Op::Add(key(kid, k))
}

fn promote(kid: &str) -> Op {
    Op::Promote(kid.into())
}

fn retire(kid: &str) -> Op {
    Op::Retire(kid.into())
}

fn states(set: &KeySet) -> Vec<(String, &'static str)> {
    set.published()
        .map(|e| (e.jwk.kid().to_owned(), e.state.name()))
        .collect()
}

fn started() -> KeySet {
    KeySet::default()
        .apply(&[add("a", 1), promote("a")], 10, false)
        .unwrap()
        .0
}

#[test]
fn add_promote_retire_cycle() {
    let set = started();
    assert_eq!(set.generation(), 1);
    assert_eq!(set.current_kid(), Some("a"));
    let (set, changes) = set.apply(&[add("b", 2)], 20, false).unwrap();
    assert_eq!(changes, vec![Change::Added { kid: "b".into() }]);
    assert_eq!(
        states(&set),
        vec![("a".into(), "current"), ("b".into(), "next")]
    );
    let (set, changes) = set.apply(&[promote("b")], 30, false).unwrap();
    assert_eq!(
        changes,
        vec![Change::Promoted {
            kid: "b".into(),
            demoted: Some("a".into())
        }]
    );
    assert_eq!(
        states(&set),
        vec![("b".into(), "current"), ("a".into(), "previous")]
    );
    let a = &set.entries()[0];
    assert_eq!(
        (a.added_ms, a.promoted_ms, a.demoted_ms),
        (10, Some(10), Some(30))
    );
    let (set, _) = set.apply(&[retire("a")], 40, false).unwrap();
    assert_eq!(set.published_kids(), vec!["b"]);
    assert_eq!(set.generation(), 4);
}

#[test]
fn errors_leave_the_set_untouched() {
    let set = started();
    let before = set.clone();
    assert!(matches!(
        set.apply(&[add("a", 3)], 1, false),
        Err(Error::DuplicateKid(_))
    ));
    assert!(matches!(
        set.apply(&[promote("zz")], 1, false),
        Err(Error::UnknownKid(_))
    ));
    assert!(matches!(
        set.apply(&[retire("zz")], 1, false),
        Err(Error::UnknownKid(_))
    ));
    assert!(matches!(
        set.apply(&[promote("a")], 1, false),
        Err(Error::AlreadyCurrent(_))
    ));
    assert!(matches!(
        set.apply(&[retire("a")], 1, false),
        Err(Error::RetireCurrent(_))
    ));
    // The valid first op must not survive a failing second one.
    assert!(set.apply(&[add("b", 2), promote("zz")], 1, false).is_err());
    assert_eq!(set, before);
}

#[test]
fn retire_current_with_promote_in_the_same_command() {
    let (set, _) = started().apply(&[add("b", 2)], 2, false).unwrap();
    let (s1, _) = set.apply(&[retire("a"), promote("b")], 3, false).unwrap();
    let (s2, _) = set.apply(&[promote("b"), retire("a")], 3, false).unwrap();
    assert_eq!(s1.published_kids(), vec!["b"]);
    assert_eq!(s2.published_kids(), vec!["b"]);
    assert_eq!(s1.current_kid(), Some("b"));
}

#[test]
fn promote_previous_rolls_back() {
    let (set, _) = started()
        .apply(&[add("b", 2), promote("b")], 2, false)
        .unwrap();
    let (set, _) = set.apply(&[promote("a")], 3, false).unwrap();
    assert_eq!(
        states(&set),
        vec![("a".into(), "current"), ("b".into(), "previous")]
    );
}

#[test]
fn replace_keeps_states_adds_next_retires_missing() {
    let (set, _) = started().apply(&[add("b", 2)], 2, false).unwrap();
    let (set, changes) = set
        .apply(&[Op::Replace(vec![key("a", 1), key("c", 3)])], 3, false)
        .unwrap();
    assert_eq!(
        changes,
        vec![
            Change::Retired {
                kid: "b".into(),
                was: State::Next
            },
            Change::Added { kid: "c".into() }
        ]
    );
    assert_eq!(
        states(&set),
        vec![("a".into(), "current"), ("c".into(), "next")]
    );
    // The same document again changes nothing and keeps the generation.
    let (again, changes) = set
        .apply(&[Op::Replace(vec![key("a", 1), key("c", 3)])], 4, false)
        .unwrap();
    assert!(changes.is_empty());
    assert_eq!(again.generation(), set.generation());
    // Dropping the current key needs a promote in the same command.
    let drop_current = [Op::Replace(vec![key("c", 3)])];
    assert!(matches!(
        set.apply(&drop_current, 5, false),
        Err(Error::RetireCurrent(_))
    ));
    let with_promote = [Op::Replace(vec![key("c", 3)]), promote("c")];
    assert_eq!(
        set.apply(&with_promote, 5, false).unwrap().0.current_kid(),
        Some("c")
    );
    // Same kid, other material: refused.
    let conflict = [Op::Replace(vec![key("a", 9)])];
    assert!(matches!(
        set.apply(&conflict, 5, false),
        Err(Error::KidConflict(_))
    ));
}

#[test]
fn replace_updates_optional_members() {
    let set = started();
    let mut v = testkeys::ec("a", 1);
    v["use"] = Value::from("sig");
    v.as_object_mut().map(|m| m.remove("alg"));
    let updated = Jwk::from_value(v, &POLICY).unwrap();
    let (set, changes) = set.apply(&[Op::Replace(vec![updated])], 5, false).unwrap();
    assert_eq!(changes, vec![Change::Updated { kid: "a".into() }]);
    assert_eq!(set.current_kid(), Some("a"));
    assert!(!set.render().contains("ES256"));
}

#[test]
fn key_count_is_bounded() {
    let ops: Vec<Op> = (1..=MAX_KEYS as u64 + 1)
        .map(|k| add(&format!("k{k}"), k))
        .collect();
    assert!(matches!(
        KeySet::default().apply(&ops, 1, false),
        Err(Error::TooManyKeys(_))
    ));
    assert!(KeySet::default().apply(&ops[..MAX_KEYS], 1, false).is_ok());
}

#[test]
fn render_is_public_and_ordered() {
    let (set, _) = started()
        .apply(&[add("b", 2), add("c", 3)], 2, false)
        .unwrap();
    let (set, _) = set.apply(&[promote("c")], 3, false).unwrap();
    let doc: Value = serde_json::from_str(&set.render()).unwrap();
    let kids: Vec<&str> = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, vec!["c", "b", "a"]);
    assert_eq!(KeySet::default().render(), r#"{"keys":[]}"#);
}

#[test]
fn stored_form_round_trips_and_is_checked() {
    let (set, _) = started()
        .apply(&[add("b", 2), promote("b")], 2, false)
        .unwrap();
    let text = set.to_stored();
    // The stored form is what round-trips: without CONFIRM, `added_gen` is not stored.
    assert_eq!(KeySet::from_stored(&text).unwrap().to_stored(), text);
    assert!(KeySet::from_stored("{}").is_err());
    assert!(KeySet::from_stored(&text.replace("\"v\":1", "\"v\":9")).is_err());
    let two_current = text.replace("\"previous\"", "\"current\"");
    assert!(matches!(
        KeySet::from_stored(&two_current),
        Err(Error::State(_))
    ));
    let private = text.replacen("\"kty\"", "\"d\":\"AQAB\",\"kty\"", 1);
    assert!(KeySet::from_stored(&private).is_err());
}

fn with_policy(set: KeySet, promote: u64, retire: u64) -> KeySet {
    set.with_lifecycle(Lifecycle {
        promote_after_ms: promote,
        retire_after_ms: retire,
        ..Lifecycle::default()
    })
}

#[test]
fn scheduled_changes_come_in_time_order_at_their_due_times() {
    // a current since 10; b added at 20, c at 30; promote after 100, retire after 50.
    let set = started().apply(&[add("b", 2)], 20, false).unwrap().0;
    let set = set.apply(&[add("c", 3)], 30, false).unwrap().0;
    let set = with_policy(set, 100, 50);
    assert_eq!(set.generation(), 3);
    let due = set.next_change().unwrap();
    assert_eq!(
        (due.action, due.kid.as_str(), due.at_ms),
        (Action::Promote, "b", 120)
    );
    assert!(set.apply_due(119).is_none());
    // Catching up at 1000: b at 120 (a demoted at 120), c at 130 (b demoted at 130), then
    // a retired at 170, b at 180: each at its own time, one generation each.
    let mut now_set = set;
    let mut seen = Vec::new();
    while let Some((next, changes, due)) = now_set.apply_due(1000) {
        seen.push((due.action, due.kid.clone(), due.at_ms, next.generation()));
        assert_eq!(changes.len(), 1);
        now_set = next;
    }
    assert_eq!(
        seen,
        vec![
            (Action::Promote, "b".to_string(), 120, 4),
            (Action::Promote, "c".to_string(), 130, 5),
            (Action::Retire, "a".to_string(), 170, 6),
            (Action::Retire, "b".to_string(), 180, 7),
        ]
    );
    assert_eq!(now_set.published_kids(), vec!["c"]);
    assert_eq!(now_set.next_change(), None);
    let c = &now_set.entries()[0];
    assert_eq!(c.promoted_ms, Some(130));
}

#[test]
fn guards_refuse_early_manual_changes_unless_forced_or_bootstrapping() {
    let set = with_policy(started(), 100, 50);
    let (set, _) = set.apply(&[add("b", 2)], 20, false).unwrap();
    let e = set.apply(&[promote("b")], 60, false).unwrap_err();
    assert_eq!(
        e.to_string(),
        "TOOEARLY kid 'b' was published 40 ms ago and PROMOTE-AFTER is 100 ms: 60 ms remain (FORCE overrides)"
    );
    let (forced, _) = set.apply(&[promote("b")], 60, true).unwrap();
    assert_eq!(forced.current_kid(), Some("b"));
    let (set, _) = set.apply(&[promote("b")], 120, false).unwrap();
    // a was demoted at 120: retiring it before 170 is too early; a next key goes any time.
    assert!(matches!(
        set.apply(&[retire("a")], 150, false),
        Err(Error::TooEarly {
            remaining_ms: 20,
            ..
        })
    ));
    assert!(set.apply(&[retire("a")], 170, false).is_ok());
    let (with_next, _) = set.apply(&[add("n", 4)], 150, false).unwrap();
    assert!(with_next.apply(&[retire("n")], 151, false).is_ok());
    // REPLACE retiring a recently demoted key is a retirement too.
    let doc = vec![key("b", 2)];
    assert!(set.apply(&[Op::Replace(doc.clone())], 150, false).is_err());
    assert!(set.apply(&[Op::Replace(doc)], 150, true).is_ok());
    // With no current key, a fresh key may be promoted at once (bootstrap).
    let empty = with_policy(KeySet::default(), 100, 50);
    assert!(empty.apply(&[add("x", 5), promote("x")], 1, false).is_ok());
}

#[test]
fn the_cache_never_outlives_the_next_change_and_policies_persist() {
    let set = with_policy(
        started().apply(&[add("b", 2)], 20, false).unwrap().0,
        100,
        0,
    );
    assert_eq!(set.cache_until(50, 1000), 120);
    assert_eq!(started().cache_until(50, 1000), 1050);
    let stored = set.to_stored();
    assert!(stored.contains(r#""v":2"#) && stored.contains(r#""promote_after_ms":100"#));
    assert_eq!(KeySet::from_stored(&stored).unwrap().to_stored(), stored);
    // Without a policy the stored form is format 1, as before.
    assert!(started().to_stored().starts_with(r#"{"v":1,"#));
    let bad = stored.replace(r#""v":2"#, r#""v":1"#);
    assert!(KeySet::from_stored(&bad).is_err());
}

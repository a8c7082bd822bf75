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
        .apply(&[add("a", 1), promote("a")], 10)
        .unwrap()
        .0
}

#[test]
fn add_promote_retire_cycle() {
    let set = started();
    assert_eq!(set.generation(), 1);
    assert_eq!(set.current_kid(), Some("a"));
    let (set, changes) = set.apply(&[add("b", 2)], 20).unwrap();
    assert_eq!(changes, vec![Change::Added { kid: "b".into() }]);
    assert_eq!(
        states(&set),
        vec![("a".into(), "current"), ("b".into(), "next")]
    );
    let (set, changes) = set.apply(&[promote("b")], 30).unwrap();
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
    let (set, _) = set.apply(&[retire("a")], 40).unwrap();
    assert_eq!(set.published_kids(), vec!["b"]);
    assert_eq!(set.generation(), 4);
}

#[test]
fn errors_leave_the_set_untouched() {
    let set = started();
    let before = set.clone();
    assert!(matches!(
        set.apply(&[add("a", 3)], 1),
        Err(Error::DuplicateKid(_))
    ));
    assert!(matches!(
        set.apply(&[promote("zz")], 1),
        Err(Error::UnknownKid(_))
    ));
    assert!(matches!(
        set.apply(&[retire("zz")], 1),
        Err(Error::UnknownKid(_))
    ));
    assert!(matches!(
        set.apply(&[promote("a")], 1),
        Err(Error::AlreadyCurrent(_))
    ));
    assert!(matches!(
        set.apply(&[retire("a")], 1),
        Err(Error::RetireCurrent(_))
    ));
    // The valid first op must not survive a failing second one.
    assert!(set.apply(&[add("b", 2), promote("zz")], 1).is_err());
    assert_eq!(set, before);
}

#[test]
fn retire_current_with_promote_in_the_same_command() {
    let (set, _) = started().apply(&[add("b", 2)], 2).unwrap();
    let (s1, _) = set.apply(&[retire("a"), promote("b")], 3).unwrap();
    let (s2, _) = set.apply(&[promote("b"), retire("a")], 3).unwrap();
    assert_eq!(s1.published_kids(), vec!["b"]);
    assert_eq!(s2.published_kids(), vec!["b"]);
    assert_eq!(s1.current_kid(), Some("b"));
}

#[test]
fn promote_previous_rolls_back() {
    let (set, _) = started().apply(&[add("b", 2), promote("b")], 2).unwrap();
    let (set, _) = set.apply(&[promote("a")], 3).unwrap();
    assert_eq!(
        states(&set),
        vec![("a".into(), "current"), ("b".into(), "previous")]
    );
}

#[test]
fn replace_keeps_states_adds_next_retires_missing() {
    let (set, _) = started().apply(&[add("b", 2)], 2).unwrap();
    let (set, changes) = set
        .apply(&[Op::Replace(vec![key("a", 1), key("c", 3)])], 3)
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
        .apply(&[Op::Replace(vec![key("a", 1), key("c", 3)])], 4)
        .unwrap();
    assert!(changes.is_empty());
    assert_eq!(again.generation(), set.generation());
    // Dropping the current key needs a promote in the same command.
    let drop_current = [Op::Replace(vec![key("c", 3)])];
    assert!(matches!(
        set.apply(&drop_current, 5),
        Err(Error::RetireCurrent(_))
    ));
    let with_promote = [Op::Replace(vec![key("c", 3)]), promote("c")];
    assert_eq!(
        set.apply(&with_promote, 5).unwrap().0.current_kid(),
        Some("c")
    );
    // Same kid, other material: refused.
    let conflict = [Op::Replace(vec![key("a", 9)])];
    assert!(matches!(
        set.apply(&conflict, 5),
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
    let (set, changes) = set.apply(&[Op::Replace(vec![updated])], 5).unwrap();
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
        KeySet::default().apply(&ops, 1),
        Err(Error::TooManyKeys(_))
    ));
    assert!(KeySet::default().apply(&ops[..MAX_KEYS], 1).is_ok());
}

#[test]
fn render_is_public_and_ordered() {
    let (set, _) = started().apply(&[add("b", 2), add("c", 3)], 2).unwrap();
    let (set, _) = set.apply(&[promote("c")], 3).unwrap();
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
    let (set, _) = started().apply(&[add("b", 2), promote("b")], 2).unwrap();
    let text = set.to_stored();
    assert_eq!(KeySet::from_stored(&text).unwrap(), set);
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

//! Resharding moves a key set with its derived keys by `MIGRATE ... KEYS` in whatever order
//! the slot's keys come (Redis 8's `CLUSTER GETKEYSINSLOT` gives the cache first): the key
//! set, its cache, audit trail and counters arrive intact, and nothing is logged as a
//! warning, with or without the keyspace hook.

mod common;

use common::*;
use redis::{Connection, Value};

const K: &str = "jwks:{r}";

fn state(con: &mut Connection) -> (Option<String>, Option<String>, i64, i64) {
    let doc: Option<String> = cmd("JWKS.GET", &[K]).query(con).unwrap();
    let cache: Option<String> = cmd("GET", &[&derived(K, "cache")]).query(con).unwrap();
    let audit: i64 = cmd("XLEN", &[&derived(K, "audit")]).query(con).unwrap();
    let counters: i64 = cmd("HLEN", &[&derived(K, "metrics")]).query(con).unwrap();
    (doc, cache, audit, counters)
}

fn migrate_in_order(module_args: &[&str], cache_first: bool) {
    let source = Server::with_module_args(module_args, &[]);
    let target = Server::with_module_args(module_args, &[]);
    let mut s = source.conn();
    rotate(&mut s, K, &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let doc: Option<String> = cmd("JWKS.GET", &[K]).query(&mut s).unwrap();
    wait_for("the cache filled", || {
        let c: Option<String> = cmd("GET", &[&derived(K, "cache")]).query(&mut s).unwrap();
        c == doc
    });
    let expected = state(&mut s);
    let mut keys = vec![
        derived(K, "cache"),
        K.to_owned(),
        derived(K, "audit"),
        derived(K, "metrics"),
    ];
    if !cache_first {
        keys.swap(0, 1);
    }
    let mut m = redis::cmd("MIGRATE");
    m.arg("127.0.0.1")
        .arg(target.port)
        .arg("")
        .arg(0)
        .arg(5000)
        .arg("KEYS");
    for k in &keys {
        m.arg(k);
    }
    let _: Value = m.query(&mut s).unwrap();
    let mut t = target.conn();
    std::thread::sleep(std::time::Duration::from_millis(60));
    assert_eq!(
        state(&mut t),
        expected,
        "cache first: {cache_first}, {module_args:?}"
    );
    let (doc, cache, _, _) = state(&mut s);
    assert_eq!((doc, cache), (None, None));
    let log = target.log();
    assert!(!log.contains("redis-jwks deleted"), "{log}");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" # <jwks>") && !l.contains("defrag"))
        .collect();
    assert!(warnings.is_empty(), "no warning: {warnings:?}");
}

#[test]
fn cache_first() {
    migrate_in_order(&[], true);
    migrate_in_order(&["keyspace-hook", "yes"], true);
}

#[test]
fn set_first() {
    migrate_in_order(&[], false);
    migrate_in_order(&["keyspace-hook", "yes"], false);
}

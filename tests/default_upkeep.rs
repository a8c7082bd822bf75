//! Without the keyspace hook (the default), what the module keeps true through the data
//! type's own callbacks alone, at no cost to other workloads (docs/data-model.md, "What the
//! module owns"): `JWKS.GET` is always the key set's document; a key set that leaves its key
//! takes its cache with it; COPY and RESTORE arrivals are registered; a renamed key set is
//! registered at its first use; a cache deleted, expired or overwritten by another command is
//! refilled within a second of reads.

mod common;

use std::collections::HashMap;

use common::*;
use redis::Connection;

fn stats(con: &mut Connection) -> HashMap<String, i64> {
    let flat: Vec<String> = cmd("JWKS.STATS", &[] as &[&str]).query(con).unwrap();
    flat.chunks(2)
        .filter_map(|p| Some((p.first()?.clone(), p.get(1)?.parse().ok()?)))
        .collect()
}

fn get(con: &mut Connection, key: &str) -> Option<String> {
    cmd("JWKS.GET", &[key]).query(con).unwrap()
}

fn cache(con: &mut Connection, key: &str) -> Option<String> {
    cmd("GET", &[derived(key, "cache")]).query(con).unwrap()
}

fn filled(con: &mut Connection, key: &str) {
    let doc = get(con, key);
    wait_for("the cache filled", || cache(con, key) == doc);
}

#[test]
fn deletion_expiry_and_overwrite_take_the_cache_along() {
    let server = Server::start();
    let mut con = server.conn();
    for how in [
        vec!["DEL"],
        vec!["UNLINK"],
        vec!["PEXPIRE", "1"],
        vec!["SET"],
    ] {
        rotate(&mut con, "a", &["ADD", &ec("a1", 1), "PROMOTE", "a1"]).unwrap();
        filled(&mut con, "a");
        let mut args = vec!["a"];
        args.extend(&how[1..]);
        if how[0] == "SET" {
            args.push("x");
        }
        let _: redis::Value = cmd(how[0], &args).query(&mut con).unwrap();
        wait_for("the cache gone", || cache(&mut con, "a").is_none());
        let _: i64 = cmd("DEL", &["a"]).query(&mut con).unwrap();
    }
}

#[test]
fn copies_restores_and_renames_are_registered_and_served() {
    let server = Server::start();
    let mut con = server.conn();
    rotate(&mut con, "a", &["ADD", &ec("a1", 1), "PROMOTE", "a1"]).unwrap();
    let doc = get(&mut con, "a");
    let _: i64 = cmd("COPY", &["a", "b"]).query(&mut con).unwrap();
    let dump: Vec<u8> = cmd("DUMP", &["a"]).query(&mut con).unwrap();
    let _: () = redis::cmd("RESTORE")
        .arg("c")
        .arg(0)
        .arg(dump)
        .query(&mut con)
        .unwrap();
    wait_for("copy and restore registered", || {
        stats(&mut con)["jwt_jwks_key_sets"] == 3
    });
    let _: () = cmd("RENAME", &["c", "d"]).query(&mut con).unwrap();
    assert_eq!(get(&mut con, "d"), doc, "served at the new name");
    assert_eq!(get(&mut con, "c"), None);
    wait_for("the rename registered at first use", || {
        stats(&mut con)["jwt_jwks_key_sets"] == 3
    });
    filled(&mut con, "d");
}

#[test]
fn a_renamed_key_set_keeps_its_schedule_from_its_first_use() {
    let server = Server::start();
    let mut con = server.conn();
    rotate(&mut con, "a", &["ADD", &ec("a1", 1), "PROMOTE", "a1"]).unwrap();
    let _: redis::Value = cmd("JWKS.POLICY", &["a", "PROMOTE-AFTER", "300"])
        .query(&mut con)
        .unwrap();
    rotate(&mut con, "a", &["ADD", &ec("a2", 2)]).unwrap();
    let _: () = cmd("RENAME", &["a", "b"]).query(&mut con).unwrap();
    let _ = get(&mut con, "b");
    wait_for("the promotion at the new name", || {
        let info: redis::Value = cmd("JWKS.INFO", &["b"]).query(&mut con).unwrap();
        as_string(&field(&info, "current")) == "a2"
    });
}

/// Reads (JWKS.GET) until the cache holds the document again.
fn healed(con: &mut Connection, key: &str) {
    wait_for("the cache healed by reads", || {
        let doc = get(con, key);
        cache(con, key) == doc
    });
}

#[test]
fn a_cache_deleted_or_overwritten_by_another_command_heals_within_a_second_of_reads() {
    let server = Server::start();
    let mut con = server.conn();
    rotate(&mut con, "a", &["ADD", &ec("a1", 1), "PROMOTE", "a1"]).unwrap();
    filled(&mut con, "a");
    let _: i64 = cmd("PEXPIRE", &[&derived("a", "cache"), "20"])
        .query(&mut con)
        .unwrap();
    wait_for("the cache expired", || cache(&mut con, "a").is_none());
    let started = std::time::Instant::now();
    healed(&mut con, "a");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    let _: () = cmd("SET", &[&derived("a", "cache"), "forged"])
        .query(&mut con)
        .unwrap();
    // JWKS.GET serves the key set's own document all along.
    assert_eq!(get(&mut con, "a").map(|d| d.contains("a1")), Some(true));
    let started = std::time::Instant::now();
    healed(&mut con, "a");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
}

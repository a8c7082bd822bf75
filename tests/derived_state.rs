//! With `keyspace-hook yes`: `JWKS.GET K` returns exactly the document of the key set at K,
//! or nil, and the cache key holds that document or nothing at once, whatever generic Redis
//! commands do to K or its derived keys: each command of the list in its own test, on a
//! real server. (Without the hook, tests/default_upkeep.rs.)

mod common;

use std::collections::HashMap;

use common::*;
use redis::{Connection, Value};

fn hooked() -> Server {
    Server::with_module_args(&["keyspace-hook", "yes"], &[])
}

/// Kids of a JWKS document, in order.
fn kids(doc: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(doc).expect("JSON document");
    v["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn get(con: &mut Connection, key: &str) -> Option<String> {
    cmd("JWKS.GET", &[key]).query(con).expect("JWKS.GET")
}

fn served(con: &mut Connection, key: &str) -> Option<Vec<String>> {
    get(con, key).map(|d| kids(&d))
}

fn cache(con: &mut Connection, key: &str) -> Option<String> {
    cmd("GET", &[derived(key, "cache")])
        .query(con)
        .expect("GET cache")
}

/// The cache of `key` holds exactly what JWKS.GET serves, or nothing. Checked at once
/// where the clean-up runs right after the command (Valkey), else within a short wait.
fn assert_cache_true(con: &mut Connection, key: &str) {
    let ok = |con: &mut Connection| match cache(con, key) {
        None => true,
        Some(c) => Some(c) == get(con, key),
    };
    if cleanup_is_immediate() {
        assert!(ok(con), "cache of {key} does not hold its document");
    } else {
        wait_for(&format!("cache of {key} to be true"), || ok(con));
    }
}

/// Reads the key set so the module fills its cache, and waits until it has.
fn fill(con: &mut Connection, key: &str) {
    let doc = get(con, key).expect("a key set");
    wait_for(&format!("cache of {key} filled"), || {
        cache(con, key).as_deref() == Some(doc.as_str())
    });
}

/// Two key sets, `a` (kid a1) and `b` (kid b1), both read (caches filled).
fn two_sets(con: &mut Connection) {
    let _: i64 = cmd("DEL", &["a", "b"]).query(con).unwrap();
    rotate(con, "a", &["ADD", &ec("a1", 1), "PROMOTE", "a1"]).unwrap();
    rotate(con, "b", &["ADD", &ec("b1", 2), "PROMOTE", "b1"]).unwrap();
    fill(con, "a");
    fill(con, "b");
}

fn run(con: &mut Connection, args: &[&str]) -> Value {
    cmd(args[0], &args[1..])
        .query(con)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

#[test]
fn set_on_the_cache_key_is_dropped_even_with_another_sets_document() {
    let server = hooked();
    let mut con = server.conn();
    two_sets(&mut con);
    // The classic bug: something refills the cache from another (stale) key set.
    let other = get(&mut con, "b").unwrap();
    for value in [other.as_str(), "forged"] {
        run(&mut con, &["SET", &derived("a", "cache"), value]);
        assert_cache_true(&mut con, "a");
        assert_eq!(served(&mut con, "a"), Some(vec!["a1".into()]));
    }
    for args in [
        vec!["APPEND", "{a}:cache", "x"],
        vec!["SETRANGE", "{a}:cache", "0", "{"],
        vec!["SET", "{a}:cache", "x", "EX", "100"],
        vec!["GETSET", "{a}:cache", "y"],
        vec!["MSET", "{a}:cache", "z", "other", "1"],
    ] {
        fill(&mut con, "a");
        run(&mut con, &args);
        assert_cache_true(&mut con, "a");
    }
    // A name with no key set is not the module's: its value is left alone.
    run(&mut con, &["SET", &derived("nothing", "cache"), &other]);
    assert_cache_true(&mut con, "a");
    assert_eq!(cache(&mut con, "nothing"), Some(other.clone()));
    // The module refills a dropped cache on the next read.
    fill(&mut con, "a");
}

#[test]
fn del_unlink_and_expiry_of_the_key_set_drop_its_cache() {
    let server = hooked();
    let mut con = server.conn();
    two_sets(&mut con);
    run(&mut con, &["DEL", "a"]);
    assert_eq!(get(&mut con, "a"), None);
    assert_cache_true(&mut con, "a");
    run(&mut con, &["UNLINK", "b"]);
    assert_eq!(get(&mut con, "b"), None);
    assert_cache_true(&mut con, "b");

    two_sets(&mut con);
    run(&mut con, &["PEXPIRE", "a", "20"]);
    run(&mut con, &["EXPIRE", "b", "0"]);
    assert_eq!(get(&mut con, "b"), None);
    assert_cache_true(&mut con, "b");
    wait_for("a to expire", || get(&mut con, "a").is_none());
    assert_cache_true(&mut con, "a");
    // PERSIST on a key set is harmless.
    two_sets(&mut con);
    run(&mut con, &["PEXPIRE", "a", "100000"]);
    run(&mut con, &["PERSIST", "a"]);
    assert_cache_true(&mut con, "a");
    assert_eq!(served(&mut con, "a"), Some(vec!["a1".into()]));
}

#[test]
fn del_expiry_and_eviction_of_the_cache_key_are_refilled() {
    let server = hooked();
    let mut con = server.conn();
    two_sets(&mut con);
    run(&mut con, &["DEL", &derived("a", "cache")]);
    fill(&mut con, "a");
    run(&mut con, &["PEXPIRE", &derived("a", "cache"), "10"]);
    wait_for("cache to expire", || cache(&mut con, "a").is_none());
    fill(&mut con, "a");
}

#[test]
fn rename_and_renamenx_in_both_directions() {
    let server = hooked();
    let mut con = server.conn();
    two_sets(&mut con);
    // Onto a name that has a key set and a cache: the cache of the old set must go.
    run(&mut con, &["RENAME", "b", "a"]);
    assert_eq!(served(&mut con, "a"), Some(vec!["b1".into()]));
    assert_eq!(get(&mut con, "b"), None);
    assert_cache_true(&mut con, "a");
    assert_cache_true(&mut con, "b");
    fill(&mut con, "a");
    // Away to a fresh name: the old name's cache goes, the new name fills on read.
    run(&mut con, &["RENAMENX", "a", "c"]);
    assert_eq!(get(&mut con, "a"), None);
    assert_cache_true(&mut con, "a");
    assert_eq!(served(&mut con, "c"), Some(vec!["b1".into()]));
    fill(&mut con, "c");
    // The cache keys themselves renamed: onto another set's cache, and away.
    two_sets(&mut con);
    run(
        &mut con,
        &["RENAME", &derived("b", "cache"), &derived("a", "cache")],
    );
    assert_cache_true(&mut con, "a");
    assert_cache_true(&mut con, "b");
    fill(&mut con, "a");
    run(&mut con, &["RENAME", &derived("a", "cache"), "elsewhere"]);
    assert_cache_true(&mut con, "a");
    fill(&mut con, "a");
    // A key set renamed onto a name no key set may have is still served as what it is,
    // but the module keeps no cache for it (that name's derived keys are another's).
    run(&mut con, &["RENAME", "a", "{b}"]);
    assert_eq!(served(&mut con, "{b}"), Some(vec!["a1".into()]));
    assert_cache_true(&mut con, "b");
    assert_eq!(served(&mut con, "b"), Some(vec!["b1".into()]));
}

#[test]
fn copy_with_and_without_replace_and_to_another_db() {
    let server = hooked();
    let mut con = server.conn();
    two_sets(&mut con);
    run(&mut con, &["COPY", "b", "a", "REPLACE"]);
    assert_eq!(served(&mut con, "a"), Some(vec!["b1".into()]));
    assert_cache_true(&mut con, "a");
    run(&mut con, &["COPY", "a", "c"]);
    assert_eq!(served(&mut con, "c"), Some(vec!["b1".into()]));
    assert_cache_true(&mut con, "c");
    fill(&mut con, "c");
    run(&mut con, &["COPY", "c", "c", "DB", "1"]);
    run(&mut con, &["SELECT", "1"]);
    assert_eq!(served(&mut con, "c"), Some(vec!["b1".into()]));
    assert_cache_true(&mut con, "c");
    run(&mut con, &["SELECT", "0"]);
    // Copying a cache key onto another's cache name.
    two_sets(&mut con);
    run(
        &mut con,
        &[
            "COPY",
            &derived("b", "cache"),
            &derived("a", "cache"),
            "REPLACE",
        ],
    );
    assert_cache_true(&mut con, "a");
}

#[test]
fn move_and_swapdb_and_flushdb() {
    let server = hooked();
    let mut con = server.conn();
    two_sets(&mut con);
    run(&mut con, &["MOVE", "a", "1"]);
    assert_eq!(get(&mut con, "a"), None);
    assert_cache_true(&mut con, "a");
    run(&mut con, &["SELECT", "1"]);
    assert_eq!(served(&mut con, "a"), Some(vec!["a1".into()]));
    assert_cache_true(&mut con, "a");
    fill(&mut con, "a");
    // A cache moved on its own into a db where the set has another document.
    run(&mut con, &["SELECT", "0"]);
    rotate(&mut con, "a", &["ADD", &ec("x1", 3), "PROMOTE", "x1"]).unwrap();
    fill(&mut con, "a");
    run(&mut con, &["SELECT", "1"]);
    run(&mut con, &["DEL", &derived("a", "cache")]);
    run(&mut con, &["SELECT", "0"]);
    run(&mut con, &["MOVE", &derived("a", "cache"), "1"]);
    assert_cache_true(&mut con, "a");
    run(&mut con, &["SELECT", "1"]);
    assert_cache_true(&mut con, "a");
    assert_eq!(served(&mut con, "a"), Some(vec!["a1".into()]));
    run(&mut con, &["SELECT", "0"]);

    run(&mut con, &["SWAPDB", "0", "1"]);
    for db in ["0", "1"] {
        run(&mut con, &["SELECT", db]);
        for key in ["a", "b"] {
            assert_cache_true(&mut con, key);
        }
    }
    run(&mut con, &["SELECT", "0"]);
    assert_eq!(served(&mut con, "a"), Some(vec!["a1".into()]));
    run(&mut con, &["FLUSHDB"]);
    assert_eq!(get(&mut con, "a"), None);
    assert_eq!(cache(&mut con, "a"), None);
    run(&mut con, &["FLUSHALL", "ASYNC"]);
    run(&mut con, &["SELECT", "1"]);
    assert_eq!(get(&mut con, "a"), None);
}

#[test]
fn restore_replace_with_an_older_dump_and_a_cache_restored_alone() {
    let server = hooked();
    let mut con = server.conn();
    two_sets(&mut con);
    let dump: Vec<u8> = cmd("DUMP", &["a"]).query(&mut con).unwrap();
    let cache_dump: Vec<u8> = cmd("DUMP", &[derived("a", "cache")])
        .query(&mut con)
        .unwrap();
    rotate(&mut con, "a", &["ADD", &ec("a2", 4), "PROMOTE", "a2"]).unwrap();
    fill(&mut con, "a");
    let _: () = redis::cmd("RESTORE")
        .arg("a")
        .arg(0)
        .arg(dump.as_slice())
        .arg("REPLACE")
        .query(&mut con)
        .unwrap();
    assert_eq!(served(&mut con, "a"), Some(vec!["a1".into()]));
    assert_cache_true(&mut con, "a");
    // The new version's cache restored over the old version's.
    fill(&mut con, "a");
    rotate(&mut con, "a", &["ADD", &ec("a3", 5)]).unwrap();
    let _: () = redis::cmd("RESTORE")
        .arg(derived("a", "cache"))
        .arg(0)
        .arg(cache_dump.as_slice())
        .arg("REPLACE")
        .query(&mut con)
        .unwrap();
    assert_cache_true(&mut con, "a");
}

#[test]
fn eviction_of_key_sets_and_caches_keeps_the_cache_true() {
    let server = Server::with_module_args(
        &["keyspace-hook", "yes"],
        &["--maxmemory", "4mb", "--maxmemory-policy", "allkeys-random"],
    );
    let mut con = server.conn();
    for i in 0..20 {
        let key = format!("set{i}");
        rotate(&mut con, &key, &["ADD", &ec("k", i + 1), "PROMOTE", "k"]).unwrap();
        let _ = get(&mut con, &key);
    }
    let filler = "x".repeat(10_000);
    for i in 0..2_000 {
        let _: redis::RedisResult<()> =
            cmd("SET", &[format!("junk{i}"), filler.clone()]).query(&mut con);
        if i % 200 == 0 {
            for j in 0..20 {
                let key = format!("set{j}");
                let _ = get(&mut con, &key);
                assert_cache_true(&mut con, &key);
            }
        }
    }
    let evicted: HashMap<String, String> = redis::cmd("INFO")
        .arg("stats")
        .query::<String>(&mut con)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect();
    assert!(evicted["evicted_keys"].parse::<u64>().unwrap() > 0);
    // The server warned at start that this policy can evict key sets.
    server.wait_log("can evict key sets", 1);
}

#[test]
fn migrate_moves_the_set_and_leaves_no_stale_cache_on_either_side() {
    let source = hooked();
    let target = hooked();
    let mut s = source.conn();
    let mut t = target.conn();
    two_sets(&mut s);
    // A stale cache for `a` waiting on the target.
    run(&mut t, &["SET", &derived("a", "cache"), "stale"]);
    let _: Value = cmd(
        "MIGRATE",
        &["127.0.0.1", &target.port.to_string(), "a", "0", "5000"],
    )
    .query(&mut s)
    .unwrap();
    assert_eq!(get(&mut s, "a"), None);
    assert_cache_true(&mut s, "a");
    assert_eq!(served(&mut t, "a"), Some(vec!["a1".into()]));
    assert_cache_true(&mut t, "a");
    fill(&mut t, "a");
    // With its cache in the same MIGRATE.
    let _: Value = cmd(
        "MIGRATE",
        &[
            "127.0.0.1",
            &target.port.to_string(),
            "",
            "0",
            "5000",
            "KEYS",
            "b",
            &derived("b", "cache"),
        ],
    )
    .query(&mut s)
    .unwrap();
    assert_eq!(served(&mut t, "b"), Some(vec!["b1".into()]));
    assert_cache_true(&mut t, "b");
    let stats: Vec<String> = cmd("JWKS.STATS", &[] as &[&str]).query(&mut t).unwrap();
    let at = stats.iter().position(|s| s == "jwt_jwks_key_sets").unwrap();
    assert_eq!(stats[at + 1], "2");
}

#[test]
fn replicas_follow_the_clean_up() {
    let primary = hooked();
    let replica = hooked();
    let mut p = primary.conn();
    let mut r = replica.conn();
    replica.replicate(&primary);
    two_sets(&mut p);
    let _: i64 = cmd("WAIT", &["1", "2000"]).query(&mut p).unwrap();
    assert_eq!(served(&mut r, "a"), Some(vec!["a1".into()]));
    run(&mut p, &["SET", &derived("a", "cache"), "forged"]);
    run(&mut p, &["RENAME", "b", "c"]);
    assert_cache_true(&mut p, "a");
    assert_cache_true(&mut p, "b");
    let _: i64 = cmd("WAIT", &["1", "2000"]).query(&mut p).unwrap();
    wait_for("replica caches true", || {
        cache(&mut r, "a").is_none_or(|c| Some(c) == get(&mut r, "a"))
            && cache(&mut r, "b").is_none()
    });
    assert_eq!(served(&mut r, "c"), Some(vec!["b1".into()]));
    wait_for("same data", || digest(&mut p) == digest(&mut r));
}

#[test]
fn cleanup_is_part_of_the_command_where_the_server_allows_it() {
    if !cleanup_is_immediate() {
        return; // Redis 7.0 has no post-notification jobs.
    }
    let server = hooked();
    let mut con = server.conn();
    two_sets(&mut con);
    // One pipeline: nothing can run between the command and the read.
    let (_, c): (i64, Option<String>) = redis::pipe()
        .cmd("DEL")
        .arg("a")
        .cmd("GET")
        .arg(derived("a", "cache"))
        .query(&mut con)
        .unwrap();
    assert_eq!(c, None);
    let (_, c): ((), Option<String>) = redis::pipe()
        .cmd("SET")
        .arg(derived("b", "cache"))
        .arg("forged")
        .cmd("GET")
        .arg(derived("b", "cache"))
        .query(&mut con)
        .unwrap();
    assert_eq!(c, None);
}

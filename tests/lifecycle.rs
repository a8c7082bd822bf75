//! The lifecycle policy, with millisecond-scale policies: JWKS.POLICY, scheduled promotion
//! and retirement on time and exactly once as ordinary changes, guards with FORCE, DRYRUN,
//! the cache bounded by the next change, and the schedule across replicas, failover,
//! restarts from AOF and RDB, DEBUG RELOAD, RESTORE and COPY.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use redis::{Connection, Value};

const K: &str = "jwks:{life}";

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn info(con: &mut Connection, key: &str) -> Value {
    cmd("JWKS.INFO", &[key]).query(con).unwrap()
}

fn generation(con: &mut Connection, key: &str) -> i64 {
    as_int(&field(&info(con, key), "generation"))
}

fn states(con: &mut Connection, key: &str) -> Vec<(String, String)> {
    match field(&info(con, key), "keys") {
        Value::Array(keys) => keys
            .iter()
            .map(|k| (as_string(&field(k, "kid")), as_string(&field(k, "state"))))
            .collect(),
        other => panic!("{other:?}"),
    }
}

fn policy(con: &mut Connection, key: &str, promote: u64, retire: u64) -> Value {
    cmd(
        "JWKS.POLICY",
        &[
            key,
            "PROMOTE-AFTER",
            &promote.to_string(),
            "RETIRE-AFTER",
            &retire.to_string(),
        ],
    )
    .query(con)
    .unwrap()
}

/// Audit entries with their stream IDs' milliseconds.
fn trail(con: &mut Connection, key: &str) -> Vec<(i64, HashMap<String, String>)> {
    let entries: Vec<(String, Vec<(String, String)>)> =
        cmd("XRANGE", &[&derived(key, "audit"), "-", "+"])
            .query(con)
            .unwrap();
    entries
        .into_iter()
        .map(|(id, fields)| {
            let ms = id.split('-').next().unwrap().parse().unwrap();
            (ms, fields.into_iter().collect())
        })
        .collect()
}

fn added_ms(con: &mut Connection, key: &str, kid: &str) -> i64 {
    match field(&info(con, key), "keys") {
        Value::Array(keys) => keys
            .iter()
            .find(|k| as_string(&field(k, "kid")) == kid)
            .map(|k| as_int(&field(k, "added_ms")))
            .unwrap(),
        other => panic!("{other:?}"),
    }
}

/// `a` current; policy set; `b` added as next.
fn started(con: &mut Connection, promote: u64, retire: u64) {
    rotate(con, K, &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    policy(con, K, promote, retire);
    rotate(con, K, &["ADD", &ec("b", 2)]).unwrap();
}

#[test]
fn the_policy_command_and_what_info_shows() {
    let server = Server::start();
    let mut con = server.conn();
    let err = cmd("JWKS.POLICY", &[K, "PROMOTE-AFTER", "5"])
        .query::<Value>(&mut con)
        .unwrap_err();
    assert_eq!(err.code(), Some("NOKEYSET"), "{err}");
    rotate(&mut con, K, &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let reply = policy(&mut con, K, 3_600_000, 7_200_000);
    assert_eq!(as_int(&field(&reply, "promote_after_ms")), 3_600_000);
    assert_eq!(field(&reply, "next_change"), Value::Nil);
    rotate(&mut con, K, &["ADD", &ec("b", 2)]).unwrap();
    let i = info(&mut con, K);
    assert_eq!(
        as_int(&field(&field(&i, "policy"), "retire_after_ms")),
        7_200_000
    );
    let next = field(&i, "next_change");
    assert_eq!(as_string(&field(&next, "action")), "promote");
    assert_eq!(as_string(&field(&next, "kid")), "b");
    assert_eq!(
        as_int(&field(&next, "at_ms")),
        added_ms(&mut con, K, "b") + 3_600_000
    );
    // Only the part given changes; no options only reads; the generation does not move.
    let reply: Value = cmd("JWKS.POLICY", &[K, "RETIRE-AFTER", "0"])
        .query(&mut con)
        .unwrap();
    assert_eq!(as_int(&field(&reply, "promote_after_ms")), 3_600_000);
    assert_eq!(as_int(&field(&reply, "retire_after_ms")), 0);
    let read: Value = cmd("JWKS.POLICY", &[K]).query(&mut con).unwrap();
    assert_eq!(read, reply);
    assert_eq!(generation(&mut con, K), 2);
    let set_entries: Vec<_> = trail(&mut con, K)
        .into_iter()
        .filter(|(_, e)| e["action"] == "JWKS_POLICY_SET")
        .collect();
    assert_eq!(set_entries.len(), 2);
    assert_eq!(set_entries[1].1["retire_after_ms"], "0");
    let before = digest(&mut con);
    for (args, needle) in [
        (vec![K, "PROMOTE-AFTER"], "needs a value"),
        (vec![K, "PROMOTE-AFTER", "-1"], "milliseconds"),
        (vec![K, "PROMOTE-AFTER", "1", "PROMOTE-AFTER", "2"], "twice"),
        (vec![K, "EVERY", "5"], "unknown option"),
    ] {
        let err = cmd("JWKS.POLICY", &args)
            .query::<Value>(&mut con)
            .unwrap_err();
        assert!(err.to_string().contains(needle), "{args:?}: {err}");
    }
    assert_eq!(digest(&mut con), before);
}

#[test]
fn scheduled_changes_happen_on_time_exactly_once_as_ordinary_changes() {
    let server = Server::start();
    let mut con = server.conn();
    started(&mut con, 200, 200);
    let added = added_ms(&mut con, K, "b");
    let doc_before: String = cmd("JWKS.GET", &[K]).query(&mut con).unwrap();
    wait_for("b promoted", || {
        states(&mut con, K)[0] == ("b".into(), "current".into())
    });
    wait_for("a retired", || states(&mut con, K).len() == 1);
    sleep_ms(100);
    let changes: Vec<(i64, HashMap<String, String>)> = trail(&mut con, K)
        .into_iter()
        .filter(|(_, e)| e["reason"] == "policy" && e["action"] != "JWKS_POLICY_SET")
        .collect();
    let actions: Vec<&str> = changes.iter().map(|(_, e)| e["action"].as_str()).collect();
    assert_eq!(
        actions,
        [
            "JWKS_KEY_PROMOTED",
            "JWKS_CACHE_INVALIDATED",
            "JWKS_KEY_RETIRED",
            "JWKS_CACHE_INVALIDATED"
        ],
        "exactly once each"
    );
    for (ms, e) in &changes {
        assert_eq!(e["user"], "(schedule)");
        let kid = e.get("kid").or(e.get("kids")).map(String::as_str);
        let due = if kid == Some("a") {
            added + 400
        } else {
            added + 200
        };
        assert!(
            *ms >= due && *ms <= due + 100,
            "{e:?} applied at {ms}, due {due}"
        );
    }
    assert_eq!(generation(&mut con, K), 4);
    let doc: String = cmd("JWKS.GET", &[K]).query(&mut con).unwrap();
    assert_ne!(doc, doc_before);
    assert!(doc.contains("\"b\"") && !doc.contains("\"a\""));
    let s: Vec<String> = cmd("JWKS.STATS", &[] as &[&str]).query(&mut con).unwrap();
    let at = s
        .iter()
        .position(|n| n == "jwt_jwks_scheduled_changes_total")
        .unwrap();
    assert_eq!(s[at + 1], "2");
    server.wait_log("reason='policy' generation=4 changes=1", 1);
}

#[test]
fn guards_force_and_dryrun() {
    let server = Server::start();
    let mut con = server.conn();
    started(&mut con, 60_000, 60_000);
    let err = rotate(&mut con, K, &["PROMOTE", "b"]).unwrap_err();
    assert_eq!(err.code(), Some("TOOEARLY"), "{err}");
    assert!(
        err.to_string().contains("PROMOTE-AFTER is 60000 ms"),
        "{err}"
    );
    // DRYRUN: the same reply as the real command, plus the document; nothing written.
    let before = digest(&mut con);
    let dry = rotate(&mut con, K, &["DRYRUN", "FORCE", "PROMOTE", "b"]).unwrap();
    assert_eq!(digest(&mut con), before);
    let dry_doc = as_string(&field(&dry, "document"));
    let real = rotate(&mut con, K, &["FORCE", "PROMOTE", "b"]).unwrap();
    for name in [
        "generation",
        "current",
        "published",
        "changed",
        "invalidated",
        "cache_deleted",
    ] {
        assert_eq!(field(&dry, name), field(&real, name), "{name}");
    }
    let doc: String = cmd("JWKS.GET", &[K]).query(&mut con).unwrap();
    assert_eq!(dry_doc, doc);
    let forced: Vec<_> = trail(&mut con, K)
        .into_iter()
        .filter(|(_, e)| e.contains_key("forced"))
        .collect();
    assert_eq!(forced.len(), 2, "{forced:?}");
    assert_eq!(forced[0].1["action"], "JWKS_KEY_PROMOTED");
    // The dry run logged nothing: one line per real change (generations 1, 2 and 3).
    let log = server.wait_log("generation=3 changes=1", 1);
    assert_eq!(log.matches("JWKS_CACHE_INVALIDATED").count(), 3, "{log}");
    // A previous key demoted just now may not be retired; a next key may.
    let err = rotate(&mut con, K, &["RETIRE", "a"]).unwrap_err();
    assert_eq!(err.code(), Some("TOOEARLY"), "{err}");
    rotate(&mut con, K, &["ADD", &ec("c", 3)]).unwrap();
    rotate(&mut con, K, &["RETIRE", "c"]).unwrap();
}

#[test]
fn the_cache_never_outlives_the_next_change() {
    let server = Server::start();
    let mut con = server.conn();
    started(&mut con, 30_000, 0);
    let due = added_ms(&mut con, K, "b") + 30_000;
    let _: String = cmd("JWKS.GET", &[K]).query(&mut con).unwrap();
    wait_for("cache filled", || {
        cmd("EXISTS", &[derived(K, "cache")])
            .query::<i64>(&mut con)
            .unwrap()
            == 1
    });
    let expire_at: i64 = cmd("PEXPIRETIME", &[derived(K, "cache")])
        .query(&mut con)
        .unwrap();
    assert!(expire_at <= due, "{expire_at} > {due}");
    let meta: Value = cmd("JWKS.GET", &[K, "META"]).query(&mut con).unwrap();
    let ttl = as_int(&field(&meta, "ttl_ms"));
    assert!(ttl > 0 && ttl <= 30_000, "{ttl}");
    // Shortening the policy drops a cache that would outlive the new next change.
    policy(&mut con, K, 10_000, 0);
    let exists: i64 = cmd("EXISTS", &[derived(K, "cache")])
        .query(&mut con)
        .unwrap();
    assert_eq!(exists, 0);
}

#[test]
fn replicas_follow_never_apply_alone_and_take_over_on_failover() {
    let mut primary = Server::start();
    let replica = Server::start();
    let mut p = primary.conn();
    let mut r = replica.conn();
    replica.replicate(&primary);
    started(&mut p, 300, 0);
    let _: i64 = cmd("WAIT", &["1", "2000"]).query(&mut p).unwrap();
    wait_for("replica has b", || states(&mut r, K).len() == 2);
    primary.kill();
    sleep_ms(500);
    // The promotion is overdue, but a replica never applies a policy on its own.
    assert_eq!(generation(&mut r, K), 2);
    let _: () = cmd("REPLICAOF", &["NO", "ONE"]).query(&mut r).unwrap();
    wait_for("the new primary applies it", || generation(&mut r, K) == 3);
    assert_eq!(states(&mut r, K)[0], ("b".into(), "current".into()));
    let promoted: Vec<_> = trail(&mut r, K)
        .into_iter()
        .filter(|(_, e)| e["action"] == "JWKS_KEY_PROMOTED" && e["kid"] == "b")
        .collect();
    assert_eq!(promoted.len(), 1);
}

#[test]
fn a_change_that_falls_due_while_the_server_is_down_is_applied_at_start_in_order() {
    let mut server = Server::with_args(&["--appendonly", "yes", "--appendfsync", "always"]);
    let mut con = server.conn();
    started(&mut con, 200, 200);
    let added = added_ms(&mut con, K, "b");
    server.kill();
    sleep_ms(600);
    server.start_again();
    let mut con = server.conn();
    wait_for("both changes", || states(&mut con, K).len() == 1);
    let changes: Vec<(i64, HashMap<String, String>)> = trail(&mut con, K)
        .into_iter()
        .filter(|(_, e)| e["reason"] == "policy" && e["action"].starts_with("JWKS_KEY_"))
        .collect();
    assert_eq!(changes.len(), 2, "{changes:?}");
    // Real times in the audit: each entry's timestamp is its due time's second, and the
    // promoted key's promoted_ms is the due time itself.
    assert_eq!(changes[0].1["action"], "JWKS_KEY_PROMOTED");
    assert_eq!(changes[1].1["action"], "JWKS_KEY_RETIRED");
    let i = info(&mut con, K);
    let b = match field(&i, "keys") {
        Value::Array(keys) => keys[0].clone(),
        _ => unreachable!(),
    };
    assert_eq!(as_int(&field(&b, "promoted_ms")), added + 200);
    let stamp = |ms: i64| {
        let secs = ms / 1000;
        let out = std::process::Command::new("date")
            .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    assert_eq!(changes[0].1["timestamp"], stamp(added + 200));
    assert_eq!(changes[1].1["timestamp"], stamp(added + 400));
}

#[test]
fn rdb_restart_debug_reload_restore_and_copy_keep_the_schedule() {
    let mut server = Server::start();
    let mut con = server.conn();
    started(&mut con, 400, 0);
    let _: () = cmd("DEBUG", &["RELOAD"]).query(&mut con).unwrap();
    let dump: Vec<u8> = cmd("DUMP", &[K]).query(&mut con).unwrap();
    let _: () = redis::cmd("RESTORE")
        .arg("jwks:{restored}")
        .arg(0)
        .arg(dump)
        .query(&mut con)
        .unwrap();
    let _: i64 = cmd("COPY", &[K, "jwks:{copied}"]).query(&mut con).unwrap();
    let _: () = cmd("SAVE", &[] as &[&str]).query(&mut con).unwrap();
    server.restart();
    let mut con = server.conn();
    for key in [K, "jwks:{restored}", "jwks:{copied}"] {
        wait_for(&format!("{key} promoted"), || {
            generation(&mut con, key) == 3
        });
        assert_eq!(states(&mut con, key)[0], ("b".into(), "current".into()));
    }
}

#[test]
fn many_key_sets_due_at_once_all_change() {
    let server = Server::start();
    let mut con = server.conn();
    for i in 0..100 {
        let key = format!("jwks:{{many{i}}}");
        rotate(&mut con, &key, &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
        policy(&mut con, &key, 150, 0);
        rotate(&mut con, &key, &["ADD", &ec("b", 2)]).unwrap();
    }
    wait_for("all promoted", || {
        (0..100).all(|i| generation(&mut con, &format!("jwks:{{many{i}}}")) == 3)
    });
}

#[test]
fn a_far_future_change_does_not_make_the_event_loop_spin() {
    // Redis 7.0 overflows a module timer rescheduled past ~35 minutes (the loop then spins
    // on it): the schedule never arms one that long.
    let server = Server::start();
    let mut con = server.conn();
    started(&mut con, 3_600_000, 0);
    rotate(&mut con, "jwks:{other}", &["ADD", &ec("a", 1)]).unwrap();
    // Another module timer fires (the cache fill a read asks for).
    let _: String = cmd("JWKS.GET", &["jwks:{other}"]).query(&mut con).unwrap();
    let cpu = |con: &mut Connection| -> f64 {
        let info: String = cmd("INFO", &["cpu"]).query(con).unwrap();
        info.lines()
            .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
            .map(|l| l.split(':').nth(1).unwrap().trim().parse::<f64>().unwrap())
            .sum()
    };
    sleep_ms(50);
    let before = cpu(&mut con);
    sleep_ms(500);
    let used = cpu(&mut con) - before;
    assert!(
        used < 0.2,
        "the server used {used:.2} s of CPU in 0.5 s while idle"
    );
}

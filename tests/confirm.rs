//! JWKS.POLICY CONFIRM: a next key is promoted as soon as the live verifiers hold it (and
//! MIN-WAIT has passed), within milliseconds of the confirming ack, exactly once, with
//! PROMOTE-AFTER as the ceiling; the guard and DRYRUN say what is missing; JWKS.INFO shows
//! the progress; the policy and what it needs survive reloads and replication.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use redis::{Connection, Value};

const K: &str = "jwks:{confirm}";

fn ack(con: &mut Connection, generation: i64, id: &str, ttl: u64) -> i64 {
    cmd(
        "JWKS.ACK",
        &[
            K,
            "GENERATION",
            &generation.to_string(),
            "ID",
            id,
            "TTL",
            &ttl.to_string(),
        ],
    )
    .query(con)
    .unwrap()
}

fn current(con: &mut Connection) -> String {
    let info: Value = cmd("JWKS.INFO", &[K]).query(con).unwrap();
    as_string(&field(&info, "current"))
}

fn generation(con: &mut Connection) -> i64 {
    let info: Value = cmd("JWKS.INFO", &[K]).query(con).unwrap();
    as_int(&field(&info, "generation"))
}

fn policy(con: &mut Connection, args: &[&str]) -> Value {
    let mut all = vec![K];
    all.extend_from_slice(args);
    cmd("JWKS.POLICY", &all).query(con).unwrap()
}

/// `a` current at generation 1; the policy; `b` added (generation 2).
fn started(con: &mut Connection, args: &[&str]) {
    rotate(con, K, &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    policy(con, args);
    rotate(con, K, &["ADD", &ec("b", 2)]).unwrap();
}

fn promotions(con: &mut Connection) -> Vec<HashMap<String, String>> {
    audit(con, &derived(K, "audit"))
        .into_iter()
        .filter(|e| e["action"] == "JWKS_KEY_PROMOTED" && e["kid"] == "b")
        .collect()
}

/// How long after `since` the key `b` became current (polled every millisecond).
fn promoted_within(con: &mut Connection, since: Instant, limit: Duration) -> Duration {
    loop {
        if current(con) == "b" {
            return since.elapsed();
        }
        assert!(since.elapsed() < limit, "b not promoted within {limit:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn the_confirming_ack_promotes_at_once_and_exactly_once() {
    let server = Server::start();
    let mut con = server.conn();
    started(&mut con, &["PROMOTE-AFTER", "3600000", "CONFIRM", "100"]);
    ack(&mut con, 1, "behind", 60_000);
    ack(&mut con, 2, "ahead", 60_000);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        current(&mut con),
        "a",
        "one of two verifiers does not hold b"
    );
    let info: Value = cmd("JWKS.INFO", &[K]).query(&mut con).unwrap();
    let progress = field(&info, "confirmation");
    assert_eq!(as_string(&field(&progress, "kid")), "b");
    assert_eq!(
        [
            as_int(&field(&progress, "live")),
            as_int(&field(&progress, "holding")),
            as_int(&field(&progress, "needed")),
            as_int(&field(&progress, "confirmed"))
        ],
        [2, 1, 2, 0]
    );
    let confirming = Instant::now();
    assert_eq!(ack(&mut con, 2, "behind", 60_000), 2);
    let took = promoted_within(&mut con, confirming, Duration::from_secs(2));
    assert!(took <= Duration::from_millis(100), "took {took:?}");
    let promoted = promotions(&mut con);
    assert_eq!(promoted.len(), 1);
    assert_eq!(promoted[0]["reason"], "confirmed");
    assert_eq!(generation(&mut con), 3);
    // More acks of the new generation change nothing more.
    ack(&mut con, 3, "behind", 60_000);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!((promotions(&mut con).len(), generation(&mut con)), (1, 3));
    let info: Value = cmd("JWKS.INFO", &[K]).query(&mut con).unwrap();
    assert_eq!(field(&info, "confirmation"), Value::Nil);
}

#[test]
fn min_wait_holds_a_confirmed_key_and_the_ceiling_still_comes() {
    let server = Server::start();
    let mut con = server.conn();
    started(&mut con, &["CONFIRM", "100", "MIN-WAIT", "300"]);
    let added = Instant::now();
    ack(&mut con, 2, "v", 60_000);
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(current(&mut con), "a", "MIN-WAIT not over");
    let took = promoted_within(&mut con, added, Duration::from_secs(2));
    assert!(took >= Duration::from_millis(250), "took {took:?}");

    // No verifier at all: PROMOTE-AFTER promotes on its own.
    let _: () = cmd("DEL", &[K]).query(&mut con).unwrap();
    started(&mut con, &["PROMOTE-AFTER", "200", "CONFIRM", "100"]);
    let added = Instant::now();
    let took = promoted_within(&mut con, added, Duration::from_secs(2));
    assert!(took >= Duration::from_millis(150), "took {took:?}");
    // The audit trail outlives the deleted set: the last promotion is this one.
    assert_eq!(promotions(&mut con).last().unwrap()["reason"], "policy");
}

#[test]
fn a_verifier_that_expires_no_longer_holds_the_promotion_back() {
    let server = Server::start();
    let mut con = server.conn();
    started(&mut con, &["CONFIRM", "100"]);
    ack(&mut con, 1, "dying", 1000);
    ack(&mut con, 2, "holder", 60_000);
    let since = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(current(&mut con), "a");
    let took = promoted_within(&mut con, since, Duration::from_secs(3));
    assert!(took <= Duration::from_millis(1200), "took {took:?}");
}

#[test]
fn the_guard_and_dryrun_say_what_confirmation_is_missing() {
    let server = Server::start();
    let mut con = server.conn();
    started(&mut con, &["PROMOTE-AFTER", "3600000", "CONFIRM", "50"]);
    ack(&mut con, 1, "v1", 60_000);
    ack(&mut con, 1, "v2", 60_000);
    ack(&mut con, 1, "v3", 60_000);
    for args in [vec!["DRYRUN", "PROMOTE", "b"], vec!["PROMOTE", "b"]] {
        let e = rotate(&mut con, K, &args).unwrap_err();
        assert_eq!(e.code(), Some("TOOEARLY"), "{e}");
        assert!(
            e.to_string()
                .contains("0 of 3 live verifiers hold it and CONFIRM 50 % needs 2")
                && e.to_string().contains("PROMOTE-AFTER allows it in"),
            "{e}"
        );
    }
    // Inside a transaction the scheduler cannot act between the ack and the promotion:
    // the guard accepts the promotion the confirmation allows.
    let (_, _, promoted): (i64, i64, Value) = redis::pipe()
        .atomic()
        .cmd("JWKS.ACK")
        .arg(K)
        .arg("GENERATION")
        .arg(2)
        .arg("ID")
        .arg("v1")
        .cmd("JWKS.ACK")
        .arg(K)
        .arg("GENERATION")
        .arg(2)
        .arg("ID")
        .arg("v2")
        .cmd("JWKS.ROTATE")
        .arg(K)
        .arg("PROMOTE")
        .arg("b")
        .query(&mut con)
        .unwrap();
    assert_eq!(as_int(&field(&promoted, "generation")), 3);
    assert_eq!(current(&mut con), "b");
    assert_eq!(promotions(&mut con).len(), 1);
    assert_eq!(promotions(&mut con)[0]["reason"], "key_rotation");
}

#[test]
fn the_policy_command_checks_confirm_and_audits_it() {
    let server = Server::start();
    let mut con = server.conn();
    rotate(&mut con, K, &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let reply = policy(&mut con, &["CONFIRM", "90", "MIN-WAIT", "5000"]);
    assert_eq!(as_int(&field(&reply, "confirm_pct")), 90);
    assert_eq!(as_int(&field(&reply, "min_wait_ms")), 5000);
    let set = audit(&mut con, &derived(K, "audit"))
        .into_iter()
        .rfind(|e| e["action"] == "JWKS_POLICY_SET")
        .unwrap();
    assert_eq!(
        (set["confirm_pct"].as_str(), set["min_wait_ms"].as_str()),
        ("90", "5000")
    );
    let before = digest(&mut con);
    for (args, needle) in [
        (vec![K, "CONFIRM", "101"], "percentage from 0 to 100"),
        (
            vec![K, "CONFIRM", "0", "MIN-WAIT", "5"],
            "MIN-WAIT needs CONFIRM",
        ),
        (vec![K, "CONFIRM"], "needs a value"),
        (vec![K, "MIN-WAIT", "x"], "milliseconds"),
    ] {
        let err = cmd("JWKS.POLICY", &args)
            .query::<Value>(&mut con)
            .unwrap_err();
        assert!(err.to_string().contains(needle), "{args:?}: {err}");
    }
    assert_eq!(digest(&mut con), before);
    // CONFIRM 0 turns MIN-WAIT off with it.
    let reply = policy(&mut con, &["CONFIRM", "0"]);
    assert_eq!(as_int(&field(&reply, "min_wait_ms")), 0);
}

#[test]
fn confirmation_survives_reload_and_replication_and_a_new_primary_takes_over() {
    let primary = Server::start();
    let replica = Server::start();
    replica.replicate(&primary);
    let mut con = primary.conn();
    started(&mut con, &["CONFIRM", "100"]);
    // The key's publishing generation is stored (format 3): after a reload, a verifier
    // holding generation 1 still does not count as holding b.
    let _: () = cmd("DEBUG", &["RELOAD"]).query(&mut con).unwrap();
    ack(&mut con, 1, "old", 60_000);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(current(&mut con), "a");
    let mut r = replica.conn();
    wait_for("replica has the policy", || {
        let info: Value = cmd("JWKS.INFO", &[K]).query(&mut r).unwrap();
        as_int(&field(&field(&info, "policy"), "confirm_pct")) == 100
    });
    // Failover: the replica becomes primary; the fleet reports to it; it promotes.
    let _: () = cmd("REPLICAOF", &["NO", "ONE"]).query(&mut r).unwrap();
    let since = Instant::now();
    ack(&mut r, 2, "new-primary-verifier", 60_000);
    let took = promoted_within(&mut r, since, Duration::from_secs(2));
    assert!(took <= Duration::from_millis(100), "took {took:?}");
    assert_eq!(promotions(&mut r).len(), 1);
}

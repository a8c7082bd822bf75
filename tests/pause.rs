//! Clients paused for writes (`CLIENT PAUSE WRITE`, a planned `FAILOVER`): the module writes
//! nothing and propagates nothing while the pause lasts (with AOF on and a replica attached
//! a write would fail a server assertion), reads answer, and a cache fill or a scheduled
//! change that falls in the pause happens right after it, once.

mod common;

use std::time::{Duration, Instant};

use common::*;
use redis::Connection;

const K: &str = "jwks:{p}";

fn fills(con: &mut Connection) -> i64 {
    let n: Option<i64> = cmd(
        "HGET",
        &[&derived(K, "metrics"), "jwt_jwks_cache_fills_total"],
    )
    .query(con)
    .unwrap();
    n.unwrap_or(0)
}

fn offset(con: &mut Connection) -> String {
    let info: String = cmd("INFO", &["replication"]).query(con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// A primary with AOF on and a replica attached: the set-up in which a write during a pause
/// is fatal.
fn primary_with_replica() -> (Server, Server) {
    let primary = Server::with_args(&["--appendonly", "yes"]);
    let replica = Server::start();
    replica.replicate(&primary);
    (primary, replica)
}

#[test]
fn a_read_during_a_write_pause_fills_the_cache_after_it_once() {
    let (primary, _replica) = primary_with_replica();
    let mut con = primary.conn();
    rotate(&mut con, K, &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let _: i64 = cmd("JWKS.INVALIDATE", &[K]).query(&mut con).unwrap();
    let before = fills(&mut con);
    let _: () = cmd("CLIENT", &["PAUSE", "400", "WRITE"])
        .query(&mut con)
        .unwrap();
    let at = offset(&mut con);
    let doc: Option<String> = cmd("JWKS.GET", &[K]).query(&mut con).unwrap();
    assert!(doc.is_some(), "reads answer during the pause");
    std::thread::sleep(Duration::from_millis(150));
    let cached: Option<String> = cmd("GET", &[&derived(K, "cache")]).query(&mut con).unwrap();
    assert_eq!(cached, None, "nothing written during the pause");
    assert_eq!(offset(&mut con), at, "nothing propagated during the pause");
    wait_for("the fill after the pause", || {
        let c: Option<String> = cmd("GET", &[&derived(K, "cache")]).query(&mut con).unwrap();
        c == doc
    });
    assert_eq!(fills(&mut con), before + 1, "filled once");
    let _: String = cmd("PING", &[] as &[&str]).query(&mut con).unwrap();
}

#[test]
fn a_scheduled_change_due_during_a_pause_is_applied_right_after_it_once() {
    let (primary, _replica) = primary_with_replica();
    let mut con = primary.conn();
    rotate(&mut con, K, &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let _: redis::Value = cmd("JWKS.POLICY", &[K, "PROMOTE-AFTER", "200"])
        .query(&mut con)
        .unwrap();
    rotate(&mut con, K, &["ADD", &ec("b", 2)]).unwrap();
    let _: () = cmd("CLIENT", &["PAUSE", "700", "WRITE"])
        .query(&mut con)
        .unwrap();
    let paused_at = Instant::now();
    std::thread::sleep(Duration::from_millis(450));
    let info = cmd("JWKS.INFO", &[K])
        .query::<redis::Value>(&mut con)
        .unwrap();
    assert_eq!(
        as_string(&field(&info, "current")),
        "a",
        "not promoted during the pause"
    );
    wait_for("the promotion after the pause", || {
        let info = cmd("JWKS.INFO", &[K])
            .query::<redis::Value>(&mut con)
            .unwrap();
        as_string(&field(&info, "current")) == "b"
    });
    assert!(paused_at.elapsed() >= Duration::from_millis(650));
    let promoted = audit(&mut con, &derived(K, "audit"))
        .iter()
        .filter(|e| e.get("action").map(String::as_str) == Some("JWKS_KEY_PROMOTED"))
        .count();
    assert_eq!(
        promoted, 2,
        "the bootstrap promotion and the scheduled one, once"
    );
}

#[test]
fn a_planned_failover_with_readers_keeps_both_servers_up() {
    let (primary, replica) = primary_with_replica();
    let mut con = primary.conn();
    rotate(&mut con, K, &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let port = primary.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut reads = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else {
                    break;
                };
                let Ok(mut c) = client.get_connection() else {
                    break;
                };
                for _ in 0..50 {
                    // Each read of a set with no cache asks for a fill.
                    let _ = cmd("JWKS.INVALIDATE", &[K]).query::<redis::Value>(&mut c);
                    if cmd("JWKS.GET", &[K]).query::<redis::Value>(&mut c).is_ok() {
                        reads += 1;
                    }
                }
            }
            reads
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let _: () = cmd("FAILOVER", &["TIMEOUT", "5000"])
        .query(&mut con)
        .unwrap();
    let mut r = replica.conn();
    wait_for("the replica to become primary", || {
        let info: String = cmd("INFO", &["replication"]).query(&mut r).unwrap();
        info.contains("role:master")
    });
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("reader");
    assert!(reads > 0);
    let mut old = primary.conn();
    let _: String = cmd("PING", &[] as &[&str]).query(&mut old).unwrap();
    let doc: Option<String> = cmd("JWKS.GET", &[K]).query(&mut r).unwrap();
    assert!(doc.is_some());
    assert!(
        !primary.log().contains("ASSERTION FAILED"),
        "{}",
        primary.log()
    );
}

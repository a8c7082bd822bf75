//! A replica reaches the primary's exact state (same DEBUG DIGEST): rotations replicate
//! their effects, so times, stream IDs and expiries are the primary's.

mod common;

use common::*;

#[test]
fn replica_matches_primary_and_takes_over() {
    let primary = Server::with_args(&["--repl-diskless-sync-delay", "0"]);
    let replica = Server::start();
    let mut p = primary.conn();
    let mut r = replica.conn();
    // Some state before the replica attaches (full sync via RDB), some after (the stream).
    rotate(&mut p, "jwks:{a}", &["ADD", &rsa("r1", 1), "PROMOTE", "r1"]).unwrap();
    replica.replicate(&primary);
    rotate(&mut p, "jwks:{a}", &["ADD", &ec("e2", 2)]).unwrap();
    let _: Option<String> = cmd("JWKS.GET", &["jwks:{a}"]).query(&mut p).unwrap();
    rotate(&mut p, "jwks:{a}", &["PROMOTE", "e2", "RETIRE", "r1"]).unwrap();
    let _: Option<String> = cmd("JWKS.GET", &["jwks:{a}"]).query(&mut p).unwrap();
    let acked: i64 = cmd("WAIT", &["1", "5000"]).query(&mut p).unwrap();
    assert_eq!(acked, 1);
    wait_for("same digest", || digest(&mut p) == digest(&mut r));

    // JWKS.GET is read-only: it serves on the replica, the same bytes as the primary's cache.
    let served: String = cmd("JWKS.GET", &["jwks:{a}"]).query(&mut r).unwrap();
    assert!(served.contains("\"e2\"") && !served.contains("\"r1\""));
    let cached: String = cmd("GET", &["jwks:{a}:cache"]).query(&mut r).unwrap();
    assert_eq!(cached, served);
    let info: redis::Value = cmd("JWKS.INFO", &["jwks:{a}"]).query(&mut r).unwrap();
    assert_eq!(as_string(&field(&info, "current")), "e2");

    // Clients cannot inject state through the replication command.
    assert!(cmd("JWKS.SETSTATE", &["x", "{}"])
        .query::<String>(&mut p)
        .is_err());

    // The replica promoted to primary serves and rotates.
    let _: () = cmd("REPLICAOF", &["NO", "ONE"]).query(&mut r).unwrap();
    let res = rotate(&mut r, "jwks:{a}", &["ADD", &ec("e3", 3)]).unwrap();
    assert_eq!(as_int(&field(&res, "generation")), 4);
}

#[test]
fn two_replicas_follow_every_rotation() {
    let primary = Server::with_args(&["--repl-diskless-sync-delay", "0"]);
    let replicas = [Server::start(), Server::start()];
    let mut p = primary.conn();
    for r in &replicas {
        r.replicate(&primary);
    }
    let mut rs: Vec<_> = replicas.iter().map(|r| r.conn()).collect();
    rotate(&mut p, "jwks:{a}", &["ADD", &ec("k1", 1), "PROMOTE", "k1"]).unwrap();
    for n in 2..=6u64 {
        let _: String = cmd("JWKS.GET", &["jwks:{a}"]).query(&mut p).unwrap();
        let kid = format!("k{n}");
        rotate(
            &mut p,
            "jwks:{a}",
            &[
                "ADD",
                &ec(&kid, n),
                "PROMOTE",
                &kid,
                "RETIRE",
                &format!("k{}", n - 1),
            ],
        )
        .unwrap();
        // Readers on replicas see the new document or no document, never the old one.
        let acked: i64 = cmd("WAIT", &["2", "5000"]).query(&mut p).unwrap();
        assert_eq!(acked, 2);
        for r in rs.iter_mut() {
            let cached: Option<String> = cmd("GET", &["jwks:{a}:cache"]).query(r).unwrap();
            assert!(cached.is_none_or(|doc| doc.contains(&format!("\"{kid}\""))));
        }
        // The read makes the module fill the cache in a job after the command: WAIT only
        // covers the caller's own writes, so wait for the filled cache to reach each replica.
        let _: String = cmd("JWKS.GET", &["jwks:{a}"]).query(&mut p).unwrap();
        for r in rs.iter_mut() {
            wait_for("the filled cache on the replica", || {
                let cached: Option<String> = cmd("GET", &["jwks:{a}:cache"]).query(r).unwrap();
                cached.is_some()
            });
            let cached: String = cmd("GET", &["jwks:{a}:cache"]).query(r).unwrap();
            assert!(
                cached.contains(&format!("\"{kid}\""))
                    && !cached.contains(&format!("\"k{}\"", n - 1))
            );
        }
    }
    let want = digest(&mut p);
    for r in rs.iter_mut() {
        wait_for("same digest", || digest(r) == want);
    }
    // Promote one replica; the other follows it.
    let new_port = replicas[0].port.to_string();
    let _: () = cmd("REPLICAOF", &["NO", "ONE"]).query(&mut rs[0]).unwrap();
    let _: () = cmd("REPLICAOF", &["127.0.0.1", new_port.as_str()])
        .query(&mut rs[1])
        .unwrap();
    let r = rotate(&mut rs[0], "jwks:{a}", &["ADD", &ec("k7", 7)]).unwrap();
    assert_eq!(as_int(&field(&r, "generation")), 7);
    let acked: i64 = cmd("WAIT", &["1", "5000"]).query(&mut rs[0]).unwrap();
    assert_eq!(acked, 1);
    let want = digest(&mut rs[0]);
    let (_, rest) = rs.split_at_mut(1);
    wait_for("the other replica follows the new primary", || {
        digest(&mut rest[0]) == want
    });
}

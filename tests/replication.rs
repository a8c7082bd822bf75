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
    let _: () = cmd("REPLICAOF", &["127.0.0.1", &primary.port.to_string()])
        .query(&mut r)
        .unwrap();
    wait_for("initial sync", || {
        let info: String = cmd("INFO", &["replication"]).query(&mut r).unwrap();
        info.contains("master_link_status:up")
    });
    rotate(&mut p, "jwks:{a}", &["ADD", &ec("e2", 2)]).unwrap();
    let _: Option<String> = cmd("JWKS.GET", &["jwks:{a}"]).query(&mut p).unwrap();
    rotate(&mut p, "jwks:{a}", &["PROMOTE", "e2", "RETIRE", "r1"]).unwrap();
    let _: Option<String> = cmd("JWKS.GET", &["jwks:{a}"]).query(&mut p).unwrap();
    let acked: i64 = cmd("WAIT", &["1", "5000"]).query(&mut p).unwrap();
    assert_eq!(acked, 1);
    wait_for("same digest", || digest(&mut p) == digest(&mut r));

    // Readers on the replica use GET on the cache key; JWKS.GET is a write.
    let cached: String = cmd("GET", &["jwks:{a}:cache"]).query(&mut r).unwrap();
    assert!(cached.contains("\"e2\"") && !cached.contains("\"r1\""));
    assert!(cmd("JWKS.GET", &["jwks:{a}"])
        .query::<String>(&mut r)
        .is_err());
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

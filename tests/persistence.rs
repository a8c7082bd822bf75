//! Everything the module keeps survives RDB, restart, DEBUG RELOAD, AOF rewrite and
//! replay, DUMP/RESTORE and COPY, with the same DEBUG DIGEST before and after.

mod common;

use common::*;
use redis::Connection;

/// Rotations on two key sets, a filled cache and a failed invalidation's neighbours:
/// every kind of key the module writes.
fn workload(con: &mut Connection) {
    rotate(con, "jwks:{a}", &["ADD", &rsa("r1", 1), "PROMOTE", "r1"]).unwrap();
    rotate(con, "jwks:{a}", &["ADD", &ec("e2", 2)]).unwrap();
    rotate(con, "jwks:{a}", &["PROMOTE", "e2"]).unwrap();
    rotate(con, "plain", &["ADD", &ec("p1", 3), "PROMOTE", "p1"]).unwrap();
    let _: Option<String> = cmd("JWKS.GET", &["jwks:{a}"]).query(con).unwrap();
    let _: i64 = cmd("JWKS.INVALIDATE", &["plain"]).query(con).unwrap();
}

fn info(con: &mut Connection, key: &str) -> String {
    let v: redis::Value = cmd("JWKS.INFO", &[key]).query(con).unwrap();
    // cache_ttl_ms moves with the clock; everything else must be identical.
    pairs(&v)
        .into_iter()
        .filter(|(k, _)| k != "cache_ttl_ms")
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn rdb_save_restart_and_debug_reload() {
    let mut server = Server::with_args(&["--save", "3600 1"]);
    let mut con = server.conn();
    workload(&mut con);
    let before = digest(&mut con);
    let info_before = info(&mut con, "jwks:{a}");

    let _: () = cmd::<&str>("DEBUG", &["RELOAD"]).query(&mut con).unwrap();
    assert_eq!(digest(&mut con), before);

    server.restart();
    let mut con = server.conn();
    assert_eq!(digest(&mut con), before);
    assert_eq!(info(&mut con, "jwks:{a}"), info_before);
    // Still fully usable after loading.
    rotate(&mut con, "jwks:{a}", &["RETIRE", "r1"]).unwrap();
}

#[test]
fn aof_replay_and_rewrite_without_and_with_rdb_preamble() {
    for preamble in ["no", "yes"] {
        let mut server = Server::with_args(&[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--aof-use-rdb-preamble",
            preamble,
        ]);
        let mut con = server.conn();
        workload(&mut con);
        let before = digest(&mut con);

        // Replay of the incremental AOF (replicated JWKS.SETSTATE, XADD, HINCRBY...).
        server.kill();
        server.start_again();
        let mut con = server.conn();
        assert_eq!(digest(&mut con), before, "AOF replay, preamble {preamble}");

        // Rewrite (the module type's aof_rewrite callback when there is no preamble).
        let _: String = cmd::<&str>("BGREWRITEAOF", &[]).query(&mut con).unwrap();
        wait_for("AOF rewrite", || {
            let info: String = cmd("INFO", &["persistence"]).query(&mut con).unwrap();
            info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrite_scheduled:0")
        });
        rotate(&mut con, "plain", &["ADD", &ec("p2", 4)]).unwrap();
        let after_rewrite = digest(&mut con);
        server.kill();
        server.start_again();
        let mut con = server.conn();
        assert_eq!(
            digest(&mut con),
            after_rewrite,
            "AOF rewrite, preamble {preamble}"
        );
    }
}

#[test]
fn dump_restore_and_copy() {
    let server = Server::start();
    let mut con = server.conn();
    workload(&mut con);
    let dump: Vec<u8> = cmd("DUMP", &["plain"]).query(&mut con).unwrap();
    let _: () = redis::cmd("RESTORE")
        .arg("restored")
        .arg(0)
        .arg(&dump)
        .query(&mut con)
        .unwrap();
    let a: String = cmd("DEBUG", &["DIGEST-VALUE", "plain"])
        .query(&mut con)
        .map(|v: Vec<String>| v[0].clone())
        .unwrap();
    let b: String = cmd("DEBUG", &["DIGEST-VALUE", "restored"])
        .query(&mut con)
        .map(|v: Vec<String>| v[0].clone())
        .unwrap();
    assert_eq!(a, b);
    let copied: i64 = cmd("COPY", &["plain", "copied"]).query(&mut con).unwrap();
    assert_eq!(copied, 1);
    let r = rotate(&mut con, "copied", &["ADD", &ec("c2", 9)]).unwrap();
    assert_eq!(as_int(&field(&r, "generation")), 2);
    // The original is untouched by changes to the copy.
    let v: redis::Value = cmd("JWKS.INFO", &["plain"]).query(&mut con).unwrap();
    assert_eq!(as_int(&field(&v, "generation")), 1);
    // A corrupt payload is refused, not loaded.
    let mut bad = dump.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    let err: redis::RedisResult<()> = redis::cmd("RESTORE")
        .arg("bad")
        .arg(0)
        .arg(&bad)
        .query(&mut con);
    assert!(err.is_err());
    let usage: i64 = cmd("MEMORY", &["USAGE", "plain"]).query(&mut con).unwrap();
    assert!(usage > 100, "{usage}");
    let t: String = cmd("TYPE", &["plain"]).query(&mut con).unwrap();
    assert_eq!(t, "jwks-keys");
}

//! Attacks on the verifiers and CONFIRM (JWKS.ACK, JWKS.VERIFIERS, the confirmation): generic
//! commands over a key set with verifiers, promotions that must happen exactly once and only
//! on acks about the set now at the name, users, hostile names, load, and the clean-up path.
//! Each test states one behaviour and starts its own servers.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use redis::{Connection, Value};

const K: &str = "jwks:{atk}";

fn try_ack(
    con: &mut Connection,
    key: &str,
    generation: u64,
    id: &[u8],
    ttl: u64,
) -> redis::RedisResult<i64> {
    redis::cmd("JWKS.ACK")
        .arg(key)
        .arg("GENERATION")
        .arg(generation)
        .arg("ID")
        .arg(id)
        .arg("TTL")
        .arg(ttl)
        .query(con)
}

fn ack(con: &mut Connection, key: &str, generation: u64, id: &str) -> i64 {
    try_ack(con, key, generation, id.as_bytes(), 60_000)
        .unwrap_or_else(|e| panic!("ack {key} {generation} {id}: {e}"))
}

/// The ETag of the document at `key` now (what a KeyCache holds with its generation).
fn etag(con: &mut Connection, key: &str) -> String {
    let meta: Value = cmd("JWKS.GET", &[key, "META"]).query(con).unwrap();
    as_string(&field(&meta, "etag"))
}

/// An ack that names the held document by its ETag too, as the KeyCaches send it.
fn ack_etag(
    con: &mut Connection,
    key: &str,
    generation: u64,
    id: &str,
    etag: &str,
) -> redis::RedisResult<i64> {
    cmd(
        "JWKS.ACK",
        &[
            key,
            "GENERATION",
            &generation.to_string(),
            "ID",
            id,
            "ETAG",
            etag,
        ],
    )
    .query(con)
}

/// (id, generation) of every live verifier the key set at `key` has.
fn verifiers(con: &mut Connection, key: &str) -> Vec<(Vec<u8>, i64)> {
    let list: Value = cmd("JWKS.VERIFIERS", &[key]).query(con).unwrap();
    let Value::Array(items) = list else {
        panic!("not an array: {list:?}")
    };
    items
        .iter()
        .map(|v| {
            let id = match field(v, "id") {
                Value::BulkString(b) => b,
                other => panic!("id {other:?}"),
            };
            (id, as_int(&field(v, "generation")))
        })
        .collect()
}

fn ids(con: &mut Connection, key: &str) -> Vec<String> {
    verifiers(con, key)
        .into_iter()
        .map(|(id, _)| String::from_utf8_lossy(&id).into_owned())
        .collect()
}

fn info(con: &mut Connection, key: &str) -> Value {
    cmd("JWKS.INFO", &[key]).query(con).unwrap()
}

fn current(con: &mut Connection, key: &str) -> String {
    as_string(&field(&info(con, key), "current"))
}

fn generation(con: &mut Connection, key: &str) -> u64 {
    as_int(&field(&info(con, key), "generation")) as u64
}

/// JWKS.INFO's confirmation as (live, holding, confirmed).
fn confirmation(con: &mut Connection, key: &str) -> (i64, i64, i64) {
    let c = field(&info(con, key), "confirmation");
    (
        as_int(&field(&c, "live")),
        as_int(&field(&c, "holding")),
        as_int(&field(&c, "confirmed")),
    )
}

fn stats(con: &mut Connection) -> HashMap<String, String> {
    let v: Value = cmd::<&str>("JWKS.STATS", &[]).query(con).unwrap();
    pairs(&v)
        .into_iter()
        .map(|(k, v)| (k, as_string(&v)))
        .collect()
}

/// The verifier gauge of JWKS.STATS for the key set `name` in `db` (None if absent).
fn verifier_gauge(con: &mut Connection, db: i64, name: &str) -> Option<i64> {
    stats(con)
        .get(&format!("jwt_jwks_keyset_verifiers:{db}:{name}"))
        .map(|v| v.parse().unwrap())
}

/// Every verifier gauge JWKS.STATS reports, summed.
fn all_verifier_gauges(con: &mut Connection) -> i64 {
    stats(con)
        .iter()
        .filter(|(k, _)| k.starts_with("jwt_jwks_keyset_verifiers:"))
        .map(|(_, v)| v.parse::<i64>().unwrap())
        .sum()
}

/// `a` current (generation 1), CONFIRM 100 (and `extra`), `b` next at generation 2.
fn confirming(con: &mut Connection, key: &str, extra: &[&str]) {
    rotate(con, key, &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let mut args = vec![key, "CONFIRM", "100"];
    args.extend_from_slice(extra);
    let _: Value = cmd("JWKS.POLICY", &args).query(con).unwrap();
    rotate(con, key, &["ADD", &ec("b", 2)]).unwrap();
    assert_eq!(generation(con, key), 2);
}

fn promotions_of(con: &mut Connection, key: &str, kid: &str) -> usize {
    audit(con, &derived(key, "audit"))
        .into_iter()
        .filter(|e| e["action"] == "JWKS_KEY_PROMOTED" && e["kid"] == kid)
        .count()
}

fn select(con: &mut Connection, db: i64) {
    let _: () = cmd("SELECT", &[db]).query(con).unwrap();
}

/// Lets the clean-up queued by a generic command run (Redis 7.0 runs it in the next loop).
fn settle(con: &mut Connection) {
    std::thread::sleep(Duration::from_millis(30));
    let _: String = cmd::<&str>("PING", &[]).query(con).unwrap();
}

// ---- Generic commands over a key set with verifiers --------------------------------------

#[test]
fn rename_onto_a_set_with_verifiers_keeps_neither_fleet() {
    let server = Server::start();
    let mut con = server.conn();
    let (src, dst) = ("jwks:{atk}:src", "jwks:{atk}:dst");
    confirming(&mut con, src, &[]);
    ack(&mut con, src, 1, "v-src");
    rotate(&mut con, dst, &["ADD", &ec("c", 3), "PROMOTE", "c"]).unwrap();
    ack(&mut con, dst, 1, "v-dst");
    let _: () = cmd("RENAME", &[src, dst]).query(&mut con).unwrap();
    settle(&mut con);
    assert!(ids(&mut con, dst).is_empty(), "{:?}", ids(&mut con, dst));
    assert_eq!(confirmation(&mut con, dst), (0, 0, 0));
    assert_eq!(all_verifier_gauges(&mut con), 0);
    // Back again with RENAMENX onto the freed name: still nothing carried.
    ack(&mut con, dst, 1, "v-new");
    let moved: i64 = cmd("RENAMENX", &[dst, src]).query(&mut con).unwrap();
    assert_eq!(moved, 1);
    settle(&mut con);
    assert!(ids(&mut con, src).is_empty());
    assert_eq!(all_verifier_gauges(&mut con), 0);
    // The ack of v-new was about the set before it moved: b is not promoted by it.
    assert_eq!(current(&mut con, src), "a");
    assert_eq!(promotions_of(&mut con, src, "b"), 0);
}

#[test]
fn copy_replace_to_another_db_carries_no_verifiers_and_keeps_the_sources() {
    let server = Server::start();
    let mut con = server.conn();
    confirming(&mut con, K, &[]);
    ack(&mut con, K, 1, "v-src");
    select(&mut con, 1);
    rotate(&mut con, K, &["ADD", &ec("c", 3), "PROMOTE", "c"]).unwrap();
    ack(&mut con, K, 1, "v-db1");
    select(&mut con, 0);
    let copied: i64 = cmd("COPY", &[K, K, "DB", "1", "REPLACE"])
        .query(&mut con)
        .unwrap();
    assert_eq!(copied, 1);
    settle(&mut con);
    assert_eq!(ids(&mut con, K), ["v-src"]);
    select(&mut con, 1);
    settle(&mut con);
    assert!(ids(&mut con, K).is_empty());
    assert_eq!(confirmation(&mut con, K), (0, 0, 0));
    assert_eq!(verifier_gauge(&mut con, 1, K).unwrap_or(0), 0);
    assert_eq!(verifier_gauge(&mut con, 0, K), Some(1));
}

#[test]
fn move_leaves_the_verifiers_behind_and_counts_them_nowhere() {
    let server = Server::start();
    let mut con = server.conn();
    confirming(&mut con, K, &[]);
    ack(&mut con, K, 1, "v");
    let moved: i64 = cmd("MOVE", &[K, "1"]).query(&mut con).unwrap();
    assert_eq!(moved, 1);
    settle(&mut con);
    select(&mut con, 1);
    assert!(ids(&mut con, K).is_empty());
    assert_eq!(all_verifier_gauges(&mut con), 0);
    // An ack in db 0 finds no key set.
    select(&mut con, 0);
    let e = try_ack(&mut con, K, 1, b"v", 60_000).unwrap_err();
    assert!(e.to_string().contains("NOKEYSET"), "{e}");
}

#[test]
fn swapdb_swaps_each_fleet_with_its_key_set() {
    let server = Server::start();
    let mut con = server.conn();
    confirming(&mut con, K, &[]);
    ack(&mut con, K, 1, "in-0");
    select(&mut con, 1);
    confirming(&mut con, K, &[]);
    ack(&mut con, K, 1, "in-1");
    let _: () = cmd("SWAPDB", &["0", "1"]).query(&mut con).unwrap();
    settle(&mut con);
    assert_eq!(ids(&mut con, K), ["in-0"]);
    select(&mut con, 0);
    assert_eq!(ids(&mut con, K), ["in-1"]);
    assert_eq!(verifier_gauge(&mut con, 0, K), Some(1));
    assert_eq!(verifier_gauge(&mut con, 1, K), Some(1));
    // The ack that follows in db 0 confirms the set that is there now, once.
    ack(&mut con, K, 2, "in-1");
    wait_for("promotion in db 0", || current(&mut con, K) == "b");
    select(&mut con, 1);
    assert_eq!(current(&mut con, K), "a");
    assert_eq!(promotions_of(&mut con, K, "b"), 0);
}

#[test]
fn flushall_async_forgets_every_fleet() {
    let server = Server::start();
    let mut con = server.conn();
    confirming(&mut con, K, &[]);
    ack(&mut con, K, 1, "v");
    let _: () = cmd("FLUSHALL", &["ASYNC"]).query(&mut con).unwrap();
    settle(&mut con);
    assert_eq!(all_verifier_gauges(&mut con), 0);
    confirming(&mut con, K, &[]);
    assert!(ids(&mut con, K).is_empty());
    assert_eq!(confirmation(&mut con, K), (0, 0, 0));
}

#[test]
fn flushdb_forgets_only_its_db() {
    let server = Server::start();
    let mut con = server.conn();
    confirming(&mut con, K, &[]);
    ack(&mut con, K, 1, "keep");
    select(&mut con, 1);
    confirming(&mut con, K, &[]);
    ack(&mut con, K, 1, "gone");
    let _: () = cmd::<&str>("FLUSHDB", &[]).query(&mut con).unwrap();
    settle(&mut con);
    select(&mut con, 0);
    assert_eq!(ids(&mut con, K), ["keep"]);
    assert_eq!(all_verifier_gauges(&mut con), 1);
}

#[test]
fn restore_replace_of_an_older_dump_forgets_the_fleet_and_promotes_once_on_its_own_acks() {
    let server = Server::start();
    let mut con = server.conn();
    confirming(&mut con, K, &[]);
    let dump: Vec<u8> = cmd("DUMP", &[K]).query(&mut con).unwrap();
    // Later: b promoted by force, c added: generation 4; a verifier holds 4.
    rotate(&mut con, K, &["FORCE", "PROMOTE", "b"]).unwrap();
    rotate(&mut con, K, &["ADD", &ec("c", 3)]).unwrap();
    assert_eq!(generation(&mut con, K), 4);
    ack(&mut con, K, 4, "ahead");
    let _: () = redis::cmd("RESTORE")
        .arg(K)
        .arg(0)
        .arg(&dump)
        .arg("REPLACE")
        .query(&mut con)
        .unwrap();
    settle(&mut con);
    assert_eq!(generation(&mut con, K), 2);
    assert_eq!(current(&mut con, K), "a");
    // The verifier of generation 4 is not counted for the restored set.
    assert!(ids(&mut con, K).is_empty());
    assert_eq!(confirmation(&mut con, K), (0, 0, 0));
    assert_eq!(all_verifier_gauges(&mut con), 0);
    let e = try_ack(&mut con, K, 4, b"ahead", 60_000).unwrap_err();
    assert!(
        e.to_string().contains("newer") || e.to_string().contains("generation"),
        "{e}"
    );
    let before = promotions_of(&mut con, K, "b");
    ack(&mut con, K, 2, "v");
    wait_for("b promoted", || current(&mut con, K) == "b");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(promotions_of(&mut con, K, "b"), before + 1);
}

#[test]
fn debug_reload_forgets_acks_and_keeps_min_wait() {
    let server = Server::start();
    let mut con = server.conn();
    confirming(&mut con, K, &["MIN-WAIT", "1500"]);
    let until = as_int(&field(
        &field(&info(&mut con, K), "confirmation"),
        "min_wait_until_ms",
    ));
    ack(&mut con, K, 2, "v");
    assert_eq!(confirmation(&mut con, K), (1, 1, 1));
    let _: () = cmd("DEBUG", &["RELOAD"]).query(&mut con).unwrap();
    assert!(ids(&mut con, K).is_empty());
    assert_eq!(confirmation(&mut con, K), (0, 0, 0));
    let until_after = as_int(&field(
        &field(&info(&mut con, K), "confirmation"),
        "min_wait_until_ms",
    ));
    assert_eq!(until, until_after);
    ack(&mut con, K, 2, "v");
    assert_eq!(current(&mut con, K), "a");
    wait_for("b promoted after MIN-WAIT", || current(&mut con, K) == "b");
    let now_ms = {
        let t: Vec<String> = cmd::<&str>("TIME", &[]).query(&mut con).unwrap();
        t[0].parse::<i64>().unwrap() * 1000 + t[1].parse::<i64>().unwrap() / 1000
    };
    assert!(now_ms >= until);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(promotions_of(&mut con, K, "b"), 1);
}

#[test]
fn an_expired_key_set_takes_its_verifiers_with_it() {
    let server = Server::start();
    let mut con = server.conn();
    confirming(&mut con, K, &[]);
    ack(&mut con, K, 1, "v");
    let _: i64 = cmd("PEXPIRE", &[K, "20"]).query(&mut con).unwrap();
    wait_for("expiry", || {
        let n: i64 = cmd("EXISTS", &[K]).query(&mut con).unwrap();
        n == 0
    });
    settle(&mut con);
    assert_eq!(all_verifier_gauges(&mut con), 0);
    confirming(&mut con, K, &[]);
    assert!(ids(&mut con, K).is_empty());
}

/// A verifier that held generation 2 of a deleted set and acks it again after the set was
/// recreated (and brought to generation 2 with another next key): generation numbers
/// repeat, so the ack carries the held document's ETag, and the module refuses it (`STALE`)
/// instead of counting it for a key the verifier has never seen.
#[test]
fn an_ack_of_a_deleted_sets_generation_does_not_confirm_its_successor() {
    let server = Server::start();
    let mut con = server.conn();
    confirming(&mut con, K, &[]);
    let old = etag(&mut con, K);
    ack(&mut con, K, 1, "stale");
    let _: i64 = cmd("DEL", &[K]).query(&mut con).unwrap();
    settle(&mut con);
    // The new set: other keys, same generation numbers.
    rotate(&mut con, K, &["ADD", &ec("x", 7), "PROMOTE", "x"]).unwrap();
    let _: Value = cmd("JWKS.POLICY", &[K, "CONFIRM", "100"])
        .query(&mut con)
        .unwrap();
    rotate(&mut con, K, &["ADD", &ec("y", 8)]).unwrap();
    assert_eq!(generation(&mut con, K), 2);
    // The stale verifier's periodic re-ack of what it holds: the old set's generation 2
    // document ("a, b"); it has never seen y.
    let e = ack_etag(&mut con, K, 2, "stale", &old).unwrap_err();
    assert_eq!(e.code(), Some("STALE"), "{e}");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        current(&mut con, K),
        "x",
        "y promoted on an ack about another set"
    );
}

/// The same after RESTORE of an older dump: generations repeat with other contents, and the
/// ETag tells them apart.
#[test]
fn an_ack_of_a_generation_from_before_a_restore_does_not_confirm_the_restored_sets_key() {
    let server = Server::start();
    let mut con = server.conn();
    confirming(&mut con, K, &[]);
    let dump: Vec<u8> = cmd("DUMP", &[K]).query(&mut con).unwrap();
    // Before the restore: generation 4 = b current, a previous, c next.
    rotate(&mut con, K, &["FORCE", "PROMOTE", "b"]).unwrap();
    rotate(&mut con, K, &["ADD", &ec("c", 3)]).unwrap();
    assert_eq!(generation(&mut con, K), 4);
    let pre_restore = etag(&mut con, K);
    ack_etag(&mut con, K, 4, "pre-restore", &pre_restore).unwrap();
    let _: () = redis::cmd("RESTORE")
        .arg(K)
        .arg(0)
        .arg(&dump)
        .arg("REPLACE")
        .query(&mut con)
        .unwrap();
    settle(&mut con);
    // The restored lineage: b promoted by its own verifier (3), then z added: generation 4
    // again, now b current, a previous, z next.
    ack(&mut con, K, 2, "fresh");
    wait_for("b promoted", || current(&mut con, K) == "b");
    // Half the live verifiers suffice: without the ETag, the stale verifier's ack (next to
    // "fresh", still on generation 2) would confirm z on its own.
    let _: Value = cmd("JWKS.POLICY", &[K, "CONFIRM", "50"])
        .query(&mut con)
        .unwrap();
    rotate(&mut con, K, &["ADD", &ec("z", 26)]).unwrap();
    assert_eq!(generation(&mut con, K), 4);
    // The verifier that never saw z re-acks what it holds: the old generation 4 (with c).
    let e = ack_etag(&mut con, K, 4, "pre-restore", &pre_restore).unwrap_err();
    assert_eq!(e.code(), Some("STALE"), "{e}");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        current(&mut con, K),
        "b",
        "z promoted on an ack of another generation 4"
    );
}

/// A change replaces the key set in place, so a TTL an operator set on it stays (under
/// CONFIRM the change can come from a read-only verifier's ack: it must not PERSIST the key).
#[test]
fn a_confirmed_promotion_keeps_the_key_sets_ttl() {
    let server = Server::start();
    let mut con = server.conn();
    confirming(&mut con, K, &[]);
    let _: i64 = cmd("PEXPIRE", &[K, "100000"]).query(&mut con).unwrap();
    ack(&mut con, K, 2, "v");
    wait_for("b promoted", || current(&mut con, K) == "b");
    let ttl: i64 = cmd("PTTL", &[K]).query(&mut con).unwrap();
    assert!(ttl > 0, "TTL dropped by the promotion: PTTL {ttl}");
    rotate(&mut con, K, &["ADD", &ec("t", 20)]).unwrap();
    let ttl: i64 = cmd("PTTL", &[K]).query(&mut con).unwrap();
    assert!(ttl > 0, "TTL dropped by a rotation: PTTL {ttl}");
}

#[test]
fn acks_of_a_deleted_set_do_not_survive_its_recreation() {
    let server = Server::start();
    let mut con = server.conn();
    confirming(&mut con, K, &[]);
    ack(&mut con, K, 1, "old-1");
    ack(&mut con, K, 2, "old-2");
    // a no longer: DEL, recreated with the same kids.
    let _: i64 = cmd("DEL", &[K]).query(&mut con).unwrap();
    settle(&mut con);
    confirming(&mut con, K, &[]);
    assert!(ids(&mut con, K).is_empty());
    assert_eq!(confirmation(&mut con, K), (0, 0, 0));
    assert_eq!(current(&mut con, K), "a");
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(current(&mut con, K), "a");
}

fn replica_generation(r: &mut Connection) -> Option<i64> {
    match cmd("JWKS.INFO", &[K]).query::<Value>(r) {
        Ok(Value::Nil) | Err(_) => None,
        Ok(v) => Some(as_int(&field(&v, "generation"))),
    }
}

// ---- Promotions exactly once --------------------------------------------------------------

#[test]
fn a_replica_promoted_with_replicaof_no_one_takes_acks_and_promotes_once() {
    let primary = Server::with_args(&["--repl-diskless-sync-delay", "0"]);
    let replica = Server::start();
    replica.replicate(&primary);
    let mut p = primary.conn();
    let mut r = replica.conn();
    confirming(&mut p, K, &[]);
    ack(&mut p, K, 1, "on-primary");
    wait_for("replica has the set", || {
        replica_generation(&mut r) == Some(2)
    });
    let e = try_ack(&mut r, K, 2, b"v", 60_000).unwrap_err();
    assert!(e.kind() == redis::ErrorKind::ReadOnly, "{e}");
    assert!(ids(&mut r, K).is_empty());
    let _: () = cmd("REPLICAOF", &["NO", "ONE"]).query(&mut r).unwrap();
    // The old primary, still up, must not promote either: it gets no confirming ack.
    assert!(ids(&mut r, K).is_empty());
    ack(&mut r, K, 2, "v");
    wait_for("promotion on the new primary", || current(&mut r, K) == "b");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(promotions_of(&mut r, K, "b"), 1);
    assert_eq!(current(&mut p, K), "a");
}

#[test]
fn a_confirming_ack_during_client_pause_write_promotes_once_after_the_pause() {
    let primary = Server::with_args(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--repl-diskless-sync-delay",
        "0",
    ]);
    let replica = Server::start();
    replica.replicate(&primary);
    let mut p = primary.conn();
    confirming(&mut p, K, &[]);
    wait_for("replica in sync", || {
        let mut r = replica.conn();
        replica_generation(&mut r) == Some(2)
    });
    let offset = |c: &mut Connection| -> i64 {
        let s: String = cmd("INFO", &["replication"]).query(c).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("master_repl_offset:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let aof_size = |c: &mut Connection| -> i64 {
        let s: String = cmd("INFO", &["persistence"]).query(c).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("aof_current_size:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let digest_before = digest(&mut p);
    let _: () = cmd("CLIENT", &["PAUSE", "400", "WRITE"])
        .query(&mut p)
        .unwrap();
    let (off0, aof0) = (offset(&mut p), aof_size(&mut p));
    let paused_at = Instant::now();
    ack(&mut p, K, 2, "v");
    std::thread::sleep(Duration::from_millis(150));
    assert!(
        paused_at.elapsed() < Duration::from_millis(380),
        "machine too slow"
    );
    assert_eq!(current(&mut p, K), "a", "promoted while writes are paused");
    assert_eq!(digest(&mut p), digest_before);
    assert_eq!(
        offset(&mut p),
        off0,
        "replication stream written during the pause"
    );
    assert_eq!(aof_size(&mut p), aof0, "AOF written during the pause");
    wait_for("promotion after the pause", || current(&mut p, K) == "b");
    assert!(paused_at.elapsed() >= Duration::from_millis(390));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(promotions_of(&mut p, K, "b"), 1);
    let mut r = replica.conn();
    wait_for("replica promoted too", || current(&mut r, K) == "b");
}

#[test]
fn a_confirmation_that_lapses_before_min_wait_ends_promotes_nothing() {
    let server = Server::start();
    let mut con = server.conn();
    confirming(&mut con, K, &["MIN-WAIT", "1300"]);
    try_ack(&mut con, K, 2, b"short-lived", 1000).unwrap();
    assert_eq!(confirmation(&mut con, K), (1, 1, 1));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(confirmation(&mut con, K), (0, 0, 0));
    assert_eq!(
        current(&mut con, K),
        "a",
        "promoted on a verifier that was gone"
    );
    // A live one then confirms at once (MIN-WAIT is over).
    ack(&mut con, K, 2, "live");
    wait_for("promotion", || current(&mut con, K) == "b");
    assert_eq!(promotions_of(&mut con, K, "b"), 1);
}

#[test]
fn with_the_keyspace_hook_rename_and_copy_carry_no_verifiers_either() {
    let server = Server::with_module_args(&["keyspace-hook", "yes"], &[]);
    let mut con = server.conn();
    let (src, dst, cp) = ("jwks:{atk}:src", "jwks:{atk}:dst", "jwks:{atk}:copy");
    confirming(&mut con, src, &[]);
    ack(&mut con, src, 1, "v-src");
    confirming(&mut con, dst, &[]);
    ack(&mut con, dst, 1, "v-dst");
    let _: () = cmd("RENAME", &[src, dst]).query(&mut con).unwrap();
    settle(&mut con);
    assert!(ids(&mut con, dst).is_empty());
    ack(&mut con, dst, 1, "v-new");
    let _: i64 = cmd("COPY", &[dst, cp]).query(&mut con).unwrap();
    settle(&mut con);
    assert!(ids(&mut con, cp).is_empty());
    assert_eq!(ids(&mut con, dst), ["v-new"]);
    assert_eq!(all_verifier_gauges(&mut con), 1);
    // Acks about the copy promote the copy alone.
    ack(&mut con, cp, 2, "c");
    wait_for("copy promoted", || current(&mut con, cp) == "b");
    assert_eq!(current(&mut con, dst), "a");
}

// ---- Users -----------------------------------------------------------------------------------

#[test]
fn an_ack_never_aborts_a_watch_of_the_key_set_or_its_derived_keys() {
    let server = Server::start();
    let mut con = server.conn();
    let mut other = server.conn();
    confirming(&mut con, K, &[]);
    let _: Value = cmd("JWKS.GET", &[K]).query(&mut con).unwrap();
    let watched = [
        K.to_string(),
        derived(K, "cache"),
        derived(K, "audit"),
        derived(K, "metrics"),
    ];
    let _: () = cmd("WATCH", &watched).query(&mut con).unwrap();
    // Acks that confirm nothing (b needs them all at 2): new IDs, repeats, other generations.
    ack(&mut other, K, 1, "v1");
    ack(&mut other, K, 1, "v2");
    ack(&mut other, K, 1, "v1");
    assert!(try_ack(&mut other, K, 9, b"v3", 60_000).is_err());
    settle(&mut other);
    let r: Value = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("probe")
        .arg("1")
        .query(&mut con)
        .unwrap();
    assert_ne!(r, Value::Nil, "WATCH aborted by an ack");
}

#[test]
fn acks_that_confirm_nothing_write_nothing_to_the_aof_or_the_replicas() {
    let primary = Server::with_args(&["--appendonly", "yes", "--repl-diskless-sync-delay", "0"]);
    let replica = Server::start();
    replica.replicate(&primary);
    let mut p = primary.conn();
    confirming(&mut p, K, &[]);
    let info = |c: &mut Connection, section: &str, field: &str| -> i64 {
        let s: String = cmd("INFO", &[section]).query(c).unwrap();
        let prefix = format!("{field}:");
        s.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    settle(&mut p);
    let (offset, aof, d) = (
        info(&mut p, "replication", "master_repl_offset"),
        info(&mut p, "persistence", "aof_current_size"),
        digest(&mut p),
    );
    for i in 0..200 {
        ack(&mut p, K, 1, &format!("v{i}"));
    }
    ack(&mut p, K, 2, "v0");
    settle(&mut p);
    assert_eq!(current(&mut p, K), "a");
    assert_eq!(info(&mut p, "replication", "master_repl_offset"), offset);
    assert_eq!(info(&mut p, "persistence", "aof_current_size"), aof);
    assert_eq!(digest(&mut p), d);
}

#[test]
fn refused_acks_change_nothing() {
    let server = Server::with_module_args(&[], &["--maxmemory", "0"]);
    let mut con = server.conn();
    confirming(&mut con, K, &[]);
    let _: () = cmd(
        "ACL",
        &[
            "SETUSER",
            "noack",
            "on",
            "nopass",
            "~*",
            "+@all",
            "-jwks.ack",
        ],
    )
    .query(&mut con)
    .unwrap();
    let before = digest(&mut con);
    let mut u = server.conn();
    let _: () = cmd("AUTH", &["noack", "x"]).query(&mut u).unwrap();
    let e = try_ack(&mut u, K, 1, b"v", 60_000).unwrap_err();
    assert!(
        e.to_string().contains("NOPERM") || e.to_string().contains("permission"),
        "{e}"
    );
    for (g, id) in [
        (3u64, &b"v"[..]),
        (1, b""),
        (1, b"a\r\nb"),
        (1, &[b'x'; 129][..]),
    ] {
        assert!(try_ack(&mut con, K, g, id, 60_000).is_err());
    }
    assert!(try_ack(&mut con, "jwks:{none}", 1, b"v", 60_000).is_err());
    let _: () = cmd("SET", &["str", "x"]).query(&mut con).unwrap();
    let before_str = digest(&mut con);
    let e = try_ack(&mut con, "str", 1, b"v", 60_000).unwrap_err();
    assert!(e.to_string().contains("WRONGTYPE"), "{e}");
    assert_eq!(digest(&mut con), before_str);
    let _: i64 = cmd("DEL", &["str"]).query(&mut con).unwrap();
    assert_eq!(digest(&mut con), before);
    assert!(ids(&mut con, K).is_empty());
    assert_eq!(stats(&mut con)["jwt_jwks_verifier_acks_total"], "0");
}

#[test]
fn a_read_only_verifier_role_and_a_selector_can_ack_only_their_sets() {
    let server = Server::start();
    let mut con = server.conn();
    confirming(&mut con, K, &[]);
    confirming(&mut con, "x:{sel}", &[]);
    let _: () = cmd(
        "ACL",
        &[
            "SETUSER",
            "verifier",
            "on",
            "nopass",
            "%R~jwks:*",
            "+jwks.ack",
            "+jwks.verifiers",
        ],
    )
    .query(&mut con)
    .unwrap();
    let _: () = cmd(
        "ACL",
        &[
            "SETUSER",
            "sel",
            "on",
            "nopass",
            "~jwks:*",
            "+jwks.verifiers",
            "(~x:* +jwks.ack)",
        ],
    )
    .query(&mut con)
    .unwrap();
    let mut v = server.conn();
    let _: () = cmd("AUTH", &["verifier", "x"]).query(&mut v).unwrap();
    assert_eq!(ack(&mut v, K, 1, "role"), 2);
    let e = try_ack(&mut v, "x:{sel}", 1, b"role", 60_000).unwrap_err();
    assert!(
        e.to_string().contains("NOPERM") || e.to_string().contains("permission"),
        "{e}"
    );
    let e = rotate(&mut v, K, &["RETIRE", "b"]).unwrap_err();
    assert!(
        e.to_string().contains("NOPERM") || e.to_string().contains("permission"),
        "{e}"
    );
    let mut s = server.conn();
    let _: () = cmd("AUTH", &["sel", "x"]).query(&mut s).unwrap();
    assert_eq!(ack(&mut s, "x:{sel}", 1, "sel"), 2);
    // The selector that allows the ack does not cover jwks:*, and the root allows no ack.
    let e = try_ack(&mut s, K, 1, b"sel", 60_000).unwrap_err();
    assert!(
        e.to_string().contains("NOPERM") || e.to_string().contains("permission"),
        "{e}"
    );
    assert_eq!(ids(&mut con, K), ["role"]);
    assert_eq!(ids(&mut con, "x:{sel}"), ["sel"]);
}

#[test]
fn scripts_and_functions_ack_like_clients() {
    let server = Server::start();
    let mut con = server.conn();
    confirming(&mut con, K, &[]);
    let g: i64 = cmd(
        "EVAL",
        &[
            "return redis.call('JWKS.ACK', KEYS[1], 'GENERATION', '1', 'ID', 'eval')",
            "1",
            K,
        ],
    )
    .query(&mut con)
    .unwrap();
    assert_eq!(g, 2);
    let ro: redis::RedisResult<i64> = cmd(
        "EVAL_RO",
        &[
            "return redis.call('JWKS.ACK', KEYS[1], 'GENERATION', '1', 'ID', 'ro')",
            "1",
            K,
        ],
    )
    .query(&mut con);
    // JWKS.ACK is not flagged write, so EVAL_RO accepts it (on Redis 7.0 and Valkey 9.1);
    // what matters is that a confirming ack in a script promotes once.
    eprintln!("EVAL_RO ack: {ro:?}");
    let _: String = cmd(
        "FUNCTION",
        &["LOAD", "#!lua name=atk\nredis.register_function('ack', function(keys, args) return redis.call('JWKS.ACK', keys[1], 'GENERATION', args[1], 'ID', args[2]) end)"],
    )
    .query(&mut con)
    .unwrap();
    for id in ["f1", "f2"] {
        let g: i64 = cmd("FCALL", &["ack", "1", K, "2", id])
            .query(&mut con)
            .unwrap();
        assert_eq!(g, 2);
    }
    // eval (gen 1) still live: 2 of 3 hold b. ro too if it was accepted.
    assert_eq!(current(&mut con, K), "a");
    let mut ids_now = ids(&mut con, K);
    ids_now.retain(|i| i != "ro");
    assert_eq!(ids_now, ["eval", "f1", "f2"]);
    let _: i64 = cmd("FCALL", &["ack", "1", K, "2", "eval"])
        .query(&mut con)
        .unwrap();
    if ro.is_ok() {
        let _: i64 = cmd("FCALL", &["ack", "1", K, "2", "ro"])
            .query(&mut con)
            .unwrap();
    }
    wait_for("promotion", || current(&mut con, K) == "b");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(promotions_of(&mut con, K, "b"), 1);
}

// ---- Names ------------------------------------------------------------------------------------

#[test]
fn hostile_ids_come_back_byte_for_byte_and_stay_out_of_info_and_the_log() {
    let server = Server::start();
    let mut con = server.conn();
    confirming(&mut con, K, &[]);
    let mut binary: Vec<u8> = (0x80..=0xff).collect();
    binary.truncate(128);
    let hostile: Vec<Vec<u8>> = vec![
        binary.clone(),
        vec![b'q'; 128],
        b"with space".to_vec(),
        b"\"quoted\" 'single'".to_vec(),
        b"\xff\xfe not utf-8 \xc3".to_vec(),
        b"jwt_jwks_key_sets:9:x 1".to_vec(),
    ];
    for id in &hostile {
        try_ack(&mut con, K, 1, id, 60_000).unwrap();
    }
    let got = verifiers(&mut con, K);
    let mut want = hostile.clone();
    want.sort();
    assert_eq!(got.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>(), want);
    let s = stats(&mut con);
    assert_eq!(s[&format!("jwt_jwks_keyset_verifiers:0:{K}")], "6");
    assert!(!s.keys().any(|k| k.starts_with("jwt_jwks_key_sets:9")));
    let info: String = cmd("INFO", &["jwks"]).query(&mut con).unwrap();
    assert!(
        !info.contains("with space") && !info.contains("quoted"),
        "{info}"
    );
    for line in info
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        assert!(line.contains(':'), "bad INFO line {line:?}");
    }
    assert!(!server.log().contains("with space"));
}

#[test]
fn a_key_set_name_with_crlf_or_binary_cannot_forge_info_lines() {
    let server = Server::start();
    let mut con = server.conn();
    let names: Vec<Vec<u8>> = vec![
        b"jwks:{a}\r\nused_memory:1".to_vec(),
        b"jwks:{\xff\xfe}".to_vec(),
        b"}{x}{".to_vec(),
    ];
    let mut made = Vec::new();
    for n in &names {
        let r: redis::RedisResult<Value> = redis::cmd("JWKS.ROTATE")
            .arg(n)
            .arg("ADD")
            .arg(ec("a", 1))
            .arg("PROMOTE")
            .arg("a")
            .query(&mut con);
        if r.is_ok() {
            made.push(n.clone());
            let g: i64 = redis::cmd("JWKS.ACK")
                .arg(n)
                .arg("GENERATION")
                .arg(1)
                .arg("ID")
                .arg("v")
                .query(&mut con)
                .unwrap();
            assert_eq!(g, 1);
        }
    }
    eprintln!("accepted names: {made:?}");
    let info: String = cmd("INFO", &["jwks"]).query(&mut con).unwrap();
    for line in info.lines() {
        assert!(
            !line.starts_with("used_memory"),
            "forged INFO line: {info:?}"
        );
    }
    let all: String = cmd("INFO", &["everything"]).query(&mut con).unwrap();
    assert_eq!(
        all.matches("\r\nused_memory:").count(),
        1,
        "forged INFO line"
    );
}

// ---- Load -------------------------------------------------------------------------------------

#[test]
fn one_hundred_thousand_distinct_verifiers_fill_the_caps_and_stay_bounded() {
    let server = Server::start();
    let mut con = server.conn();
    let sets: Vec<String> = (0..20).map(|i| format!("jwks:{{load{i}}}")).collect();
    for s in &sets {
        rotate(&mut con, s, &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    }
    let base = used_memory(&mut con);
    for (n, s) in sets.iter().enumerate() {
        let ids = (0..5000).map(|i| format!("host-{n:02}-{i:05}-0123456789abcdef01234"));
        ack_many(&mut con, s, 1, ids);
    }
    let grown = used_memory(&mut con) - base;
    assert!(grown < 60 << 20, "100k verifiers took {grown} bytes");
    let e = try_ack(&mut con, &sets[0], 1, b"one-too-many", 60_000).unwrap_err();
    assert!(
        e.to_string().starts_with("FULL") || e.code() == Some("FULL"),
        "{e}"
    );
    // A known ID may always ack again.
    try_ack(
        &mut con,
        &sets[0],
        1,
        b"host-00-00000-0123456789abcdef01234",
        60_000,
    )
    .unwrap();
    let t = Instant::now();
    assert_eq!(all_verifier_gauges(&mut con), 100_000);
    let scrape = t.elapsed();
    eprintln!("JWKS.STATS over 100k verifiers: {scrape:?}");
    assert!(
        scrape < Duration::from_millis(500),
        "a scrape took {scrape:?}"
    );
    // DEL of one set frees its share: new IDs fit again.
    let _: i64 = cmd("DEL", &[&sets[19]]).query(&mut con).unwrap();
    settle(&mut con);
    try_ack(&mut con, &sets[0], 1, b"now-fits", 60_000).unwrap();
    assert_eq!(all_verifier_gauges(&mut con), 95_001);
}

#[test]
fn acks_at_a_high_rate_during_confirmed_rotations_leave_ping_fast() {
    let server = Server::start();
    let mut con = server.conn();
    confirming(&mut con, K, &[]);
    let url = server.url();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let g: i64 = cmd("JWKS.INFO", &[K])
                    .query::<Value>(&mut c)
                    .map(|v| as_int(&field(&v, "generation")))
                    .unwrap();
                let ids = (0..500u64).map(|i| format!("f{}", i % 2000 + (sent % 4) * 2000));
                ack_many(&mut c, K, g, ids);
                sent += 1;
            }
            sent
        })
    };
    let mut worst = Duration::ZERO;
    let mut rotations = 0;
    let start = Instant::now();
    let mut k = 10;
    let mut waiting_for = "b".to_string();
    while start.elapsed() < Duration::from_millis(1500) {
        let t = Instant::now();
        let _: String = cmd::<&str>("PING", &[]).query(&mut con).unwrap();
        worst = worst.max(t.elapsed());
        if current(&mut con, K) == waiting_for {
            assert_eq!(promotions_of(&mut con, K, &waiting_for), 1, "{waiting_for}");
            k += 1;
            waiting_for = format!("k{k}");
            rotate(&mut con, K, &["ADD", &ec(&waiting_for, k)]).unwrap();
            rotations += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let batches = flood.join().unwrap();
    eprintln!("worst PING {worst:?}, {batches} batches of 500 acks, {rotations} rotations");
    assert!(worst < Duration::from_millis(250), "PING took {worst:?}");
    assert!(
        rotations >= 2,
        "the flood's acks confirmed {rotations} rotations"
    );
}

// ---- The clean-up path ------------------------------------------------------------------------

#[test]
fn deleting_a_set_whose_audit_and_metrics_are_strangers_values_still_drops_the_cache() {
    let server = Server::start();
    let mut con = server.conn();
    confirming(&mut con, K, &[]);
    ack(&mut con, K, 1, "v");
    let _: Value = cmd("JWKS.GET", &[K]).query(&mut con).unwrap();
    let (cache, audit_k, metrics) = (
        derived(K, "cache"),
        derived(K, "audit"),
        derived(K, "metrics"),
    );
    let n: i64 = cmd("EXISTS", &[&cache]).query(&mut con).unwrap();
    assert_eq!(n, 1);
    let _: i64 = cmd("DEL", &[&audit_k, &metrics]).query(&mut con).unwrap();
    let _: () = cmd("SET", &[&audit_k, "stranger's string"])
        .query(&mut con)
        .unwrap();
    let _: () = cmd("SET", &[&metrics, "not a hash"])
        .query(&mut con)
        .unwrap();
    let _: i64 = cmd("DEL", &[K]).query(&mut con).unwrap();
    settle(&mut con);
    wait_for("cache gone", || {
        let n: i64 = cmd("EXISTS", &[&cache]).query(&mut con).unwrap();
        n == 0
    });
    let a: String = cmd("GET", &[&audit_k]).query(&mut con).unwrap();
    let m: String = cmd("GET", &[&metrics]).query(&mut con).unwrap();
    assert_eq!(
        (a.as_str(), m.as_str()),
        ("stranger's string", "not a hash")
    );
    assert_eq!(all_verifier_gauges(&mut con), 0);
}

#[test]
fn a_lookalike_cache_name_with_no_key_set_is_never_touched() {
    let server = Server::start();
    let mut con = server.conn();
    let _: () = cmd("SET", &["session:{abc}:cache", "theirs"])
        .query(&mut con)
        .unwrap();
    let _: () = cmd("SET", &["session:{abc}", "also theirs"])
        .query(&mut con)
        .unwrap();
    let _: i64 = cmd("DEL", &["session:{abc}"]).query(&mut con).unwrap();
    let e = try_ack(&mut con, "session:{abc}", 0, b"v", 60_000).unwrap_err();
    assert!(e.to_string().contains("NOKEYSET"), "{e}");
    let _: () = cmd("RENAME", &["session:{abc}:cache", "session:{abc}:cache2"])
        .query(&mut con)
        .unwrap();
    let _: () = cmd("RENAME", &["session:{abc}:cache2", "session:{abc}:cache"])
        .query(&mut con)
        .unwrap();
    settle(&mut con);
    let v: String = cmd("GET", &["session:{abc}:cache"])
        .query(&mut con)
        .unwrap();
    assert_eq!(v, "theirs");
    let ttl: i64 = cmd("PTTL", &["session:{abc}:cache"])
        .query(&mut con)
        .unwrap();
    assert_eq!(ttl, -1);
}

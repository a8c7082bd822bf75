//! ACL selectors: the module allows a derived key (cache, audit, counters) or the events
//! channel only when the same selector that allows the command, with its own key, also
//! allows that access; otherwise NOPERM naming the key, and nothing is written. Root-only
//! users keep working as before (tests/acl.rs has the documented recipes).

mod common;

use common::*;
use redis::Connection;

const K: &str = "jwks:{a}";
/// Every command under test, for the users' rules.
const JWKS: [&str; 5] = [
    "+jwks.rotate",
    "+jwks.invalidate",
    "+jwks.policy",
    "+jwks.get",
    "+jwks.info",
];

fn setuser(admin: &mut Connection, name: &str, rules: &[&str]) {
    let mut args = vec!["SETUSER", name, "reset", "on", ">pw"];
    args.extend_from_slice(rules);
    let _: () = cmd("ACL", &args)
        .query(admin)
        .unwrap_or_else(|e| panic!("ACL SETUSER {name} {rules:?}: {e}"));
}

fn as_user(server: &Server, user: &str) -> Connection {
    let url = format!("redis://{user}:pw@127.0.0.1:{}/", server.port);
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

fn ok(con: &mut Connection, args: &[&str]) -> redis::Value {
    cmd(args[0], &args[1..])
        .query(con)
        .unwrap_or_else(|e| panic!("{args:?} refused: {e}"))
}

fn denied(con: &mut Connection, args: &[&str]) -> String {
    match cmd(args[0], &args[1..]).query::<redis::Value>(con) {
        Ok(v) => panic!("{args:?} allowed: {v:?}"),
        Err(e) => {
            assert_eq!(e.code(), Some("NOPERM"), "{args:?}: {e}");
            e.to_string()
        }
    }
}

/// A server with the key set at K, its cache filled (so no read fills it later and every
/// digest compares like with like) and a policy to change.
fn server_with_keyset() -> (Server, Connection) {
    let server = Server::start();
    let mut admin = server.conn();
    rotate(&mut admin, K, &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let _: String = cmd("JWKS.GET", &[K]).query(&mut admin).unwrap();
    wait_for("the cache fill", || {
        cmd("EXISTS", &[&derived(K, "cache")])
            .query::<i64>(&mut admin)
            .unwrap()
            == 1
    });
    (server, admin)
}

/// What a change writes: the key set, its cache, audit trail and counters.
fn state(admin: &mut Connection) -> (String, i64, redis::Value) {
    let len: i64 = cmd("XLEN", &[&derived(K, "audit")]).query(admin).unwrap();
    let metrics: redis::Value = cmd("HGETALL", &[&derived(K, "metrics")])
        .query(admin)
        .unwrap();
    (digest(admin), len, metrics)
}

/// Each changing command and the META read are refused, naming `key` for `verb`, and
/// nothing is written.
fn all_refused(admin: &mut Connection, user: &mut Connection, verb: &str, key: &str) {
    let before = state(admin);
    for args in [
        &["JWKS.ROTATE", K, "ADD", &ec("b", 2)][..],
        &["JWKS.INVALIDATE", K, "REASON", "drill"],
        &["JWKS.POLICY", K, "PROMOTE-AFTER", "120000"],
    ] {
        let e = denied(user, args);
        assert!(e.contains(&format!("{verb} '{key}'")), "{args:?}: {e}");
    }
    assert_eq!(state(admin), before, "a refused command wrote something");
}

fn all_allowed(admin: &mut Connection, user: &mut Connection, name: &str) {
    static SEED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(100);
    let seed = SEED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let audited = audit(admin, &derived(K, "audit")).len();
    ok(
        user,
        &[
            "JWKS.ROTATE",
            K,
            "ADD",
            &ec(&format!("{name}-{seed}"), seed),
        ],
    );
    ok(user, &["JWKS.INVALIDATE", K, "REASON", "drill"]);
    ok(user, &["JWKS.POLICY", K, "PROMOTE-AFTER", "60000"]);
    let meta = ok(user, &["JWKS.GET", K, "META"]);
    assert!(as_string(&field(&meta, "document")).contains("\"a\""));
    let trail = audit(admin, &derived(K, "audit"));
    assert!(trail.len() > audited, "{trail:?}");
    assert!(
        trail[audited..].iter().all(|e| e["user"] == name),
        "{trail:?}"
    );
}

#[test]
fn root_only_permissions_are_checked_as_before() {
    let (server, mut admin) = server_with_keyset();
    let mut rules = vec!["~jwks:{a}*", "&jwks:{a}:*"];
    rules.extend(JWKS);
    setuser(&mut admin, "root", &rules);
    all_allowed(&mut admin, &mut as_user(&server, "root"), "root");

    let mut rules = vec!["~jwks:{a}", "%R~jwks:{a}:*", "&jwks:{a}:*"];
    rules.extend(JWKS);
    setuser(&mut admin, "rootro", &rules);
    let mut user = as_user(&server, "rootro");
    all_refused(&mut admin, &mut user, "write", &derived(K, "cache"));
    ok(&mut user, &["JWKS.GET", K, "META"]);
}

#[test]
fn derived_keys_allowed_only_by_another_selector_are_refused() {
    let (server, mut admin) = server_with_keyset();
    // The user: the command and its key in the root, the derived keys in a selector
    // that may only GET them.
    let mut rules = vec!["~jwks:{a}", "&jwks:{a}:*"];
    rules.extend(JWKS);
    rules.push("(~jwks:{a}:* +get)");
    setuser(&mut admin, "split", &rules);
    let mut user = as_user(&server, "split");
    // Redis itself refuses the derived writes to this user...
    denied(&mut user, &["XADD", &derived(K, "audit"), "*", "f", "v"]);
    ok(&mut user, &["GET", &derived(K, "cache")]);
    // ...and so does the module, for every changing command and the META read.
    all_refused(&mut admin, &mut user, "write", &derived(K, "cache"));
    let before = state(&mut admin);
    let e = denied(&mut user, &["JWKS.GET", K, "META"]);
    assert!(
        e.contains(&format!("read '{}'", derived(K, "cache"))),
        "{e}"
    );
    let e = denied(&mut user, &["JWKS.INFO", K]);
    assert!(
        e.contains(&format!("read '{}'", derived(K, "cache"))),
        "{e}"
    );
    // The document itself needs the key set alone.
    let doc: String = cmd("JWKS.GET", &[K]).query(&mut user).unwrap();
    assert!(doc.contains("\"a\""));
    assert_eq!(state(&mut admin), before);

    // The same with the roles swapped: derived keys in the root, the command in a selector.
    setuser(
        &mut admin,
        "swapped",
        &[
            "~jwks:{a}:*",
            "&jwks:{a}:*",
            "+get",
            "+xadd",
            "+hincrby",
            "(~jwks:{a} &jwks:{a}:* +jwks.rotate +jwks.invalidate +jwks.policy +jwks.get)",
        ],
    );
    let mut user = as_user(&server, "swapped");
    all_refused(&mut admin, &mut user, "write", &derived(K, "cache"));

    // A selector with every derived key and the command, but not the command's own key,
    // does not lend its keys to the selector that allows the command.
    setuser(
        &mut admin,
        "nokey",
        &[
            "(~jwks:{a} -@all +jwks.rotate +jwks.invalidate +jwks.policy)",
            "(~jwks:{a}:* &jwks:{a}:* -@all +jwks.rotate +jwks.invalidate +jwks.policy)",
        ],
    );
    let mut user = as_user(&server, "nokey");
    all_refused(&mut admin, &mut user, "write", &derived(K, "cache"));
}

#[test]
fn one_selector_that_allows_everything_is_enough() {
    let (server, mut admin) = server_with_keyset();
    // One selector, nothing in the root.
    setuser(
        &mut admin,
        "one",
        &["(~jwks:{a} ~jwks:{a}:* &jwks:{a}:* +jwks.rotate +jwks.invalidate +jwks.policy +jwks.get)"],
    );
    all_allowed(&mut admin, &mut as_user(&server, "one"), "one");

    // Several selectors: unrelated root rules, a selector with the derived keys but not the
    // command, and the one that allows it all, last.
    setuser(
        &mut admin,
        "several",
        &[
            "~other:*",
            "+get",
            "(~jwks:{a}:* &jwks:{a}:* +xadd +hincrby +del)",
            "(%R~x:* +jwks.get)",
            "(~jwks:{a}* &jwks:{a}:* +jwks.rotate +jwks.invalidate +jwks.policy +jwks.get)",
        ],
    );
    all_allowed(&mut admin, &mut as_user(&server, "several"), "several");

    // The root allows it all, with selectors beside it.
    let mut rules = vec!["~jwks:{a}*", "&jwks:{a}:*", "(~x +get)"];
    rules.extend(JWKS);
    setuser(&mut admin, "rootsel", &rules);
    all_allowed(&mut admin, &mut as_user(&server, "rootsel"), "rootsel");
}

#[test]
fn read_only_patterns_do_not_allow_derived_writes() {
    let (server, mut admin) = server_with_keyset();
    // The command's selector may only read the derived keys; another may write them.
    setuser(
        &mut admin,
        "ro",
        &[
            "(~jwks:{a} %R~jwks:{a}:* &jwks:{a}:* +jwks.rotate +jwks.invalidate +jwks.policy +jwks.get +jwks.info)",
            "(%W~jwks:{a}:* +set)",
        ],
    );
    let mut user = as_user(&server, "ro");
    all_refused(&mut admin, &mut user, "write", &derived(K, "cache"));
    // Reads stay allowed by the command's own selector.
    ok(&mut user, &["JWKS.GET", K, "META"]);
    ok(&mut user, &["JWKS.INFO", K]);

    // Write-only derived keys in the command's selector, read access elsewhere: the
    // changes need only writes and go through; the META read does not.
    setuser(
        &mut admin,
        "wo",
        &[
            "(~jwks:{a} %W~jwks:{a}:* &jwks:{a}:* +jwks.rotate +jwks.invalidate +jwks.policy +jwks.get)",
            "(%R~jwks:{a}:* +get)",
        ],
    );
    let mut user = as_user(&server, "wo");
    ok(&mut user, &["JWKS.INVALIDATE", K, "REASON", "drill"]);
    let before = state(&mut admin);
    let e = denied(&mut user, &["JWKS.GET", K, "META"]);
    assert!(
        e.contains(&format!("read '{}'", derived(K, "cache"))),
        "{e}"
    );
    assert_eq!(state(&mut admin), before);
}

#[test]
fn the_events_channel_only_in_another_selector_is_refused() {
    let (server, mut admin) = server_with_keyset();
    setuser(
        &mut admin,
        "chan",
        &[
            "resetchannels",
            "(~jwks:{a} ~jwks:{a}:* resetchannels +jwks.rotate +jwks.invalidate +jwks.policy)",
            "(&jwks:{a}:* +spublish +publish)",
        ],
    );
    let mut user = as_user(&server, "chan");
    all_refused(&mut admin, &mut user, "publish to", &derived(K, "events"));
    // Redis lets the user publish there, through the other selector.
    ok(&mut user, &["SPUBLISH", &derived(K, "events"), "x"]);
}

#[test]
fn a_user_changed_or_deleted_while_connected_is_checked_as_it_is_now() {
    let (server, mut admin) = server_with_keyset();
    let good = "(~jwks:{a}* &jwks:{a}:* +jwks.rotate +jwks.invalidate +jwks.policy +jwks.get)";
    setuser(&mut admin, "later", &[good]);
    let mut user = as_user(&server, "later");
    ok(&mut user, &["JWKS.INVALIDATE", K, "REASON", "drill"]);
    // The selector loses the derived keys (the connection stays): refused from now on.
    setuser(
        &mut admin,
        "later",
        &[
            "(~jwks:{a} &jwks:{a}:* +jwks.invalidate)",
            "(~jwks:{a}:* +get)",
        ],
    );
    all_refused_invalidate(&mut admin, &mut user);
    // Deleted: nothing more through the module.
    let _: i64 = cmd("ACL", &["DELUSER", "later"]).query(&mut admin).unwrap();
    let before = state(&mut admin);
    assert!(cmd("JWKS.INVALIDATE", &[K])
        .query::<redis::Value>(&mut user)
        .is_err());
    assert_eq!(state(&mut admin), before);
}

fn all_refused_invalidate(admin: &mut Connection, user: &mut Connection) {
    let before = state(admin);
    let e = denied(user, &["JWKS.INVALIDATE", K, "REASON", "drill"]);
    assert!(
        e.contains(&format!("write '{}'", derived(K, "cache"))),
        "{e}"
    );
    assert_eq!(state(admin), before);
}

#[test]
fn commands_in_multi_and_scripts_are_checked_by_their_own_arguments() {
    let (server, mut admin) = server_with_keyset();
    let mut rules = vec!["~jwks:{a}", "&jwks:{a}:*", "+multi", "+exec", "+eval"];
    rules.extend(JWKS);
    rules.push("(~jwks:{a}:* +get)");
    setuser(&mut admin, "batch", &rules);
    let mut user = as_user(&server, "batch");
    let before = state(&mut admin);
    let replies: redis::RedisResult<redis::Value> = redis::pipe()
        .atomic()
        .cmd("JWKS.INVALIDATE")
        .arg(K)
        .query(&mut user);
    assert!(format!("{replies:?}").contains("NOPERM"), "{replies:?}");
    let script = "return redis.call('JWKS.INVALIDATE', KEYS[1])";
    let e = cmd("EVAL", &[script, "1", K])
        .query::<redis::Value>(&mut user)
        .expect_err("refused inside a script");
    assert!(e.to_string().contains("NOPERM"), "{e}");
    assert_eq!(state(&mut admin), before);
}

#[test]
fn database_selectors_count_where_the_server_has_them() {
    let (server, mut admin) = server_with_keyset();
    // Valkey 9 grants databases per selector; other servers refuse the rule.
    let probe: redis::RedisResult<()> = cmd("ACL", &["SETUSER", "probe", "db=0"]).query(&mut admin);
    if probe.is_err() {
        return;
    }
    // Db 0 allows the command and its key; the derived keys only in db 1.
    setuser(
        &mut admin,
        "dbs",
        &[
            "+select",
            "(db=0 ~jwks:{a} &jwks:{a}:* +jwks.invalidate +jwks.rotate +jwks.policy)",
            "(db=1 ~jwks:{a}* &jwks:{a}:* +jwks.invalidate +jwks.rotate +jwks.policy)",
        ],
    );
    let mut user = as_user(&server, "dbs");
    all_refused(&mut admin, &mut user, "write", &derived(K, "cache"));
    // In db 1 one selector allows it all.
    let _: () = cmd("SELECT", &["1"]).query(&mut admin).unwrap();
    rotate(&mut admin, K, &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let _: () = cmd("SELECT", &["1"]).query(&mut user).unwrap();
    ok(&mut user, &["JWKS.INVALIDATE", K, "REASON", "drill"]);
}

#[test]
fn the_documented_selector_recipe_rotates_one_tenant_and_reads_another() {
    let (server, mut admin) = server_with_keyset();
    rotate(
        &mut admin,
        "jwks:{b}",
        &["ADD", &ec("b", 2), "PROMOTE", "b"],
    )
    .unwrap();
    let doc = std::fs::read_to_string(repo_path("docs/acl.md")).unwrap();
    let line = doc
        .lines()
        .find(|l| l.starts_with("redis-cli ACL SETUSER tenant_a "))
        .expect("the tenant_a recipe in docs/acl.md");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(line)
        .env("PATH", shim_path(&server))
        .output()
        .expect("redis-cli");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK", "{out:?}");
    let url = format!(
        "redis://tenant_a:tenant-a-secret@127.0.0.1:{}/",
        server.port
    );
    let mut user = redis::Client::open(url).unwrap().get_connection().unwrap();
    ok(&mut user, &["JWKS.ROTATE", K, "ADD", &ec("a2", 3)]);
    ok(&mut user, &["JWKS.INVALIDATE", K, "REASON", "drill"]);
    ok(&mut user, &["JWKS.GET", K, "META"]);
    ok(&mut user, &["JWKS.GET", "jwks:{b}", "META"]);
    wait_for("the cache fill of jwks:{b}", || {
        cmd("EXISTS", &["jwks:{b}:cache"])
            .query::<i64>(&mut admin)
            .unwrap()
            == 1
    });
    let before = digest(&mut admin);
    denied(&mut user, &["JWKS.ROTATE", "jwks:{b}", "ADD", &ec("c", 4)]);
    denied(&mut user, &["JWKS.INVALIDATE", "jwks:{b}"]);
    assert_eq!(digest(&mut admin), before);
}

#[test]
fn more_selectors_than_the_module_keeps_users_for() {
    let (server, mut admin) = server_with_keyset();
    let mut rules: Vec<String> = (0..80)
        .map(|i| format!("(~other{i}:* &jwks:{{a}}:* +jwks.invalidate)"))
        .collect();
    rules.push(
        "(~jwks:{a}* &jwks:{a}:* +jwks.rotate +jwks.invalidate +jwks.policy +jwks.get)".into(),
    );
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    setuser(&mut admin, "many", &rules);
    let mut user = as_user(&server, "many");
    for _ in 0..3 {
        all_allowed(&mut admin, &mut user, "many");
    }
    // The same selectors but the last lose the derived keys: refused.
    let mut rules: Vec<&str> = rules[..80].to_vec();
    rules.push("(~jwks:{a} ~jwks:{a}:x &jwks:{a}:* +jwks.rotate +jwks.invalidate +jwks.policy)");
    setuser(&mut admin, "many", &rules);
    all_refused(&mut admin, &mut user, "write", &derived(K, "cache"));
}

//! ACL: every recipe in docs/acl.md, run verbatim through redis-cli on a real server, grants
//! what its role needs and nothing more; and the module never reads or writes a key the
//! caller's ACL denies (it refuses with NOPERM naming the key, having written nothing).

mod common;

use std::collections::HashMap;
use std::process::Command;

use common::*;
use redis::Connection;

/// The `redis-cli ACL SETUSER` commands of docs/acl.md, by user name.
fn recipes() -> HashMap<String, String> {
    let doc = std::fs::read_to_string(repo_path("docs/acl.md")).unwrap();
    let mut out = HashMap::new();
    for line in doc.lines() {
        if let Some(rest) = line.strip_prefix("redis-cli ACL SETUSER ") {
            let user = rest.split_whitespace().next().unwrap().to_owned();
            out.insert(user, line.to_owned());
        }
    }
    out
}

/// Runs a recipe exactly as a user would paste it into a shell; `redis-cli` reaches the
/// test's server through the port in REDISCLI's default-less environment: a shim on PATH.
fn apply(server: &Server, line: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(line)
        .env("PATH", shim_path(server))
        .current_dir(&server.dir)
        .output()
        .expect("redis-cli");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        "OK",
        "{line}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn as_user(server: &Server, user: &str, pass: &str) -> Connection {
    let url = format!("redis://{user}:{pass}@127.0.0.1:{}/", server.port);
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

fn password(line: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.trim_matches('\'').strip_prefix('>'))
        .unwrap()
        .to_owned()
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

#[test]
fn each_documented_recipe_grants_its_role_and_nothing_more() {
    let server = Server::start();
    let mut admin = server.conn();
    let recipes = recipes();
    for user in ["rotator", "endpoint", "inspector", "jwks_exporter"] {
        assert!(
            recipes.contains_key(user),
            "no recipe for {user}: {recipes:?}"
        );
        apply(&server, &recipes[user]);
    }
    let user = |name: &str| as_user(&server, name, &password(&recipes[name]));
    let _: () = cmd("SET", &["secret", "s"]).query(&mut admin).unwrap();

    let mut rotator = user("rotator");
    ok(
        &mut rotator,
        &[
            "JWKS.ROTATE",
            "jwks:{auth}",
            "ADD",
            &ec("a", 1),
            "PROMOTE",
            "a",
        ],
    );
    ok(
        &mut rotator,
        &["JWKS.INVALIDATE", "jwks:{auth}", "REASON", "drill"],
    );
    ok(&mut rotator, &["JWKS.INFO", "jwks:{auth}"]);
    // The Celery task's first run sets the lifecycle policy.
    ok(
        &mut rotator,
        &[
            "JWKS.POLICY",
            "jwks:{auth}",
            "PROMOTE-AFTER",
            "3600000",
            "RETIRE-AFTER",
            "7200000",
        ],
    );
    ok(&mut rotator, &["XRANGE", "jwks:{auth}:audit", "-", "+"]);
    let trail = audit(&mut rotator, "jwks:{auth}:audit");
    assert!(trail.iter().all(|e| e["user"] == "rotator"), "{trail:?}");
    denied(
        &mut rotator,
        &["JWKS.ROTATE", "other:{x}", "ADD", &ec("a", 1)],
    );
    denied(&mut rotator, &["GET", "secret"]);
    denied(&mut rotator, &["DEL", "jwks:{auth}"]);
    denied(&mut rotator, &["FLUSHALL"]);

    let mut endpoint = user("endpoint");
    let doc: String = cmd("JWKS.GET", &["jwks:{auth}"])
        .query(&mut endpoint)
        .unwrap();
    assert!(doc.contains("\"a\""));
    let meta = ok(&mut endpoint, &["JWKS.GET", "jwks:{auth}", "META"]);
    assert_eq!(as_string(&field(&meta, "document")), doc);
    let before = digest(&mut admin);
    denied(
        &mut endpoint,
        &["JWKS.ROTATE", "jwks:{auth}", "ADD", &ec("b", 2)],
    );
    denied(&mut endpoint, &["JWKS.INVALIDATE", "jwks:{auth}"]);
    // The status page reads JWKS.INFO and the audit trail; nothing it may write.
    ok(&mut endpoint, &["JWKS.INFO", "jwks:{auth}"]);
    ok(
        &mut endpoint,
        &["XREVRANGE", "jwks:{auth}:audit", "+", "-", "COUNT", "5"],
    );
    denied(
        &mut endpoint,
        &["JWKS.POLICY", "jwks:{auth}", "PROMOTE-AFTER", "1000"],
    );
    denied(
        &mut endpoint,
        &["XADD", "jwks:{auth}:audit", "*", "forged", "1"],
    );
    denied(&mut endpoint, &["PUBLISH", "jwks:{auth}:events", "forged"]);
    denied(&mut endpoint, &["SET", "jwks:{auth}:cache", "forged"]);
    denied(&mut endpoint, &["GET", "secret"]);
    assert_eq!(digest(&mut admin), before);

    let mut inspector = user("inspector");
    let info = ok(&mut inspector, &["JWKS.INFO", "jwks:{auth}"]);
    assert_eq!(as_string(&field(&info, "current")), "a");
    ok(&mut inspector, &["XRANGE", "jwks:{auth}:audit", "-", "+"]);
    ok(&mut inspector, &["HGETALL", "jwks:{auth}:metrics"]);
    ok(&mut inspector, &["JWKS.GET", "jwks:{auth}"]);
    denied(
        &mut inspector,
        &["JWKS.ROTATE", "jwks:{auth}", "ADD", &ec("b", 2)],
    );
    denied(&mut inspector, &["JWKS.INVALIDATE", "jwks:{auth}"]);
    denied(&mut inspector, &["DEL", "jwks:{auth}:audit"]);
    assert_eq!(digest(&mut admin), before);

    let mut exporter = user("jwks_exporter");
    let script = std::fs::read_to_string(repo_path("monitoring/jwks_exporter.lua")).unwrap();
    let flat: Vec<String> = cmd("EVAL", &[script.as_str(), "0"])
        .query(&mut exporter)
        .unwrap();
    assert!(
        flat.windows(2).any(|p| p == ["jwt_jwks_module_up", "1"]),
        "{flat:?}"
    );
    ok(&mut exporter, &["XINFO", "STREAM", "jwks:{auth}:audit"]);
    denied(&mut exporter, &["JWKS.GET", "jwks:{auth}"]);
    denied(
        &mut exporter,
        &["JWKS.ROTATE", "jwks:{auth}", "ADD", &ec("b", 2)],
    );
    denied(&mut exporter, &["HGETALL", "jwks:{auth}:metrics"]);
}

#[test]
fn the_exporter_recipe_loads_and_scrapes_where_the_module_is_missing() {
    let server = Server::plain();
    apply(&server, &recipes()["jwks_exporter"]);
    let mut exporter = as_user(
        &server,
        "jwks_exporter",
        &password(&recipes()["jwks_exporter"]),
    );
    let script = std::fs::read_to_string(repo_path("monitoring/jwks_exporter.lua")).unwrap();
    let flat: Vec<String> = cmd("EVAL", &[script.as_str(), "0"])
        .query(&mut exporter)
        .unwrap();
    assert_eq!(flat, ["jwt_jwks_module_up", "0"]);
}

#[test]
fn the_module_checks_the_callers_acl_on_every_derived_key() {
    let server = Server::start();
    let mut admin = server.conn();
    rotate(
        &mut admin,
        "jwks:{auth}",
        &["ADD", &ec("a", 1), "PROMOTE", "a"],
    )
    .unwrap();
    // Key patterns that cover the key set but not its derived keys.
    let _: () = cmd(
        "ACL",
        &[
            "SETUSER",
            "narrow",
            "on",
            ">pw",
            "resetkeys",
            "~jwks:{auth}",
            "-@all",
            "+jwks.rotate",
            "+jwks.invalidate",
            "+jwks.info",
            "+jwks.get",
        ],
    )
    .query(&mut admin)
    .unwrap();
    let _: () = cmd(
        "ACL",
        &[
            "SETUSER",
            "readonly",
            "on",
            ">pw",
            "resetkeys",
            "%R~jwks:*",
            "-@all",
            "+jwks.info",
            "+jwks.get",
            "+jwks.invalidate",
        ],
    )
    .query(&mut admin)
    .unwrap();
    let mut narrow = as_user(&server, "narrow", "pw");
    let before = digest(&mut admin);
    let e = denied(
        &mut narrow,
        &["JWKS.ROTATE", "jwks:{auth}", "ADD", &ec("b", 2)],
    );
    assert!(
        e.contains("'narrow'") && e.contains("jwks:{auth}:cache"),
        "{e}"
    );
    let e = denied(&mut narrow, &["JWKS.INVALIDATE", "jwks:{auth}"]);
    assert!(e.contains("write 'jwks:{auth}:cache'"), "{e}");
    let e = denied(&mut narrow, &["JWKS.INFO", "jwks:{auth}"]);
    assert!(e.contains("read 'jwks:{auth}:cache'"), "{e}");
    let e = denied(&mut narrow, &["JWKS.GET", "jwks:{auth}", "META"]);
    assert!(e.contains("read 'jwks:{auth}:cache'"), "{e}");
    assert_eq!(digest(&mut admin), before);
    // Reading the document needs the key set alone: the module keeps its cache itself.
    let doc: String = cmd("JWKS.GET", &["jwks:{auth}"])
        .query(&mut narrow)
        .unwrap();
    assert!(doc.contains("\"a\""));

    let mut readonly = as_user(&server, "readonly", "pw");
    ok(&mut readonly, &["JWKS.INFO", "jwks:{auth}"]);
    let before = digest(&mut admin);
    let e = denied(&mut readonly, &["JWKS.INVALIDATE", "jwks:{auth}"]);
    assert!(e.contains("write 'jwks:{auth}:cache'"), "{e}");
    assert_eq!(digest(&mut admin), before);
    // Keys allowed but not the events channel: the change is refused before any write.
    let _: () = cmd(
        "ACL",
        &[
            "SETUSER",
            "nochan",
            "on",
            ">pw",
            "resetkeys",
            "~jwks:*",
            "resetchannels",
            "-@all",
            "+jwks.rotate",
        ],
    )
    .query(&mut admin)
    .unwrap();
    let mut nochan = as_user(&server, "nochan", "pw");
    let before = digest(&mut admin);
    let e = denied(
        &mut nochan,
        &["JWKS.ROTATE", "jwks:{auth}", "ADD", &ec("b", 2)],
    );
    assert!(e.contains("publish to 'jwks:{auth}:events'"), "{e}");
    assert_eq!(digest(&mut admin), before);
    // A user deleted while connected can do nothing more through the module.
    let _: i64 = cmd("ACL", &["DELUSER", "readonly"])
        .query(&mut admin)
        .unwrap();
    assert!(cmd("JWKS.INFO", &["jwks:{auth}"])
        .query::<redis::Value>(&mut readonly)
        .is_err());
}

#[test]
fn the_modules_refusals_are_in_acl_log_like_the_servers_own() {
    let server = Server::start();
    let mut admin = server.conn();
    rotate(
        &mut admin,
        "jwks:{auth}",
        &["ADD", &ec("a", 1), "PROMOTE", "a"],
    )
    .unwrap();
    let _: () = cmd(
        "ACL",
        &[
            "SETUSER",
            "narrow",
            "on",
            ">pw",
            "resetkeys",
            "~jwks:{auth}",
            "resetchannels",
            "-@all",
            "+jwks.invalidate",
        ],
    )
    .query(&mut admin)
    .unwrap();
    let _: () = cmd("ACL", &["LOG", "RESET"]).query(&mut admin).unwrap();
    let mut narrow = as_user(&server, "narrow", "pw");
    let e = denied(&mut narrow, &["JWKS.INVALIDATE", "jwks:{auth}"]);
    assert!(e.contains("jwks:{auth}:"), "{e}");
    let log: Vec<Vec<(String, redis::Value)>> = cmd("ACL", &["LOG"])
        .query::<Vec<redis::Value>>(&mut admin)
        .unwrap()
        .iter()
        .map(pairs)
        .collect();
    let entry = log.first().expect("an ACL LOG entry");
    let get = |k: &str| {
        entry
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| as_string(v))
            .unwrap_or_default()
    };
    assert_eq!(get("username"), "narrow");
    assert_eq!(get("reason"), "key");
    assert_eq!(get("context"), "module");
    assert!(get("object").starts_with("jwks:{auth}:"), "{entry:?}");
}

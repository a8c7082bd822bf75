//! ACL: a read-only user cannot rotate or invalidate; the audit trail names the user who
//! rotated. Uses the least-privilege users documented in the README.

mod common;

use common::*;

fn as_user(server: &Server, user: &str, pass: &str) -> redis::Connection {
    let url = format!("redis://{user}:{pass}@127.0.0.1:{}/", server.port);
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

#[test]
fn least_privilege_users() {
    let server = Server::start();
    let mut admin = server.conn();
    // The rotation task: may rotate, invalidate and read the key sets under jwks:*.
    let _: () = cmd(
        "ACL",
        &[
            "SETUSER",
            "rotator",
            "on",
            ">rot-pass",
            "resetkeys",
            "~jwks:*",
            "resetchannels",
            "-@all",
            "+jwks.rotate",
            "+jwks.invalidate",
            "+jwks.get",
            "+jwks.info",
            "+xrange",
        ],
    )
    .query(&mut admin)
    .unwrap();
    // The JWKS endpoint: reads only.
    let _: () = cmd(
        "ACL",
        &[
            "SETUSER",
            "endpoint",
            "on",
            ">end-pass",
            "resetkeys",
            "~jwks:*",
            "resetchannels",
            "-@all",
            "+jwks.get",
            "+get",
        ],
    )
    .query(&mut admin)
    .unwrap();

    let mut rotator = as_user(&server, "rotator", "rot-pass");
    rotate(
        &mut rotator,
        "jwks:{auth}",
        &["ADD", &ec("a", 1), "PROMOTE", "a"],
    )
    .unwrap();
    let trail = audit(&mut rotator, "jwks:{auth}:audit");
    assert!(trail.iter().all(|e| e["user"] == "rotator"), "{trail:?}");
    // Key patterns apply to the key set the command names.
    let err = rotate(&mut rotator, "other", &["ADD", &ec("a", 1)]).unwrap_err();
    assert_eq!(err.code(), Some("NOPERM"), "{err}");

    let mut endpoint = as_user(&server, "endpoint", "end-pass");
    let doc: String = cmd("JWKS.GET", &["jwks:{auth}"])
        .query(&mut endpoint)
        .unwrap();
    assert!(doc.contains("\"a\""));
    let cached: String = cmd("GET", &["jwks:{auth}:cache"])
        .query(&mut endpoint)
        .unwrap();
    assert_eq!(cached, doc);
    let before = digest(&mut admin);
    for attempt in [
        rotate(&mut endpoint, "jwks:{auth}", &["ADD", &ec("b", 2)]),
        cmd("JWKS.INVALIDATE", &["jwks:{auth}"]).query(&mut endpoint),
        cmd("JWKS.DEBUG", &["FAIL-INVALIDATIONS", "1"]).query(&mut endpoint),
    ] {
        let err = attempt.unwrap_err();
        assert_eq!(err.code(), Some("NOPERM"), "{err}");
    }
    assert_eq!(digest(&mut admin), before);
}

#[test]
fn every_command_is_in_the_jwks_category_where_the_server_has_module_categories() {
    let server = Server::start();
    let mut con = server.conn();
    let listed: redis::RedisResult<Vec<String>> =
        redis::cmd("ACL").arg("CAT").arg("jwks").query(&mut con);
    // Redis before 7.4 has no module ACL categories; the commands load without them.
    let Ok(jwks) = listed else { return };
    for command in [
        "jwks.get",
        "jwks.rotate",
        "jwks.invalidate",
        "jwks.info",
        "jwks.stats",
    ] {
        assert!(
            jwks.iter().any(|c| c == command),
            "{command} not in @jwks: {jwks:?}"
        );
    }
    // JWKS.GET is a fast read.
    for category in ["fast", "read"] {
        let listed: Vec<String> = redis::cmd("ACL")
            .arg("CAT")
            .arg(category)
            .query(&mut con)
            .unwrap();
        assert!(
            listed.iter().any(|c| c == "jwks.get"),
            "@{category}: {listed:?}"
        );
    }
}

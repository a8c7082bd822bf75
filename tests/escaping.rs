//! Names and free text are written unambiguously wherever they go (issue 18, item 7): key
//! sets named with bytes that are not UTF-8, U+2028, U+202E, CR/LF, and long names that
//! differ only at the end, changed with reasons holding U+2028 and U+202E. The Redis log
//! holds every one escaped (ASCII, nothing raw, long names cut with a digest so none log
//! alike), the event JSON gives each subscriber the exact name back, the audit stream keeps
//! the exact reason, JWKS.STATS labels stay distinct and escaped, error replies escape too.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use sha2::{Digest, Sha256};

/// A RESP value with binary-safe strings (integers and others only shown on failure).
#[derive(Debug)]
enum V {
    Bulk(Vec<u8>),
    Int(#[allow(dead_code)] i64),
    Arr(Vec<V>),
    Other(#[allow(dead_code)] String),
}

/// Stream entries as XRANGE gives them, values as bytes.
type Entries = Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>;

fn write_cmd(s: &mut TcpStream, args: &[&[u8]]) {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    s.write_all(&out).expect("write");
}

fn read_value(r: &mut BufReader<TcpStream>) -> Option<V> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line).ok()? == 0 {
        return None;
    }
    let text = String::from_utf8_lossy(&line).trim_end().to_owned();
    let n = || text[1..].parse::<i64>().unwrap_or(-1);
    Some(match line[0] {
        b'$' if n() >= 0 => {
            let mut buf = vec![0u8; n() as usize + 2];
            r.read_exact(&mut buf).ok()?;
            buf.truncate(buf.len() - 2);
            V::Bulk(buf)
        }
        b':' => V::Int(n()),
        b'*' | b'>' if n() >= 0 => V::Arr((0..n()).map(|_| read_value(r)).collect::<Option<_>>()?),
        _ => V::Other(text),
    })
}

fn events_channel(name: &[u8]) -> Vec<u8> {
    // The names below have no hash tag: the channel is `{name}:events`.
    [b"{", name, b"}:events"].concat()
}

/// Subscribes one connection to the events channels of `names`.
fn subscribe(port: u16, names: &[Vec<u8>]) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    for name in names {
        write_cmd(&mut s, &[b"SSUBSCRIBE", &events_channel(name)]);
        match read_value(&mut r) {
            Some(V::Arr(items)) => assert!(
                matches!(items.first(), Some(V::Bulk(k)) if k == b"ssubscribe"),
                "{items:?}"
            ),
            other => panic!("SSUBSCRIBE: {other:?}"),
        }
    }
    r
}

/// The next `count` messages, as (channel, message bytes).
fn messages(r: &mut BufReader<TcpStream>, count: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    while out.len() < count {
        match read_value(r) {
            Some(V::Arr(items)) => {
                if let [V::Bulk(kind), V::Bulk(channel), V::Bulk(message)] = &items[..] {
                    if kind == b"smessage" {
                        out.push((channel.clone(), message.clone()));
                    }
                }
            }
            other => panic!("expected {count} messages, got {out:?} then {other:?}"),
        }
    }
    out
}

/// The documented text form, written independently of the module's code: printable ASCII
/// as is but `\\`, `\t` `\n` `\r`, other characters `\u{hex}`, bytes not UTF-8 `\xNN`.
/// (The `'` of a quoted form is not in any name here.)
fn escaped(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                ' '..='~' => out.push(c),
                c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn digest16(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn log_bytes(server: &Server) -> Vec<u8> {
    std::fs::read(server.dir.join("server.log")).unwrap_or_default()
}

/// The module's log lines (`<jwks> ...`), once `ok` holds for them.
fn wait_module_log(
    server: &Server,
    what: &str,
    mut ok: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let raw = log_bytes(server);
        // Everything the module writes is ASCII but the cut marker: the log stays UTF-8.
        let text = String::from_utf8(raw).expect("the server log is UTF-8");
        let lines: Vec<String> = text
            .lines()
            .filter(|l| l.contains("<jwks>"))
            .map(str::to_owned)
            .collect();
        if ok(&lines) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "no log lines with {what}: {lines:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn names() -> Vec<Vec<u8>> {
    let long_a = [vec![b'k'; 511], b"a".to_vec()].concat();
    let long_b = [vec![b'k'; 511], b"b".to_vec()].concat();
    vec![
        b"bad\xff\xfename".to_vec(),
        "line\u{2028}sep".as_bytes().to_vec(),
        "rlo\u{202e}txt.exe".as_bytes().to_vec(),
        b"cr\r\nlf".to_vec(),
        // A valid name spelled like the escape of the first one.
        b"bad\\xff\\xfename".to_vec(),
        long_a,
        long_b,
    ]
}

#[test]
fn names_and_reasons_are_escaped_in_the_log_and_exact_in_events_and_audit() {
    let server = Server::start();
    let mut con = server.conn();
    let names = names();
    let mut sub = subscribe(server.port, &names);
    let reason = "deploy\u{2028}by \u{202e}eve";
    for (i, name) in names.iter().enumerate() {
        let kid = format!("k{i}");
        let _: redis::Value = redis::cmd("JWKS.ROTATE")
            .arg(name)
            .arg("REASON")
            .arg(reason)
            .arg("ADD")
            .arg(ec(&kid, i as u64 + 1))
            .arg("PROMOTE")
            .arg(&kid)
            .query(&mut con)
            .unwrap_or_else(|e| panic!("{name:?}: {e}"));
        let _: i64 = redis::cmd("JWKS.INVALIDATE")
            .arg(name)
            .arg("REASON")
            .arg(reason)
            .query(&mut con)
            .unwrap();
    }

    // Events: ASCII JSON that gives back the exact name (key_b64 when it is not UTF-8)
    // and the exact reason.
    let got = messages(&mut sub, 2 * names.len());
    for (i, name) in names.iter().enumerate() {
        let mine: Vec<&Vec<u8>> = got
            .iter()
            .filter(|(c, _)| *c == events_channel(name))
            .map(|(_, m)| m)
            .collect();
        assert_eq!(mine.len(), 2, "{name:?}: {got:?}");
        for m in mine {
            assert!(m.is_ascii(), "{}", String::from_utf8_lossy(m));
            let json: serde_json::Value = serde_json::from_slice(m).unwrap();
            assert_eq!(json["reason"], reason, "{json}");
            match std::str::from_utf8(name) {
                Ok(text) => {
                    assert_eq!(json["key"], text, "{json}");
                    assert!(json.get("key_b64").is_none(), "{json}");
                }
                Err(_) => {
                    let b64 = json["key_b64"].as_str().expect("key_b64");
                    let exact = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .unwrap();
                    assert_eq!(&exact, name, "{json}");
                    assert_eq!(json["key"], escaped(name), "{json}");
                }
            }
        }
        // Audit: the exact reason, for both entries.
        let audit_key = [b"{", &name[..], b"}:audit"].concat();
        let entries: Entries = redis::cmd("XRANGE")
            .arg(&audit_key)
            .arg("-")
            .arg("+")
            .query(&mut con)
            .unwrap();
        let reasons: Vec<&[u8]> = entries
            .iter()
            .flat_map(|(_, f)| f.iter())
            .filter(|(k, _)| k == b"reason")
            .map(|(_, v)| &v[..])
            .collect();
        assert!(reasons.len() >= 2, "{i}: {entries:?}");
        assert!(
            reasons.iter().all(|r| *r == reason.as_bytes()),
            "{reasons:?}"
        );
    }

    // Log: one line per change, every name escaped, none raw, long names cut with the digest
    // of the whole so the two differ.
    let shown_reason = "'deploy\\u{2028}by \\u{202e}eve'";
    let lines = wait_module_log(&server, "every invalidation", |lines| {
        lines
            .iter()
            .filter(|l| l.contains("JWKS_CACHE_INVALIDATED"))
            .count()
            >= 2 * names.len()
    });
    let raw = log_bytes(&server);
    for bad in ["\u{2028}", "\u{202e}"] {
        assert!(
            !String::from_utf8_lossy(&raw).contains(bad),
            "raw {bad:?} in the log"
        );
    }
    for name in &names[..5] {
        let needle = format!(
            "JWKS_CACHE_INVALIDATED key='{}' reason={shown_reason}",
            escaped(name)
        );
        assert_eq!(
            lines.iter().filter(|l| l.contains(&needle)).count(),
            2,
            "{needle}\n{lines:#?}"
        );
    }
    assert!(lines.iter().any(|l| l.contains("key='bad\\xff\\xfename'")));
    assert!(lines
        .iter()
        .any(|l| l.contains("key='bad\\\\xff\\\\xfename'")));
    assert!(lines.iter().any(|l| l.contains("key='cr\\r\\nlf'")));
    for long in &names[5..] {
        let tail = format!("…' (512 bytes, sha256 {})", digest16(long));
        let mine: Vec<&String> = lines.iter().filter(|l| l.contains(&tail)).collect();
        assert_eq!(mine.len(), 2, "{tail}\n{lines:#?}");
        assert!(mine
            .iter()
            .all(|l| l.contains("key='kkkkkkkk") && l.len() < 1024));
    }

    // Warnings name keys the same way: a key set renamed onto a reserved name.
    let from = b"mv\xff\xe2\x80\xae".to_vec();
    let to = [b"{", &from[..], b"}"].concat();
    let _: redis::Value = redis::cmd("JWKS.ROTATE")
        .arg(&from)
        .arg("ADD")
        .arg(ec("m", 99))
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("RENAME")
        .arg(&from)
        .arg(&to)
        .query(&mut con)
        .unwrap();
    // Without the keyspace hook the module meets the renamed set at its first use.
    let _: Option<String> = redis::cmd("JWKS.GET").arg(&to).query(&mut con).unwrap();
    wait_module_log(&server, "the reserved-name warning", |lines| {
        lines
            .iter()
            .any(|l| l.contains("a key set arrived at '{mv\\xff\\u{202e}}', a name"))
    });

    // Error replies escape the name too.
    let err = redis::cmd("JWKS.INVALIDATE")
        .arg("none\u{202e}\u{2028}")
        .query::<i64>(&mut con)
        .unwrap_err();
    assert_eq!(err.code(), Some("NOKEYSET"), "{err}");
    assert!(
        err.to_string().contains("'none\\u{202e}\\u{2028}'"),
        "{err}"
    );
}

#[test]
fn stats_labels_are_escaped_and_distinct() {
    let server = Server::start();
    let mut con = server.conn();
    let names = names();
    for (i, name) in names.iter().enumerate() {
        let kid = format!("k{i}");
        let _: redis::Value = redis::cmd("JWKS.ROTATE")
            .arg(name)
            .arg("ADD")
            .arg(ec(&kid, i as u64 + 1))
            .arg("PROMOTE")
            .arg(&kid)
            .query(&mut con)
            .unwrap();
        let _: redis::Value = redis::cmd("JWKS.POLICY")
            .arg(name)
            .arg("PROMOTE-AFTER")
            .arg("3600000")
            .query(&mut con)
            .unwrap();
    }
    let stats: Vec<Vec<u8>> = redis::cmd("JWKS.STATS").query(&mut con).unwrap();
    let series: Vec<String> = stats
        .chunks(2)
        .map(|p| String::from_utf8(p[0].clone()).expect("UTF-8 series names"))
        .collect();
    for s in &series {
        assert!(!s.contains(['\u{2028}', '\u{202e}', '\r', '\n']), "{s:?}");
    }
    let errors = "jwt_jwks_keyset_cache_invalidation_errors_total:0:";
    let labels: Vec<&str> = series
        .iter()
        .filter_map(|s| s.strip_prefix(errors))
        .collect();
    assert_eq!(labels.len(), names.len(), "{series:#?}");
    for expected in [
        "bad\\xff\\xfename",
        "line\\xe2\\x80\\xa8sep",
        "rlo\\xe2\\x80\\xaetxt.exe",
        "cr\\x0d\\x0alf",
        "bad\\x5cxff\\x5cxfename",
    ] {
        assert!(labels.contains(&expected), "{expected} not in {labels:#?}");
    }
    // Labels are never cut: the long names keep every byte, so they differ.
    for long in &names[5..] {
        let text = std::str::from_utf8(long).unwrap();
        assert!(labels.contains(&text), "{labels:#?}");
    }
    let ages = series
        .iter()
        .filter(|s| s.starts_with("jwt_jwks_keyset_next_key_published:0:"))
        .count();
    assert_eq!(ages, names.len(), "{series:#?}");
    // INFO jwks carries the same names.
    let info: Vec<u8> = redis::cmd("INFO").arg("jwks").query(&mut con).unwrap();
    let info = String::from_utf8(info).expect("INFO is UTF-8");
    assert!(info.contains("rlo\\xe2\\x80\\xaetxt.exe"), "{info}");
    assert!(!info.contains('\u{202e}'));
}

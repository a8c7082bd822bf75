//! Crafted `RESTORE` payloads of the module type, and a corrupt RDB file at startup.
//!
//! Real key sets (one key; several keys in three states; a lifecycle policy), dumped with
//! `rdbcompression` on and off, are mutated: cut at every offset of the framing and at
//! random ones, bytes flipped, bytes inserted, the string length replaced by huge values,
//! the module opcode, the EOF marker, the encoding version and the module type id changed,
//! and the stored JSON itself broken. Every mutant carries a valid trailer (RDB version +
//! CRC-64 recomputed), as an attacker would send it, so Redis hands it to the module. Each is
//! sent with `sanitize-dump-payload` `yes` and `no`. After each the server must answer PING;
//! RESTORE answers OK or an error; the key is then either a working key set or absent.
//!
//! A crash is recorded (with the log line that says why), a fresh server replaces the dead
//! one, and the run goes on, so one run lists every kind of payload that crashes; the test
//! fails at the end if any did. Deterministic: a seeded xorshift picks the random mutants.
//!
//! `JWKS_DUMP_SEEDS=<dir>` also writes the unmutated dumps there (how
//! fuzz/seeds/dump_payload was made).

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use redis::{Connection, Value};

// ------------------------------------------------------------------ the DUMP format

#[test]
fn crc64_is_redis_crc64() {
    // crc64.c's own test vector; the DUMP trailers are checked in Frame::parse.
    assert_eq!(crc64(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
}

/// `RDB_TYPE_MODULE_2`: a module value whose every field is preceded by an opcode.
const RDB_TYPE_MODULE_2: u8 = 7;
const OPCODE_EOF: u8 = 0;
const OPCODE_STRING: u8 = 5;

/// `moduleTypeEncodeId`: the type name's 9 characters of 6 bits, then 10 bits of version.
fn type_id(name: &str, encver: u64) -> u64 {
    const CHARSET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let id = name.chars().fold(0u64, |id, c| {
        (id << 6) | CHARSET.find(c).expect("a type name character") as u64
    });
    (id << 10) | encver
}

/// An RDB length as `rdbLoadLenByRef` reads it: (value, encoded?, next offset).
fn read_len(b: &[u8], at: usize) -> (u64, bool, usize) {
    let first = b[at];
    match first >> 6 {
        0 => (u64::from(first & 0x3f), false, at + 1),
        1 => (
            (u64::from(first & 0x3f) << 8) | u64::from(b[at + 1]),
            false,
            at + 2,
        ),
        3 => (u64::from(first & 0x3f), true, at + 1),
        _ if first == 0x80 => {
            let v = u32::from_be_bytes(b[at + 1..at + 5].try_into().unwrap());
            (u64::from(v), false, at + 5)
        }
        _ => {
            assert_eq!(first, 0x81, "RDB length type");
            let v = u64::from_be_bytes(b[at + 1..at + 9].try_into().unwrap());
            (v, false, at + 9)
        }
    }
}

/// A real DUMP of a key set, split at its fields (offsets into `body`).
#[derive(Clone)]
struct Frame {
    /// The payload without its 10-byte trailer.
    body: Vec<u8>,
    /// The RDB version of the trailer, kept as the server wrote it.
    version: [u8; 2],
    /// The module type id: 54 bits of name, 10 of encoding version.
    id: u64,
    /// Offset of the string opcode (after the type byte and the module id).
    opcode_at: usize,
    /// Offset of the string's length (or of its LZF header).
    len_at: usize,
    /// The string's bytes as stored (compressed when `lzf`).
    data: std::ops::Range<usize>,
    /// LZF: `0xC3`, compressed length, plain length, then the compressed bytes.
    lzf: bool,
    /// Offset of the EOF opcode (the last byte of `body`).
    eof_at: usize,
}

impl Frame {
    fn parse(dump: &[u8]) -> Frame {
        let (body, trailer) = dump.split_at(dump.len() - 10);
        let version = [trailer[0], trailer[1]];
        let crc = u64::from_le_bytes(trailer[2..].try_into().unwrap());
        assert_eq!(
            crc64(&dump[..dump.len() - 8]),
            crc,
            "crc64 must match the server's DUMP trailer"
        );
        assert_eq!(body[0], RDB_TYPE_MODULE_2);
        let (id, _, opcode_at) = read_len(body, 1);
        assert_eq!(id, type_id("jwks-keys", 1), "the module type id");
        assert_eq!(body[opcode_at], OPCODE_STRING);
        let len_at = opcode_at + 1;
        let (len, encoded, mut at) = read_len(body, len_at);
        let lzf = encoded;
        let data_len = if encoded {
            assert_eq!(len, 3, "an LZF string (a key set is never int-encoded)");
            let (clen, _, next) = read_len(body, at);
            let (_plain, _, next) = read_len(body, next);
            at = next;
            clen
        } else {
            len
        };
        let data = at..at + data_len as usize;
        assert_eq!(body[data.end], OPCODE_EOF);
        assert_eq!(data.end + 1, body.len(), "one string, then EOF");
        Frame {
            body: body.to_vec(),
            version,
            id,
            opcode_at,
            len_at,
            data: data.clone(),
            lzf,
            eof_at: data.end,
        }
    }

    /// A payload with this body and a valid trailer.
    fn seal(&self, body: &[u8]) -> Vec<u8> {
        let mut out = body.to_vec();
        out.extend(self.version);
        let crc = crc64(&out);
        out.extend(crc.to_le_bytes());
        out
    }

    /// The body with `range` replaced by `with`.
    fn splice(&self, range: std::ops::Range<usize>, with: &[u8]) -> Vec<u8> {
        let mut b = self.body.clone();
        b.splice(range, with.iter().copied());
        b
    }

    /// The body with the module id replaced.
    fn with_id(&self, id: u64) -> Vec<u8> {
        let mut id_bytes = vec![0x81];
        id_bytes.extend(id.to_be_bytes());
        self.splice(1..self.opcode_at, &id_bytes)
    }

    /// The body with the stored string replaced by `text`, stored uncompressed.
    fn with_string(&self, text: &[u8]) -> Vec<u8> {
        let mut s = rdb_len(text.len() as u64);
        s.extend(text);
        self.splice(self.len_at..self.data.end, &s)
    }

    /// The stored JSON (only for an uncompressed dump).
    fn json(&self) -> &[u8] {
        assert!(!self.lzf);
        &self.body[self.data.clone()]
    }
}

struct Case {
    group: &'static str,
    what: String,
    payload: Vec<u8>,
}

/// Every mutant of one real dump. About 300 per dump.
fn mutants(f: &Frame, rng: &mut Rng) -> Vec<Case> {
    let mut out = Vec::new();
    let mut add = |group: &'static str, what: String, body: Vec<u8>| {
        out.push(Case {
            group,
            what,
            payload: f.seal(&body),
        })
    };
    let n = f.body.len();

    // Cut: at every offset of the framing (type byte, id, opcode, string header), around
    // the string's start and end, before the EOF marker, and at random offsets.
    let mut cuts: Vec<usize> = (1..f.data.start + 2).collect();
    let mid = (f.data.start + f.data.end) / 2;
    cuts.extend([mid, f.data.end - 1, f.eof_at, n - 1]);
    cuts.extend((0..8).map(|_| 1 + rng.index(n - 1)));
    cuts.sort_unstable();
    cuts.dedup();
    for at in cuts {
        add("cut", format!("cut at {at} of {n}"), f.body[..at].to_vec());
    }

    // Flip: one byte anywhere after the type byte, then a few at once.
    for i in 0..120 {
        let mut b = f.body.clone();
        let at = if i < 16 { 1 + i } else { 1 + rng.index(n - 1) };
        let x = 1 + rng.index(255) as u8;
        b[at] ^= x;
        add("flip", format!("byte {at} ^= {x:#04x}"), b);
    }
    for _ in 0..30 {
        let mut b = f.body.clone();
        let count = 2 + rng.index(7);
        let mut at = Vec::new();
        for _ in 0..count {
            let i = 1 + rng.index(n - 1);
            b[i] = rng.byte();
            at.push(i);
        }
        add("flip", format!("bytes {at:?} randomised"), b);
    }

    // Stretch: random bytes inserted, at the framing's offsets and at random ones.
    let mut places: Vec<usize> = (1..=f.data.start).collect();
    places.extend([f.eof_at, n]);
    places.extend((0..24).map(|_| 1 + rng.index(n)));
    for at in places {
        let len = 1 + rng.index(16);
        let extra: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
        add(
            "stretch",
            format!("{len} bytes inserted at {at}"),
            f.splice(at..at, &extra),
        );
    }

    // The string's length (and LZF's two lengths) replaced, huge values included.
    let stored_len = (f.data.end - f.data.start) as u64;
    let huge = [
        0,
        1,
        stored_len - 1,
        stored_len + 1,
        1 << 31,
        u64::from(u32::MAX),
        1 << 32,
        1 << 63,
        u64::MAX,
    ];
    let header = f.len_at..f.data.start;
    for v in huge {
        if f.lzf {
            let (_, _, after_tag) = read_len(&f.body, f.len_at);
            let (clen, _, after_clen) = read_len(&f.body, after_tag);
            let (plain, _, _) = read_len(&f.body, after_clen);
            let mut h = vec![0xc3];
            h.extend(rdb_len(v));
            h.extend(rdb_len(plain));
            add("length", format!("LZF compressed length {v}"), {
                f.splice(header.clone(), &h)
            });
            let mut h = vec![0xc3];
            h.extend(rdb_len(clen));
            h.extend(rdb_len(v));
            add("length", format!("LZF plain length {v}"), {
                f.splice(header.clone(), &h)
            });
        } else {
            add(
                "length",
                format!("string length {v}"),
                f.splice(header.clone(), &rdb_len(v)),
            );
        }
    }
    // Length types Redis refuses (0x82..0xBF) and encodings a key set never uses.
    let headers: [&[u8]; 5] = [
        &[0x82],
        &[0xbf],
        &[0xc0, 0x7f],
        &[0xc1, 0xff, 0x7f],
        &[0xc4],
    ];
    for h in headers {
        add(
            "length",
            format!("string header {h:02x?}"),
            f.splice(header.clone(), h),
        );
    }

    // The module opcode before the string, and the EOF marker after it.
    for op in [0u8, 1, 2, 3, 4, 6, 0x3f, 0x40, 0x80, 0xc3] {
        let mut b = f.body.clone();
        b[f.opcode_at] = op;
        add("opcode", format!("string opcode {op:#04x}"), b);
    }
    for op in [1u8, 2, 3, 4, 5, 6, 0x80] {
        let mut b = f.body.clone();
        b[f.eof_at] = op;
        add("eof", format!("EOF opcode {op:#04x}"), b);
    }
    let mut twice = f.body[..f.eof_at].to_vec();
    twice.extend_from_slice(&f.body[f.opcode_at..]);
    add("eof", "the string twice".into(), twice);
    let mut tail = f.body.clone();
    tail.extend([0xde, 0xad]);
    add("eof", "bytes after EOF".into(), tail);

    // The encoding version (the id's low 10 bits), and other module type ids.
    for ver in [0u64, 2, 3, 1023] {
        add(
            "encver",
            format!("encoding version {ver}"),
            f.with_id((f.id & !1023) | ver),
        );
    }
    for i in 0..4 {
        let id = if i == 0 { f.id ^ (1 << 20) } else { rng.next() };
        add("type_id", format!("module type id {id:#x}"), f.with_id(id));
    }
    add(
        "type_id",
        "module id 0".into(),
        f.splice(1..f.opcode_at, &[0]),
    );

    // Well-framed, but the stored JSON is broken or says something it must not.
    if !f.lzf {
        let json = f.json().to_vec();
        let text = String::from_utf8(json.clone()).unwrap();
        for i in 0..16 {
            let mut j = json.clone();
            let at = rng.index(j.len());
            j[at] = if i % 2 == 0 { rng.byte() } else { b'"' };
            add("json", format!("JSON byte {at} changed"), f.with_string(&j));
        }
        for at in [0, 1, json.len() / 2, json.len() - 1] {
            add(
                "json",
                format!("JSON cut at {at}"),
                f.with_string(&json[..at]),
            );
        }
        let replaced = [
            ("\"v\":1", "\"v\":3"),
            ("\"v\":2", "\"v\":1"),
            ("\"state\":\"next\"", "\"state\":\"current\""),
            ("\"state\":\"previous\"", "\"state\":\"bogus\""),
            ("\"kty\":\"EC\"", "\"kty\":\"oct\",\"k\":\"AAAA\""),
            ("\"kty\":\"EC\"", "\"kty\":\"EC\",\"d\":\"AAAA\""),
            ("\"crv\":\"P-256\"", "\"crv\":\"P-384\""),
            ("\"keys\":[", "\"keys\":[1,"),
        ];
        for (from, to) in replaced {
            if text.contains(from) {
                let j = text.replacen(from, to, 1);
                add(
                    "json",
                    format!("{from} -> {to}"),
                    f.with_string(j.as_bytes()),
                );
            }
        }
        // A number replaced: out of range, negative, not an integer.
        let numbers = [
            ("generation", "18446744073709551615"),
            ("generation", "18446744073709551616"),
            ("generation", "-1"),
            ("added_ms", "1e400"),
            ("added_ms", "-9223372036854775808"),
        ];
        for (field, value) in numbers {
            let name = format!("\"{field}\":");
            let Some(at) = text.find(&name).map(|i| i + name.len()) else {
                continue;
            };
            let end = at
                + text[at..]
                    .find(|c: char| !(c.is_ascii_digit() || c == '-'))
                    .unwrap_or(0);
            let j = format!("{}{value}{}", &text[..at], &text[end..]);
            add(
                "json",
                format!("{field} = {value}"),
                f.with_string(j.as_bytes()),
            );
        }
        add(
            "json",
            "not UTF-8".into(),
            f.with_string(&[json.as_slice(), &b"\xff\xfe"[..]].concat()),
        );
        add("json", "empty string".into(), f.with_string(b""));
        add("json", "a number".into(), f.with_string(b"12345"));
    }
    out
}

// ------------------------------------------------------------------ the key sets

/// The shapes dumped: (name, key). Created on `con`.
fn make_key_sets(con: &mut Connection) -> Vec<(&'static str, &'static str)> {
    rotate(con, "jwks:{one}", &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();

    let k = "jwks:{several}";
    rotate(con, k, &["ADD", &rsa("r1", 1), "PROMOTE", "r1"]).unwrap();
    rotate(con, k, &["ADD", &ec("e2", 2)]).unwrap();
    rotate(con, k, &["PROMOTE", "e2"]).unwrap();
    rotate(con, k, &["ADD", &ec("e3", 3)]).unwrap();

    let k = "jwks:{policy}";
    rotate(con, k, &["ADD", &ec("p1", 4), "PROMOTE", "p1"]).unwrap();
    let _: Value = cmd(
        "JWKS.POLICY",
        &[k, "PROMOTE-AFTER", "3600000", "RETIRE-AFTER", "7200000"],
    )
    .query(con)
    .unwrap();
    rotate(con, k, &["ADD", &ec("p2", 5)]).unwrap();

    vec![
        ("one_key", "jwks:{one}"),
        ("several_keys", "jwks:{several}"),
        ("policy", "jwks:{policy}"),
    ]
}

/// Real dumps of every shape, with `rdbcompression` yes (LZF) and no (raw strings).
fn real_dumps() -> Vec<(String, Vec<u8>)> {
    let server = Server::start();
    let mut con = server.conn();
    let shapes = make_key_sets(&mut con);
    let mut out = Vec::new();
    for compression in ["yes", "no"] {
        let _: () = cmd("CONFIG", &["SET", "rdbcompression", compression])
            .query(&mut con)
            .unwrap();
        for (shape, key) in &shapes {
            let dump: Vec<u8> = cmd("DUMP", &[key]).query(&mut con).unwrap();
            let tag = if compression == "yes" { "lzf" } else { "raw" };
            out.push((format!("{shape}_{tag}"), dump));
        }
    }
    if let Ok(dir) = std::env::var("JWKS_DUMP_SEEDS") {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, dump) in &out {
            std::fs::write(std::path::Path::new(&dir).join(name), dump).unwrap();
        }
    }
    out
}

// ------------------------------------------------------------------ RESTORE

/// The line of a server log that says why it died (the most telling marker first).
fn crash_reason(log: &str) -> String {
    const MARKERS: [&str; 5] = [
        "Guru Meditation",
        "ASSERTION FAILED",
        "panicked",
        "crashed by signal",
        "BUG REPORT",
    ];
    MARKERS
        .iter()
        .find_map(|m| log.lines().find(|l| l.contains(m)))
        .map(|l| l.split(" # ").last().unwrap_or(l))
        .unwrap_or("(no crash line in the log)")
        .chars()
        .take(240)
        .collect()
}

fn markers_of_a_crash(log: &str) -> bool {
    [
        "Guru Meditation",
        "ASSERTION FAILED",
        "crashed by signal",
        "BUG REPORT",
        "panicked",
    ]
    .iter()
    .any(|m| log.contains(m))
}

fn fresh_server(sanitize: &str) -> (Server, Connection) {
    // No memory test in the crash report: a crash is recorded, not diagnosed.
    let server = Server::with_args(&[
        "--sanitize-dump-payload",
        sanitize,
        "--crash-memcheck-enabled",
        "no",
    ]);
    let con = server.conn();
    (server, con)
}

#[derive(Default)]
struct Tally {
    sent: usize,
    ok: usize,
    refused: usize,
    crashed: Vec<String>,
    skipped: usize,
    /// The mutants that restored (listed for the `json` group).
    restored: Vec<String>,
}

/// A key restored with OK must be a working key set.
fn check_restored(con: &mut Connection, key: &str) -> Result<(), String> {
    let t: String = cmd("TYPE", &[key])
        .query(con)
        .map_err(|e| format!("TYPE: {e}"))?;
    if t != "jwks-keys" {
        return Err(format!("restored as type {t}"));
    }
    let _: Value = cmd("JWKS.INFO", &[key])
        .query(con)
        .map_err(|e| format!("JWKS.INFO: {e}"))?;
    let doc: Option<String> = cmd("JWKS.GET", &[key])
        .query(con)
        .map_err(|e| format!("JWKS.GET: {e}"))?;
    let doc = doc.ok_or("JWKS.GET: nil")?;
    let parsed: serde_json::Value =
        serde_json::from_str(&doc).map_err(|e| format!("JWKS.GET: not JSON: {e}"))?;
    if !parsed["keys"].is_array() {
        return Err(format!("JWKS.GET: no keys array: {doc}"));
    }
    Ok(())
}

/// Sends every case with `sanitize-dump-payload` set to `sanitize`; returns per group.
fn restore_all(sanitize: &str, cases: &[(String, Case)]) -> BTreeMap<&'static str, Tally> {
    // After this many crashes of one group on one dump, the rest of them is skipped (each
    // crash costs a new server): 1 unless JWKS_RESTORE_CRASHES says more, to list them all.
    let crashes_per_group: usize = std::env::var("JWKS_RESTORE_CRASHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let (mut server, mut con) = fresh_server(sanitize);
    let mut tally: BTreeMap<&'static str, Tally> = BTreeMap::new();
    let mut crashes: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (i, (base, case)) in cases.iter().enumerate() {
        let t = tally.entry(case.group).or_default();
        let crashed_here = crashes.entry((base.as_str(), case.group)).or_default();
        if *crashed_here >= crashes_per_group {
            t.skipped += 1;
            continue;
        }
        t.sent += 1;
        let key = format!("restored:{i}");
        let reply: redis::RedisResult<Value> = redis::cmd("RESTORE")
            .arg(&key)
            .arg(0)
            .arg(&case.payload)
            .query(&mut con);
        let alive = !matches!(&reply, Err(e) if e.is_io_error() || e.is_connection_dropped())
            && redis::cmd("PING").query::<String>(&mut con).is_ok();
        if !alive {
            // Give the crash report a moment to reach the log.
            let deadline = Instant::now() + Duration::from_secs(5);
            while server.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            t.crashed.push(format!(
                "{base}: {} -> {}",
                case.what,
                crash_reason(&server.log())
            ));
            *crashed_here += 1;
            (server, con) = fresh_server(sanitize);
            continue;
        }
        let exists: i64 = cmd("EXISTS", &[&key]).query(&mut con).unwrap();
        match reply {
            Ok(_) => {
                assert_eq!(exists, 1, "{base}: {}: RESTORE OK, no key", case.what);
                if let Err(e) = check_restored(&mut con, &key) {
                    panic!("{base}: {}: restored a broken key set: {e}", case.what);
                }
                t.ok += 1;
                t.restored.push(format!("{base}: {}", case.what));
                let _: i64 = cmd("DEL", &[&key]).query(&mut con).unwrap();
            }
            Err(e) => {
                assert_eq!(
                    exists, 0,
                    "{base}: {}: RESTORE failed ({e}) but left a key",
                    case.what
                );
                t.refused += 1;
            }
        }
    }
    // The server that survived still holds working key sets and takes new ones.
    let _: Value = rotate(&mut con, "after", &["ADD", &ec("z", 7), "PROMOTE", "z"]).unwrap();
    check_restored(&mut con, "after").unwrap();
    let log = server.log();
    assert!(!markers_of_a_crash(&log), "{log}");
    tally
}

#[test]
fn crafted_restore_payloads_never_crash_the_server() {
    let dumps = real_dumps();
    let mut rng = Rng(0x5eed_1e55_0ddb_a11d);
    let mut cases = Vec::new();
    for (name, dump) in &dumps {
        let frame = Frame::parse(dump);
        for case in mutants(&frame, &mut rng) {
            cases.push((name.clone(), case));
        }
        // The unmutated dump, sealed anew, restores: the framing and CRC are right.
        cases.push((
            name.clone(),
            Case {
                group: "intact",
                what: "resealed".into(),
                payload: frame.seal(&frame.body),
            },
        ));
        assert_eq!(&frame.seal(&frame.body), dump, "{name}: reseal");
    }
    let started = Instant::now();
    let mut report = String::new();
    let mut crashed = 0;
    for sanitize in ["yes", "no"] {
        let tally = restore_all(sanitize, &cases);
        report += &format!("sanitize-dump-payload {sanitize}:\n");
        for (group, t) in &tally {
            report += &format!(
                "  {group:<8} sent {:>4}  ok {:>4}  refused {:>4}  crashed {:>2}  skipped {:>4}\n",
                t.sent,
                t.ok,
                t.refused,
                t.crashed.len(),
                t.skipped
            );
            for c in &t.crashed {
                report += &format!("      crash: {c}\n");
            }
            if *group == "json" {
                for r in &t.restored {
                    report += &format!("      restored: {r}\n");
                }
            }
            crashed += t.crashed.len();
        }
        let intact = &tally["intact"];
        assert_eq!(intact.ok, dumps.len(), "unmutated dumps restore\n{report}");
    }
    let took = started.elapsed().as_secs_f64();
    assert_eq!(
        crashed,
        0,
        "payloads that crashed the server ({} cases x 2, {took:.1} s):\n{report}",
        cases.len()
    );
    eprintln!("{} cases x 2 in {took:.1} s\n{report}", cases.len());
}

// ------------------------------------------------------------------ RDB at startup

/// Starts a server with the module on `rdb`; returns (exit status, log), or None if it
/// loaded the file (it answered PING, or was still running after 30 s).
fn start_on_rdb(rdb: &[u8]) -> (Option<std::process::ExitStatus>, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dump.rdb"), rdb).unwrap();
    let port = free_port().to_string();
    let module = module_path().display().to_string();
    let dir_arg = dir.path().display().to_string();
    let mut child = Command::new(server_bin())
        .args([
            "--port",
            port.as_str(),
            "--bind",
            "127.0.0.1",
            "--dir",
            dir_arg.as_str(),
            "--dbfilename",
            "dump.rdb",
            "--logfile",
            "server.log",
            "--save",
            "",
            "--crash-memcheck-enabled",
            "no",
            "--loadmodule",
            module.as_str(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = format!("redis://127.0.0.1:{port}/");
    let serving = || {
        redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    };
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if serving() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    (status, log)
}

/// An RDB file whose key set value is corrupt (its CRC fixed, so Redis's own check passes)
/// must fail the load: the server exits, with a log line naming the problem, never a crash
/// report or an abort in module code. The exit status is not asserted: when a module refuses
/// a value, Redis 7.0 runs redis-check-rdb in the server process, which skips module values,
/// finds the file sound and exits 0.
#[test]
fn corrupt_key_set_in_an_rdb_file_fails_the_load_cleanly() {
    let server = Server::start();
    let mut con = server.conn();
    let _: () = cmd("CONFIG", &["SET", "rdbcompression", "no"])
        .query(&mut con)
        .unwrap();
    make_key_sets(&mut con);
    let dump: Vec<u8> = cmd("DUMP", &["jwks:{several}"]).query(&mut con).unwrap();
    let _: () = cmd::<&str>("SAVE", &[]).query(&mut con).unwrap();
    let rdb = std::fs::read(server.dir.join("dump.rdb")).unwrap();
    drop(server);

    // The file's checksum is the same CRC-64 over everything before it.
    let (content, sum) = rdb.split_at(rdb.len() - 8);
    assert_eq!(crc64(content), u64::from_le_bytes(sum.try_into().unwrap()));
    // The RDB holds the value exactly as DUMP has it, after the type byte and the name.
    let f = Frame::parse(&dump);
    let value = &f.body[1..];
    let at = content
        .windows(value.len())
        .position(|w| w == value)
        .expect("the key set's value in the RDB");
    let with = |body: Vec<u8>| -> Vec<u8> {
        let mut out = content[..at].to_vec();
        out.extend_from_slice(&body[1..]);
        out.extend_from_slice(&content[at + value.len()..]);
        let crc = crc64(&out);
        out.extend(crc.to_le_bytes());
        out
    };
    // The intact file loads (the splicing above is right).
    let (status, log) = start_on_rdb(&with(f.body.clone()));
    assert!(status.is_none(), "the intact RDB did not load: {log}");

    let json = f.json();
    let variants = [
        ("JSON broken", f.with_string(&json[..json.len() - 1])),
        ("wrong encoding version", f.with_id((f.id & !1023) | 2)),
        ("wrong module opcode", {
            let mut b = f.body.clone();
            b[f.opcode_at] = 6;
            b
        }),
        (
            "string length 2^31",
            f.splice(f.len_at..f.data.start, &rdb_len(1 << 31)),
        ),
        (
            "string length 2^63",
            f.splice(f.len_at..f.data.start, &rdb_len(1 << 63)),
        ),
        ("EOF marker missing", f.body[..f.eof_at].to_vec()),
    ];
    let mut failures = Vec::new();
    for (what, body) in variants {
        let (status, log) = start_on_rdb(&with(body));
        let reason = crash_reason(&log);
        let named = log.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("jwks") && (l.contains("rdb") || l.contains("load"))
        });
        match status {
            None => failures.push(format!("{what}: the server loaded the file and ran")),
            Some(s) if s.code().is_none() => {
                failures.push(format!("{what}: killed by a signal ({s}): {reason}"))
            }
            Some(_) if markers_of_a_crash(&log) => {
                failures.push(format!("{what}: a crash report: {reason}"))
            }
            // The module names the key set and the reason (but for the EOF marker, which is
            // Redis's own framing around a value the module read whole).
            Some(_)
                if what != "EOF marker missing"
                    && !log.contains("refused to load the key set 'jwks:{several}'") =>
            {
                failures.push(format!("{what}: no module line names the key set:\n{log}"))
            }
            Some(_) if !named => failures.push(format!(
                "{what}: no log line names the key set type:\n{}",
                log.lines()
                    .filter(|l| l.contains(" # "))
                    .collect::<Vec<_>>()
                    .join("\n")
            )),
            Some(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

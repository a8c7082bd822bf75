//! The one integration-test harness: a real `redis-server` (or `valkey-server`, via
//! `JWKS_SERVER_BIN`) with the built module, on a free loopback port, stopped on drop.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::{Connection, Value};

pub use redis_jwks_core::testkeys;

pub fn server_bin() -> String {
    std::env::var("JWKS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into())
}

/// Which server the tests run on, from `<server> --version` (asked once per test process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerVersion {
    pub valkey: bool,
    pub major: u32,
    pub minor: u32,
}

impl ServerVersion {
    /// `(major, minor)` is at least `(major, minor)` given, on the same server family.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

pub fn server_version() -> ServerVersion {
    static VERSION: std::sync::OnceLock<ServerVersion> = std::sync::OnceLock::new();
    *VERSION.get_or_init(|| {
        let out = Command::new(server_bin())
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("{} --version: {e}", server_bin()));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // "Redis server v=8.0.2 sha=..." / "Valkey server v=9.1.2 sha=..."
        let v = text
            .split_whitespace()
            .find_map(|w| w.strip_prefix("v="))
            .unwrap_or_else(|| panic!("no version in {text:?}"));
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        ServerVersion {
            valkey: text.starts_with("Valkey"),
            major: parts.next().unwrap_or(0),
            minor: parts.next().unwrap_or(0),
        }
    })
}

/// The module the tests load: `JWKS_MODULE`, else the cdylib cargo built next to the tests.
pub fn module_path() -> PathBuf {
    if let Ok(p) = std::env::var("JWKS_MODULE") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory");
    let path = profile_dir.join("libredis_jwks.so");
    assert!(path.exists(), "module not built at {}", path.display());
    path
}

/// A loopback port free now and not handed out before in this test process (tests run as
/// threads: two servers told the same port would make one test talk to the other's server).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub struct Server {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
    _tmp: tempfile::TempDir,
}

impl Server {
    pub fn start() -> Server {
        Server::with_args(&[])
    }

    /// Extra `redis-server` arguments, e.g. `["--appendonly", "yes"]`. Module load-time
    /// arguments go through `--loadmodule` via [`Server::with_module_args`].
    pub fn with_args(args: &[&str]) -> Server {
        Server::with_module_args(&[], args)
    }

    /// A server without the module, for what must also work where it is missing.
    pub fn plain() -> Server {
        Server::plain_with(&[])
    }

    /// A server without the module, with extra `redis-server` arguments.
    pub fn plain_with(args: &[&str]) -> Server {
        let mut server = Server::with_module_args(&[], args);
        server.kill();
        let at = server
            .args
            .iter()
            .position(|a| a == "--loadmodule")
            .expect("loadmodule");
        server.args.drain(at..at + 2);
        server.spawn();
        server
    }

    pub fn with_module_args(module_args: &[&str], args: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut all: Vec<String> = vec![
            "--port".into(),
            free_port().to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            dir.display().to_string(),
            "--logfile".into(),
            "server.log".into(),
            "--save".into(),
            "".into(),
            "--enable-debug-command".into(),
            "yes".into(),
            "--loadmodule".into(),
            module_path().display().to_string(),
        ];
        all.extend(module_args.iter().map(|s| s.to_string()));
        all.extend(args.iter().map(|s| s.to_string()));
        let port = all[1].parse().expect("port");
        let mut server = Server {
            port,
            dir,
            child: None,
            args: all,
            _tmp: tmp,
        };
        // Another process may take the port between free_port and the bind: pick another.
        for _ in 0..5 {
            if server.try_spawn() {
                return server;
            }
            server.kill();
            let _ = std::fs::remove_file(server.dir.join("server.log"));
            server.port = free_port();
            server.args[1] = server.port.to_string();
        }
        panic!("no free port for redis-server after 5 tries");
    }

    fn spawn(&mut self) {
        assert!(
            self.try_spawn(),
            "port {} is taken by another process",
            self.port
        );
    }

    /// Starts the server; false if the port turned out to be taken.
    fn try_spawn(&mut self) -> bool {
        let child = Command::new(server_bin())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        self.wait_ready()
    }

    /// Waits until our server answers; false if another process answers on the port.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = self.try_conn() {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    let info: String = redis::cmd("INFO")
                        .arg("server")
                        .query(&mut c)
                        .unwrap_or_default();
                    let ours = self
                        .child
                        .as_ref()
                        .map(|c| format!("process_id:{}\r", c.id()));
                    return ours.is_some_and(|line| info.contains(&line));
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                if self.log().contains("Address already in use") {
                    return false;
                }
                panic!("server exited ({status}); log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "server not ready; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_conn(&self) -> redis::RedisResult<Connection> {
        let client = redis::Client::open(self.url())?;
        client.get_connection_with_timeout(Duration::from_secs(5))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn conn(&self) -> Connection {
        self.try_conn().expect("connect")
    }

    /// Makes this server a replica of `primary` and waits until the link is up.
    pub fn replicate(&self, primary: &Server) {
        let mut r = self.conn();
        let _: () = cmd("REPLICAOF", &["127.0.0.1", &primary.port.to_string()])
            .query(&mut r)
            .unwrap();
        wait_for("replica link up", || {
            let info: String = cmd("INFO", &["replication"]).query(&mut r).unwrap();
            info.contains("master_link_status:up")
        });
    }

    pub fn conn_resp3(&self) -> Connection {
        redis::Client::open(format!("{}?protocol=resp3", self.url()))
            .and_then(|c| c.get_connection())
            .expect("connect with RESP3")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// The log once it holds at least `count` lines containing `needle` (the module logs
    /// from a background thread, so lines land a moment after the reply).
    pub fn wait_log(&self, needle: &str, count: usize) -> String {
        let mut log = String::new();
        wait_for(&format!("{count} log lines with {needle:?}"), || {
            log = self.log();
            log.matches(needle).count() >= count
        });
        log
    }

    /// Stops the process the hard way (no save on exit), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Clean shutdown (saving per config), then start again on the same port and dir.
    pub fn restart(&mut self) {
        let _ = redis::cmd("SHUTDOWN").query::<Value>(&mut self.conn());
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        self.spawn();
    }

    /// Start again after [`Server::kill`].
    pub fn start_again(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Server {
    /// A clean SHUTDOWN first (so a server under valgrind reports its leaks), then a kill.
    fn drop(&mut self) {
        // A failing test shows what the server said (a crash report, a module warning).
        if std::thread::panicking() {
            let log = self.log();
            // A crash report's head (the signal, the stack trace, the command) comes first:
            // the tail alone is the config dump and the memory test.
            if let Some(at) = log.find("BUG REPORT START") {
                eprintln!("--- server on port {} (its crash report) ---", self.port);
                for line in log[at..].lines().take(80) {
                    eprintln!("{line}");
                }
            }
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "--- server on port {} (last lines of its log) ---",
                self.port
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                eprintln!("--- the server exited: {status} ---");
            }
        }
        // Only our own live server gets the SHUTDOWN (never whoever has the port now).
        if self.is_running() {
            if let Ok(mut c) = self.try_conn() {
                let _ = redis::cmd("SHUTDOWN").arg("NOSAVE").query::<Value>(&mut c);
            }
        }
        if let Some(child) = self.child.as_mut() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }
}

/// `redis::cmd(name).arg(a)...` for a list of string-ish args.
pub fn cmd<A: redis::ToRedisArgs>(name: &str, args: &[A]) -> redis::Cmd {
    let mut c = redis::cmd(name);
    for a in args {
        c.arg(a);
    }
    c
}

pub fn rotate(con: &mut Connection, key: &str, args: &[&str]) -> redis::RedisResult<Value> {
    let mut c = redis::cmd("JWKS.ROTATE");
    c.arg(key);
    for a in args {
        c.arg(*a);
    }
    c.query(con)
}

/// A flat RESP2 array of pairs (or a RESP3 map) as (name, value) pairs.
pub fn pairs(v: &Value) -> Vec<(String, Value)> {
    match v {
        Value::Map(m) => m.iter().map(|(k, v)| (as_string(k), v.clone())).collect(),
        Value::Array(items) => items
            .chunks(2)
            .map(|c| (as_string(&c[0]), c[1].clone()))
            .collect(),
        other => panic!("not a map: {other:?}"),
    }
}

pub fn field(v: &Value, name: &str) -> Value {
    pairs(v)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no field {name} in {v:?}"))
}

pub fn as_string(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::VerbatimString { text, .. } => text.clone(),
        Value::Int(n) => n.to_string(),
        Value::Nil => "(nil)".into(),
        other => panic!("not a string: {other:?}"),
    }
}

pub fn as_int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        other => as_string(other).parse().expect("integer"),
    }
}

pub fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) | Value::Set(items) => items.iter().map(as_string).collect(),
        other => panic!("not an array: {other:?}"),
    }
}

pub fn digest(con: &mut Connection) -> String {
    redis::cmd("DEBUG")
        .arg("DIGEST")
        .query(con)
        .expect("DEBUG DIGEST")
}

/// Audit entries as maps of field -> value, oldest first.
pub fn audit(con: &mut Connection, key: &str) -> Vec<std::collections::HashMap<String, String>> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query(con)
        .expect("XRANGE");
    entries
        .into_iter()
        .map(|(_, fields)| fields.into_iter().collect())
        .collect()
}

/// The server's `used_memory` (INFO memory), in bytes.
pub fn used_memory(con: &mut Connection) -> i64 {
    let info: String = cmd("INFO", &["memory"]).query(con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Acks `generation` of `key` from every ID in `ids`, pipelined (TTL: the module's default).
pub fn ack_many(
    con: &mut Connection,
    key: &str,
    generation: i64,
    ids: impl IntoIterator<Item = String>,
) {
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.cmd("JWKS.ACK")
            .arg(key)
            .arg("GENERATION")
            .arg(generation)
            .arg("ID")
            .arg(id)
            .ignore();
    }
    let _: () = pipe.query(con).unwrap();
}

pub fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Key generation runs unoptimized in test builds (the EC arithmetic is generic, so it is
/// compiled into the test crate): remember what was made.
fn memo(tag: &str, kid: &str, n: u64, make: impl FnOnce() -> String) -> String {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, String>>> =
        std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = format!("{tag}/{kid}/{n}");
    if let Some(v) = cache.lock().unwrap().get(&key) {
        return v.clone();
    }
    let v = make();
    cache.lock().unwrap().insert(key, v.clone());
    v
}

pub fn ec(kid: &str, k: u64) -> String {
    memo("ec", kid, k, || testkeys::ec(kid, k).to_string())
}

pub fn rsa(kid: &str, seed: u64) -> String {
    memo("rsa", kid, seed, || {
        testkeys::rsa(kid, seed, 2048).to_string()
    })
}

/// Another program a test runs (an exporter, Prometheus...), killed when dropped, so every
/// process a test starts stops also when the test fails.
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    pub fn spawn(program: &str, args: &[String], log: &Path) -> Proc {
        let out = std::fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(program)
            .args(args)
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        Proc {
            name: program.to_owned(),
            child,
        }
    }

    pub fn assert_running(&mut self, log: &Path) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}):\n{}",
                self.name,
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The name of a derived key (`cache`, `audit`, `metrics`) of key set `key`, as the module
/// derives it: `K:<what>` if K has a hash tag, else `{K}:<what>`.
pub fn derived(key: &str, what: &str) -> String {
    let tagged = key
        .find('{')
        .and_then(|open| key[open + 1..].find('}').map(|close| close > 0))
        .unwrap_or(false);
    if tagged {
        format!("{key}:{what}")
    } else {
        format!("{{{key}}}:{what}")
    }
}

/// Valkey and Redis 7.2+ run the module's clean-up right after the command that caused it
/// (post-notification jobs); Redis 7.0 runs it in the next event-loop iteration.
pub fn cleanup_is_immediate() -> bool {
    let v = server_version();
    v.valkey || v.at_least(7, 2)
}

/// The target directory cargo builds into: `CARGO_TARGET_DIR` (relative to the repository,
/// as cargo reads it when run from there), else `target/`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => repo_path("").join(dir),
        _ => repo_path("target"),
    }
}

/// The `redis-cli` the shims run: `JWKS_REDIS_CLI`, else Debian's.
pub fn redis_cli() -> String {
    std::env::var("JWKS_REDIS_CLI").unwrap_or_else(|_| "/usr/bin/redis-cli".into())
}

/// A PATH whose `redis-cli` is the real one talking to `server`, so a documented command
/// (`redis-cli ACL SETUSER ...`) runs verbatim against the test's server.
pub fn shim_path(server: &Server) -> String {
    let dir = server.dir.join("shim");
    std::fs::create_dir_all(&dir).expect("shim dir");
    let real = redis_cli();
    let shim = dir.join("redis-cli");
    std::fs::write(
        &shim,
        format!("#!/bin/sh\nexec {real} -p {} \"$@\"\n", server.port),
    )
    .expect("shim");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A raw RESP2/RESP3 connection: for what the client library does not expose (sharded
/// subscriptions, tracking pushes). Replies come back as `Resp`.
pub struct RawConn {
    stream: std::io::BufReader<std::net::TcpStream>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Str(String),
    Int(i64),
    Nil,
    Err(String),
    List(Vec<Resp>),
    /// A RESP3 push (`>`), as its elements.
    Push(Vec<Resp>),
}

impl Resp {
    pub fn text(&self) -> String {
        match self {
            Resp::Str(s) | Resp::Err(s) => s.clone(),
            Resp::Int(n) => n.to_string(),
            other => format!("{other:?}"),
        }
    }
}

impl RawConn {
    pub fn connect(port: u16) -> RawConn {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        RawConn {
            stream: std::io::BufReader::new(stream),
        }
    }

    pub fn send(&mut self, args: &[&str]) {
        use std::io::Write;
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.stream
            .get_mut()
            .write_all(out.as_bytes())
            .expect("write");
    }

    pub fn call(&mut self, args: &[&str]) -> Resp {
        self.send(args);
        self.read()
    }

    /// The next reply or push; panics after the read timeout.
    pub fn read(&mut self) -> Resp {
        self.try_read().expect("a reply in time")
    }

    pub fn set_timeout(&mut self, t: Duration) {
        self.stream
            .get_ref()
            .set_read_timeout(Some(t))
            .expect("timeout");
    }

    pub fn try_read(&mut self) -> Option<Resp> {
        use std::io::{BufRead, Read};
        let mut line = String::new();
        if self.stream.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches("\r\n");
        let (kind, rest) = line.split_at(1);
        let n = || rest.parse::<i64>().unwrap_or(-1);
        Some(match kind {
            "+" => Resp::Str(rest.to_owned()),
            "-" => Resp::Err(rest.to_owned()),
            ":" => Resp::Int(n()),
            "_" => Resp::Nil,
            "#" => Resp::Int(i64::from(rest == "t")),
            "," => Resp::Str(rest.to_owned()),
            "$" | "=" if n() < 0 => Resp::Nil,
            "$" | "=" => {
                let mut buf = vec![0u8; n() as usize + 2];
                self.stream.read_exact(&mut buf).ok()?;
                buf.truncate(buf.len() - 2);
                Resp::Str(String::from_utf8_lossy(&buf).into_owned())
            }
            "*" | "~" if n() < 0 => Resp::Nil,
            "*" | "~" | ">" => {
                let items = (0..n()).map(|_| self.read()).collect();
                if kind == ">" {
                    Resp::Push(items)
                } else {
                    Resp::List(items)
                }
            }
            "%" => Resp::List((0..2 * n()).map(|_| self.read()).collect()),
            other => panic!("unexpected RESP type {other:?} in {line:?}"),
        })
    }
}

/// Redis's CRC-64 (crc64.c: the Jones polynomial, reflected in and out, initial value 0):
/// the checksum of a DUMP payload and of an RDB file.
pub fn crc64(data: &[u8]) -> u64 {
    const POLY_REFLECTED: u64 = 0x95ac_9329_ac4b_c9b5;
    let mut crc = 0u64;
    for &b in data {
        crc ^= u64::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY_REFLECTED
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// An RDB length as `rdbSaveLen` writes it.
pub fn rdb_len(v: u64) -> Vec<u8> {
    if v < 1 << 6 {
        vec![v as u8]
    } else if v < 1 << 14 {
        vec![0x40 | (v >> 8) as u8, v as u8]
    } else if v <= u64::from(u32::MAX) {
        let mut out = vec![0x80];
        out.extend((v as u32).to_be_bytes());
        out
    } else {
        let mut out = vec![0x81];
        out.extend(v.to_be_bytes());
        out
    }
}

/// xorshift64*: a deterministic generator for randomized tests, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn index(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }
}

//! What the monitoring tests share: docs/monitoring.md's fenced blocks, `INFO jwks`, acks
//! and unknown-kid lookups, HTTP GET, waiting for a condition.

use std::collections::HashMap;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::*;

/// The info string of the blocks the end-to-end test runs; the others are `text`.
pub const RUN: &str = "sh {test=monitoring}";

/// One fenced block of docs/monitoring.md: the `## ` section it is in, and its code with
/// the fence's indentation removed.
pub struct Block {
    pub section: String,
    pub info: String,
    pub code: String,
}

pub fn doc_blocks() -> Vec<Block> {
    let doc = std::fs::read_to_string(repo_path("docs/monitoring.md")).unwrap();
    let mut out = Vec::new();
    let mut section = String::new();
    let mut open: Option<(usize, String, String)> = None;
    for line in doc.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if let Some((fence_indent, info, mut code)) = open.take() {
            if trimmed == "```" {
                out.push(Block {
                    section: section.clone(),
                    info,
                    code,
                });
            } else {
                code.push_str(line.get(fence_indent..).unwrap_or(line.trim_start()));
                code.push('\n');
                open = Some((fence_indent, info, code));
            }
        } else if let Some(info) = trimmed.strip_prefix("```") {
            open = Some((indent, info.trim().to_owned(), String::new()));
        } else if let Some(title) = line.strip_prefix("## ") {
            section = title.trim().to_owned();
        }
    }
    assert!(open.is_none(), "unclosed fence in docs/monitoring.md");
    out
}

/// `INFO jwks` as name -> value, without Redis's `jwks_` prefix; the value is the last
/// field (key-set names contain ':').
pub fn info_jwks(con: &mut redis::Connection) -> HashMap<String, i64> {
    let info: String = cmd("INFO", &["jwks"]).query(con).unwrap();
    info.lines()
        .filter_map(|l| l.strip_prefix("jwks_"))
        .filter_map(|l| l.rsplit_once(':'))
        .map(|(k, v)| (k.to_owned(), v.parse().expect("integer")))
        .collect()
}

/// The key set's generation, from JWKS.INFO.
pub fn generation(con: &mut redis::Connection, key: &str) -> i64 {
    let info: redis::Value = cmd("JWKS.INFO", &[key]).query(con).unwrap();
    as_int(&field(&info, "generation"))
}

/// `JWKS.ACK key GENERATION g ID id TTL ttl`: the key set's generation.
pub fn ack(con: &mut redis::Connection, key: &str, generation: i64, id: &str, ttl_ms: u64) -> i64 {
    cmd(
        "JWKS.ACK",
        &[
            key,
            "GENERATION",
            &generation.to_string(),
            "ID",
            id,
            "TTL",
            &ttl_ms.to_string(),
        ],
    )
    .query(con)
    .unwrap()
}

/// `n` JWKS.KEY lookups of kids `key` does not publish, in one pipeline: every one a miss.
pub fn unknown_kids(con: &mut redis::Connection, key: &str, n: usize) {
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("JWKS.KEY").arg(key).arg(format!("forged-{i}"));
    }
    let replies: Vec<Option<String>> = pipe.query(con).unwrap();
    assert!(replies.iter().all(Option::is_none), "{replies:?}");
}

pub fn http_get(url: &str) -> Option<String> {
    ureq::get(url)
        .timeout(Duration::from_secs(5))
        .call()
        .ok()?
        .into_string()
        .ok()
}

pub fn wait_until<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A command's stdout and stderr, as text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

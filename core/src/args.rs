//! Command arguments to typed requests. Pure (bytes in, values out) so it can be fuzzed;
//! the key-set name itself is handled by `keys`.

use crate::error::{Error, Result, Shown};
use crate::fleet::{Ack, DEFAULT_TTL_MS, MAX_ID_BYTES, MAX_TTL_MS, MIN_TTL_MS};
use crate::jwk::{self, Jwk, Policy};
use crate::keyset::{Lifecycle, Op, MAX_KEYS};

pub const DEFAULT_REASON: &str = "key_rotation";
pub const MAX_REASON_BYTES: usize = 128;
/// Enough for a full REPLACE plus promotes; far below anything that could stall Redis.
pub const MAX_OPS: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub struct RotateRequest {
    pub if_gen: Option<u64>,
    pub reason: String,
    /// Override the lifecycle policy's guards (emergency revocation).
    pub force: bool,
    /// Validate and reply, write nothing.
    pub dry_run: bool,
    pub ops: Vec<Op>,
}

fn word(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).to_ascii_uppercase()
}

fn utf8<'a>(what: &'static str, arg: &'a [u8]) -> Result<&'a str> {
    std::str::from_utf8(arg).map_err(|_| Error::NotUtf8(what))
}

pub fn parse_reason(arg: &[u8]) -> Result<String> {
    let reason = utf8("reason", arg)?;
    if reason.is_empty() {
        return Err(Error::Reason("must not be empty"));
    }
    if reason.len() > MAX_REASON_BYTES {
        return Err(Error::Reason("longer than 128 bytes"));
    }
    if reason.chars().any(char::is_control) {
        return Err(Error::Reason("contains control characters"));
    }
    Ok(reason.to_owned())
}

fn parse_generation(arg: &[u8]) -> Result<u64> {
    let text = utf8("IFGEN", arg)?;
    // Digits only: no sign, no spaces, no hex, as Redis's own integer arguments.
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::Syntax(format!(
            "IFGEN needs a non-negative integer, got {}",
            Shown::new(text)
        )));
    }
    text.parse()
        .map_err(|_| Error::Syntax(format!("IFGEN {} is out of range", Shown::new(text))))
}

/// Takes the value after an option or operation keyword.
fn value<'a>(rest: &mut std::slice::Iter<'a, &'a [u8]>, keyword: &str) -> Result<&'a [u8]> {
    rest.next()
        .copied()
        .ok_or_else(|| Error::Syntax(format!("{keyword} needs a value")))
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Add,
    Promote,
    Retire,
    Replace,
}

/// `[IFGEN generation] [REASON reason] [FORCE] [DRYRUN] op [op ...]`, the arguments after
/// the key. The syntax and every count are checked first; only then is any JWK parsed and
/// validated (JSON, curve arithmetic), so an oversized command is refused cheaply.
pub fn parse_rotate(args: &[&[u8]], policy: &Policy) -> Result<RotateRequest> {
    if args.len() > 2 * MAX_OPS + 8 {
        return Err(Error::Syntax(format!("more than {MAX_OPS} operations")));
    }
    let mut req = RotateRequest {
        if_gen: None,
        reason: DEFAULT_REASON.to_owned(),
        force: false,
        dry_run: false,
        ops: Vec::new(),
    };
    let mut reason_seen = false;
    let mut raw: Vec<(Kind, &[u8])> = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let keyword = word(arg);
        // Options come before the first operation, so an op's value can never be
        // mistaken for an option.
        let options_allowed = raw.is_empty();
        let flag = |seen: bool, name: &str| -> Result<bool> {
            match seen {
                true => Err(Error::Syntax(format!("{name} given twice"))),
                false => Ok(true),
            }
        };
        match keyword.as_str() {
            "IFGEN" if options_allowed => {
                if req.if_gen.is_some() {
                    return Err(Error::Syntax("IFGEN given twice".into()));
                }
                req.if_gen = Some(parse_generation(value(&mut rest, "IFGEN")?)?);
            }
            "REASON" if options_allowed => {
                reason_seen = flag(reason_seen, "REASON")?;
                req.reason = parse_reason(value(&mut rest, "REASON")?)?;
            }
            "FORCE" if options_allowed => req.force = flag(req.force, "FORCE")?,
            "DRYRUN" if options_allowed => req.dry_run = flag(req.dry_run, "DRYRUN")?,
            "IFGEN" | "REASON" | "FORCE" | "DRYRUN" => {
                return Err(Error::Syntax(format!(
                    "{keyword} must come before the first operation"
                )))
            }
            "ADD" => raw.push((Kind::Add, value(&mut rest, "ADD")?)),
            "PROMOTE" => raw.push((Kind::Promote, value(&mut rest, "PROMOTE")?)),
            "RETIRE" => raw.push((Kind::Retire, value(&mut rest, "RETIRE")?)),
            "REPLACE" => raw.push((Kind::Replace, value(&mut rest, "REPLACE")?)),
            _ => {
                return Err(Error::Syntax(format!(
                    "unknown option or operation {} (IFGEN, REASON, FORCE, DRYRUN, ADD, PROMOTE, RETIRE, REPLACE)",
                    Shown::bytes(arg)
                )))
            }
        }
    }
    if raw.is_empty() {
        return Err(Error::Syntax(
            "JWKS.ROTATE needs at least one operation (ADD, PROMOTE, RETIRE, REPLACE)".into(),
        ));
    }
    if raw.len() > MAX_OPS {
        return Err(Error::Syntax(format!("more than {MAX_OPS} operations")));
    }
    if raw.iter().filter(|(k, _)| *k == Kind::Add).count() > MAX_KEYS {
        return Err(Error::TooManyKeys(MAX_KEYS));
    }
    for (kind, value) in raw {
        req.ops.push(match kind {
            Kind::Add => Op::Add(Jwk::parse(utf8("JWK", value)?, policy)?),
            Kind::Promote => Op::Promote(jwk::parse_kid(value)?),
            Kind::Retire => Op::Retire(jwk::parse_kid(value)?),
            Kind::Replace => {
                Op::Replace(jwk::parse_document(utf8("JWKS document", value)?, policy)?)
            }
        });
    }
    Ok(req)
}

/// `[REASON reason]`, the arguments of JWKS.INVALIDATE after the key.
pub fn parse_invalidate(args: &[&[u8]]) -> Result<String> {
    match args {
        [] => Ok(DEFAULT_INVALIDATE_REASON.to_owned()),
        [kw, reason] if word(kw) == "REASON" => parse_reason(reason),
        [kw] if word(kw) == "REASON" => Err(Error::Syntax("REASON needs a value".into())),
        [kw, ..] if word(kw) != "REASON" => Err(Error::Syntax(format!(
            "unknown option {} (REASON)",
            Shown::bytes(kw)
        ))),
        _ => Err(Error::Syntax(
            "JWKS.INVALIDATE takes at most one REASON".into(),
        )),
    }
}

pub const DEFAULT_INVALIDATE_REASON: &str = "manual";

/// A decimal integer from 0 to `max` (digits only: no sign, no spaces, no hex, as Redis's own
/// integer arguments), for option `what`; `unit` names it in the error.
pub fn number(what: &str, arg: &[u8], max: u64, unit: &str) -> Result<u64> {
    std::str::from_utf8(arg)
        .ok()
        .filter(|t| !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|n| *n <= max)
        .ok_or_else(|| {
            Error::Syntax(format!(
                "{what} needs {unit} from 0 to {max}, got {}",
                Shown::bytes(arg)
            ))
        })
}

/// The longest ETag an ack may carry (the module's are 24 bytes).
const MAX_ETAG_BYTES: usize = 128;

/// `JWKS.ACK K GENERATION g ID id [ETAG etag] [TTL ms]`, the arguments after the key.
pub fn parse_ack(args: &[&[u8]]) -> Result<Ack> {
    let (mut generation, mut id, mut ttl, mut etag) = (None, None, None, None);
    let mut rest = args.iter();
    while let Some(word) = rest.next() {
        let word = String::from_utf8_lossy(word).to_ascii_uppercase();
        let value = rest
            .next()
            .ok_or_else(|| Error::Syntax(format!("{word} needs a value")))?;
        let slot_taken = match word.as_str() {
            "GENERATION" => generation
                .replace(number(
                    "GENERATION",
                    value,
                    crate::keyset::MAX_GENERATION,
                    "an integer",
                )?)
                .is_some(),
            "ID" => id.replace(value.to_vec()).is_some(),
            "ETAG" => {
                let text = std::str::from_utf8(value)
                    .ok()
                    .filter(|t| (2..=MAX_ETAG_BYTES).contains(&t.len()))
                    .filter(|t| t.bytes().all(|b| b.is_ascii_graphic()))
                    .ok_or_else(|| {
                        Error::Syntax(format!(
                            "ETAG needs the document's ETag (2 to {MAX_ETAG_BYTES} printable ASCII bytes), got {}",
                            Shown::bytes(value)
                        ))
                    })?;
                etag.replace(text.to_owned()).is_some()
            }
            "TTL" => {
                let ms = number("TTL", value, MAX_TTL_MS as u64, "an integer")?;
                if (ms as i64) < MIN_TTL_MS {
                    return Err(Error::Syntax(format!(
                        "TTL needs {MIN_TTL_MS} to {MAX_TTL_MS} ms, got {ms}"
                    )));
                }
                ttl.replace(ms as i64).is_some()
            }
            _ => {
                return Err(Error::Syntax(format!(
                    "unknown option {} (GENERATION, ID, ETAG, TTL)",
                    Shown::new(&word)
                )))
            }
        };
        if slot_taken {
            return Err(Error::Syntax(format!("{word} given twice")));
        }
    }
    let generation = generation.ok_or_else(|| Error::Syntax("GENERATION is required".into()))?;
    let id = id.ok_or_else(|| Error::Syntax("ID is required".into()))?;
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(Error::Syntax(format!(
            "ID needs 1 to {MAX_ID_BYTES} bytes, got {}",
            id.len()
        )));
    }
    if id.iter().any(|b| b.is_ascii_control()) {
        return Err(Error::Syntax(format!(
            "ID {} contains control characters",
            Shown::bytes(&id)
        )));
    }
    Ok(Ack {
        generation,
        id,
        ttl_ms: ttl.unwrap_or(DEFAULT_TTL_MS),
        etag,
    })
}

/// Ten years: longer is a typo, not a policy.
const MAX_MS: u64 = crate::keyset::lifecycle::MAX_AFTER_MS;

/// `[PROMOTE-AFTER ms] [RETIRE-AFTER ms] [CONFIRM pct] [MIN-WAIT ms]`, the arguments of
/// `JWKS.POLICY` after the key, applied to `policy` (an option left out keeps its value;
/// CONFIRM 0 turns MIN-WAIT off too). `None` without options: only a read.
pub fn parse_policy(args: &[&[u8]], mut policy: Lifecycle) -> Result<Option<Lifecycle>> {
    if args.is_empty() {
        return Ok(None);
    }
    let mut seen: Vec<String> = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let word = String::from_utf8_lossy(arg).to_ascii_uppercase();
        if seen.contains(&word) {
            return Err(Error::Syntax(format!("{word} given twice")));
        }
        let (max, unit) = match word.as_str() {
            "PROMOTE-AFTER" | "RETIRE-AFTER" | "MIN-WAIT" => (MAX_MS, "milliseconds"),
            "CONFIRM" => (100, "a percentage"),
            _ => {
                return Err(Error::Syntax(format!(
                    "unknown option {} (PROMOTE-AFTER, RETIRE-AFTER, CONFIRM, MIN-WAIT)",
                    Shown::bytes(arg)
                )))
            }
        };
        let value = rest
            .next()
            .ok_or_else(|| Error::Syntax(format!("{word} needs a value")))?;
        let n = number(&word, value, max, unit)?;
        match word.as_str() {
            "PROMOTE-AFTER" => policy.promote_after_ms = n,
            "RETIRE-AFTER" => policy.retire_after_ms = n,
            "MIN-WAIT" => policy.min_wait_ms = n,
            _ => policy.confirm_pct = u8::try_from(n).unwrap_or(100),
        }
        seen.push(word);
    }
    if policy.confirm_pct == 0 {
        if seen.iter().any(|w| w == "MIN-WAIT") && policy.min_wait_ms > 0 {
            return Err(Error::Syntax("MIN-WAIT needs CONFIRM".into()));
        }
        policy.min_wait_ms = 0;
    }
    Ok(Some(policy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkeys;

    const POLICY: Policy = Policy { min_rsa_bits: 2048 };

    fn parse(args: &[&str]) -> Result<RotateRequest> {
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        parse_rotate(&bytes, &POLICY)
    }

    #[test]
    fn options_and_ops() {
        let jwk = testkeys::ec("k1", 1).to_string();
        let req = parse(&[
            "ifgen",
            "7",
            "REASON",
            "scheduled",
            "add",
            &jwk,
            "PROMOTE",
            "k1",
        ])
        .unwrap();
        assert_eq!(req.if_gen, Some(7));
        assert_eq!(req.reason, "scheduled");
        assert_eq!(req.ops.len(), 2);
        assert_eq!(parse(&["RETIRE", "x"]).unwrap().reason, DEFAULT_REASON);
        let req = parse(&["dryrun", "FORCE", "RETIRE", "x"]).unwrap();
        assert!(req.dry_run && req.force);
    }

    #[test]
    fn counts_are_checked_before_any_jwk_is_validated() {
        // Invalid JWKs: had they been validated first, the error would name the JWK.
        let many_adds: Vec<&str> = std::iter::repeat_n(["ADD", "{}"], 101).flatten().collect();
        assert!(matches!(parse(&many_adds), Err(Error::TooManyKeys(100))));
        let many_ops: Vec<&str> = std::iter::repeat_n(["RETIRE", "a"], MAX_OPS + 1)
            .flatten()
            .chain(["ADD", "{}"])
            .collect();
        let e = parse(&many_ops).unwrap_err().to_string();
        assert!(e.contains("more than 256 operations"), "{e}");
        let huge: Vec<&str> = std::iter::repeat_n("x", 100_000).collect();
        assert!(parse(&huge).unwrap_err().to_string().contains("operations"));
    }

    #[test]
    fn rejections() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "at least one operation"),
            (&["IFGEN", "1"], "at least one operation"),
            (&["IFGEN"], "IFGEN needs a value"),
            (&["IFGEN", "-1", "RETIRE", "a"], "non-negative"),
            (&["IFGEN", "1", "IFGEN", "2", "RETIRE", "a"], "twice"),
            (
                &["IFGEN", "99999999999999999999", "RETIRE", "a"],
                "non-negative",
            ),
            (&["REASON", "", "RETIRE", "a"], "empty"),
            (&["REASON", "a\nb", "RETIRE", "a"], "control"),
            (&["REASON", "a", "REASON", "b", "RETIRE", "a"], "twice"),
            (
                &["RETIRE", "a", "REASON", "b"],
                "before the first operation",
            ),
            (&["RETIRE"], "RETIRE needs a value"),
            (&["RETIRE", ""], "unknown kid"),
            (&["FORCE", "FORCE", "RETIRE", "a"], "FORCE given twice"),
            (&["RETIRE", "a", "DRYRUN"], "before the first operation"),
            (&["FROB", "a"], "unknown option or operation 'FROB'"),
            (&["ADD", "{}"], "missing 'kty'"),
            (&["REPLACE", "[]"], "JWKS document"),
        ];
        for (args, needle) in cases {
            let e = parse(args).unwrap_err().to_string();
            let code = e.split(' ').next().unwrap_or_default();
            assert!(["ERR", "NOKID", "BADJWK"].contains(&code), "{e}");
            assert!(e.contains(needle), "{args:?}: {e}");
        }
        let bad: &[&[u8]] = &[b"ADD", b"\xff\xfe"];
        assert!(matches!(parse_rotate(bad, &POLICY), Err(Error::NotUtf8(_))));
    }

    #[test]
    fn invalidate_args() {
        assert_eq!(parse_invalidate(&[]).unwrap(), "manual");
        assert_eq!(parse_invalidate(&[b"reason", b"deploy"]).unwrap(), "deploy");
        assert!(parse_invalidate(&[b"REASON"]).is_err());
        assert!(parse_invalidate(&[b"X", b"y"]).is_err());
        assert!(parse_invalidate(&[b"REASON", b"a", b"b"]).is_err());
    }
    #[test]
    fn parses_ack_arguments() {
        let with_etag: Vec<&[u8]> = vec![b"GENERATION", b"7", b"ID", b"v", b"ETAG", b"\"Ab_-9\""];
        assert_eq!(
            parse_ack(&with_etag).unwrap().etag.as_deref(),
            Some("\"Ab_-9\"")
        );
        for bad in [&b""[..], b"\"", b"a b", b"\"x\"\n"] {
            let args: Vec<&[u8]> = vec![b"GENERATION", b"7", b"ID", b"v", b"ETAG", bad];
            assert!(parse_ack(&args)
                .unwrap_err()
                .to_string()
                .contains("ETAG needs"));
        }
        let args: Vec<&[u8]> = vec![b"generation", b"7", b"ID", b"h:1:a"];
        assert_eq!(
            parse_ack(&args).unwrap(),
            Ack {
                generation: 7,
                id: b"h:1:a".to_vec(),
                ttl_ms: DEFAULT_TTL_MS,
                etag: None
            }
        );
        let args: Vec<&[u8]> = vec![b"ID", b"x", b"TTL", b"1000", b"GENERATION", b"0"];
        assert_eq!(
            parse_ack(&args).unwrap(),
            Ack {
                generation: 0,
                id: b"x".to_vec(),
                ttl_ms: 1000,
                etag: None
            }
        );
        for (bad, why) in [
            (&[&b"ID"[..], b"x"][..], "GENERATION is required"),
            (&[b"GENERATION", b"1"], "ID is required"),
            (&[b"GENERATION", b"-1", b"ID", b"x"], "integer from 0"),
            (
                &[b"GENERATION", b"1", b"ID", b"x", b"TTL", b"999"],
                "TTL needs",
            ),
            (
                &[b"GENERATION", b"1", b"ID", b"x", b"TTL", b"3600001"],
                "integer from 0 to 3600000",
            ),
            (&[b"GENERATION", b"1", b"ID", b""], "1 to 128 bytes"),
            (&[b"GENERATION", b"1", b"ID", b"a\nb"], "control"),
            (&[b"GENERATION", b"1", b"ID", b"x", b"ID", b"y"], "twice"),
            (&[b"GENERATION", b"1", b"ID"], "needs a value"),
            (&[b"GEN", b"1"], "unknown option"),
        ] {
            let e = parse_ack(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{e} / {why}");
        }
        let long = vec![b'a'; 129];
        assert!(parse_ack(&[b"GENERATION", b"1", b"ID", &long]).is_err());
    }
}

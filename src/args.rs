//! Command arguments to typed requests. Pure (bytes in, values out) so it can be fuzzed;
//! the key-set name itself is handled by `keys`.

use crate::error::{Error, Result, Shown};
use crate::jwk::{self, Jwk, Policy};
use crate::keyset::Op;

pub const DEFAULT_REASON: &str = "key_rotation";
pub const MAX_REASON_BYTES: usize = 128;
/// Enough for a full REPLACE plus promotes; far below anything that could stall Redis.
pub const MAX_OPS: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub struct RotateRequest {
    pub if_gen: Option<u64>,
    pub reason: String,
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

/// `[IFGEN generation] [REASON reason] op [op ...]`, the arguments after the key.
pub fn parse_rotate(args: &[&[u8]], policy: &Policy) -> Result<RotateRequest> {
    let mut req = RotateRequest {
        if_gen: None,
        reason: DEFAULT_REASON.to_owned(),
        ops: Vec::new(),
    };
    let mut reason_seen = false;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let keyword = word(arg);
        // Options come before the first operation, so an op's value can never be
        // mistaken for an option.
        let options_allowed = req.ops.is_empty();
        match keyword.as_str() {
            "IFGEN" if options_allowed => {
                if req.if_gen.is_some() {
                    return Err(Error::Syntax("IFGEN given twice".into()));
                }
                req.if_gen = Some(parse_generation(value(&mut rest, "IFGEN")?)?);
            }
            "REASON" if options_allowed => {
                if reason_seen {
                    return Err(Error::Syntax("REASON given twice".into()));
                }
                reason_seen = true;
                req.reason = parse_reason(value(&mut rest, "REASON")?)?;
            }
            "IFGEN" | "REASON" => {
                return Err(Error::Syntax(format!(
                    "{keyword} must come before the first operation"
                )))
            }
            "ADD" => {
                let text = utf8("JWK", value(&mut rest, "ADD")?)?;
                req.ops.push(Op::Add(Jwk::parse(text, policy)?));
            }
            "PROMOTE" => req
                .ops
                .push(Op::Promote(jwk::parse_kid(value(&mut rest, "PROMOTE")?)?)),
            "RETIRE" => req
                .ops
                .push(Op::Retire(jwk::parse_kid(value(&mut rest, "RETIRE")?)?)),
            "REPLACE" => {
                let text = utf8("JWKS document", value(&mut rest, "REPLACE")?)?;
                req.ops
                    .push(Op::Replace(jwk::parse_document(text, policy)?));
            }
            _ => {
                return Err(Error::Syntax(format!(
                    "unknown option or operation {} (IFGEN, REASON, ADD, PROMOTE, RETIRE, REPLACE)",
                    Shown::bytes(arg)
                )))
            }
        }
        if req.ops.len() > MAX_OPS {
            return Err(Error::Syntax(format!("more than {MAX_OPS} operations")));
        }
    }
    if req.ops.is_empty() {
        return Err(Error::Syntax(
            "JWKS.ROTATE needs at least one operation (ADD, PROMOTE, RETIRE, REPLACE)".into(),
        ));
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
}

//! Which members a public JWK may carry, and the checks on the optional ones.

use serde_json::{Map, Value};

use super::b64;
use super::material::{alg_use, str_member, Kty};
use crate::error::{Error, Result, Shown};

/// RFC 7518 §6.3.2 / §6.2.2 / RFC 8037 private members, and `oct`'s secret `k`.
const PRIVATE: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Members every kty may carry (RFC 7517 §4).
const COMMON: &[&str] = &[
    "kty", "kid", "use", "alg", "key_ops", "x5c", "x5t", "x5t#S256",
];

pub(super) fn reject_private(members: &Map<String, Value>) -> Result<()> {
    match PRIVATE.iter().find(|m| members.contains_key(**m)) {
        Some(m) => Err(Error::PrivateMember(m)),
        None => Ok(()),
    }
}

pub(super) fn check_known(kty: Kty, members: &Map<String, Value>) -> Result<()> {
    for name in members.keys() {
        if !COMMON.contains(&name.as_str()) && !kty.material_members().contains(&name.as_str()) {
            return Err(Error::Jwk(format!(
                "unknown member {} for a {} key",
                Shown::new(name),
                kty.name()
            )));
        }
    }
    Ok(())
}

/// Public-key operations only (RFC 7517 §4.3); the private ones betray a private key.
fn key_op_use(op: &str) -> Result<&'static str> {
    match op {
        "verify" => Ok("sig"),
        "encrypt" | "wrapKey" | "deriveKey" | "deriveBits" => Ok("enc"),
        "sign" | "decrypt" | "unwrapKey" => Err(Error::Jwk(format!(
            "key_ops {} is a private-key operation",
            Shown::new(op)
        ))),
        other => Err(Error::Jwk(format!(
            "unknown key_ops value {}",
            Shown::new(other)
        ))),
    }
}

pub(super) fn check_optional(kty: Kty, members: &Map<String, Value>) -> Result<()> {
    let declared_use = match members.get("use") {
        None => None,
        Some(Value::String(u)) if u == "sig" || u == "enc" => Some(u.as_str()),
        Some(Value::String(u)) => {
            return Err(Error::Jwk(format!(
                "'use' must be 'sig' or 'enc', not {}",
                Shown::new(u)
            )))
        }
        Some(_) => return Err(Error::Jwk("'use' must be a string".into())),
    };
    let crv = members.get("crv").and_then(Value::as_str);
    if kty == Kty::Okp && declared_use == Some("enc") {
        return Err(Error::Jwk(
            "Ed25519/Ed448 keys can only sign: 'use' must be 'sig'".into(),
        ));
    }
    let mut effective_use = declared_use;
    if members.contains_key("alg") {
        let implied = alg_use(kty, crv, str_member(members, "alg")?)?;
        if let Some(declared) = declared_use.filter(|u| *u != implied) {
            return Err(Error::Jwk(format!(
                "'alg' is a '{implied}' algorithm but 'use' is '{declared}'"
            )));
        }
        effective_use = Some(implied);
    }
    if let Some(ops) = members.get("key_ops") {
        check_key_ops(ops, effective_use)?;
    }
    for (name, len) in [("x5t", 20), ("x5t#S256", 32)] {
        if members.contains_key(name) {
            let digest = b64::decode_url(name, str_member(members, name)?)?;
            if digest.len() != len {
                return Err(Error::Jwk(format!("'{name}' must be a {len}-octet digest")));
            }
        }
    }
    Ok(())
}

fn check_key_ops(ops: &Value, declared_use: Option<&str>) -> Result<()> {
    let Value::Array(ops) = ops else {
        return Err(Error::Jwk("'key_ops' must be an array of strings".into()));
    };
    if ops.is_empty() {
        return Err(Error::Jwk("'key_ops' must not be empty".into()));
    }
    let mut seen: Vec<&str> = Vec::with_capacity(ops.len());
    for op in ops {
        let Value::String(op) = op else {
            return Err(Error::Jwk("'key_ops' must be an array of strings".into()));
        };
        let usage = key_op_use(op)?;
        if seen.contains(&op.as_str()) {
            return Err(Error::Jwk(format!("'key_ops' repeats {}", Shown::new(op))));
        }
        // RFC 7517 §4.3: use and key_ops, when both present, must be consistent.
        if declared_use.is_some_and(|u| u != usage) {
            return Err(Error::Jwk(format!(
                "key_ops {} is inconsistent with 'use'/'alg'",
                Shown::new(op)
            )));
        }
        seen.push(op);
    }
    Ok(())
}

//! The key material of each `kty`: which members carry it and what makes it valid.

use serde_json::{Map, Value};

use super::{b64, eddsa, Policy, MAX_RSA_BITS};
use crate::error::{Error, Result, Shown};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kty {
    Rsa,
    Ec,
    Okp,
}

impl Kty {
    pub fn from_name(name: &str) -> Result<Kty> {
        match name {
            "RSA" => Ok(Kty::Rsa),
            "EC" => Ok(Kty::Ec),
            "OKP" => Ok(Kty::Okp),
            "oct" => Err(Error::Jwk(
                "'oct' keys are shared secrets and must never be published".into(),
            )),
            other => Err(Error::Jwk(format!(
                "unsupported kty {} (RSA, EC or OKP)",
                Shown::new(other)
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kty::Rsa => "RSA",
            Kty::Ec => "EC",
            Kty::Okp => "OKP",
        }
    }

    /// The members that define the key, in RFC 7638 order (without `kty`).
    pub fn material_members(self) -> &'static [&'static str] {
        match self {
            Kty::Rsa => &["e", "n"],
            Kty::Ec => &["crv", "x", "y"],
            Kty::Okp => &["crv", "x"],
        }
    }
}

pub(super) fn str_member<'a>(members: &'a Map<String, Value>, name: &str) -> Result<&'a str> {
    match members.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Error::Jwk(format!("'{name}' must be a string"))),
        None => Err(Error::Jwk(format!("missing '{name}'"))),
    }
}

pub(super) fn check(kty: Kty, members: &Map<String, Value>, policy: &Policy) -> Result<()> {
    match kty {
        Kty::Rsa => check_rsa(members, policy),
        Kty::Ec => check_ec(members),
        Kty::Okp => check_okp(members),
    }
}

fn check_rsa(members: &Map<String, Value>, policy: &Policy) -> Result<()> {
    let n = b64::decode_url("n", str_member(members, "n")?)?;
    let e = b64::decode_url("e", str_member(members, "e")?)?;
    // RFC 7518 §6.3.1.1: the minimum number of octets, so no leading zero.
    let Some(&first) = n.first() else {
        return Err(Error::Jwk("'n' is empty".into()));
    };
    if first == 0 {
        return Err(Error::Jwk("'n' has a leading zero octet".into()));
    }
    let bits = n.len() * 8 - first.leading_zeros() as usize;
    if bits < policy.min_rsa_bits {
        return Err(Error::Jwk(format!(
            "RSA modulus is {bits} bits, at least {} required (jwks.min-rsa-bits)",
            policy.min_rsa_bits
        )));
    }
    if bits > MAX_RSA_BITS {
        return Err(Error::Jwk(format!(
            "RSA modulus is {bits} bits, at most {MAX_RSA_BITS} accepted"
        )));
    }
    if n.last().is_some_and(|b| b & 1 == 0) {
        return Err(Error::Jwk("RSA modulus is even".into()));
    }
    if e.first() == Some(&0) || e.is_empty() || e.len() > 8 {
        return Err(Error::Jwk(
            "'e' must be 1 to 8 octets without a leading zero".into(),
        ));
    }
    let exponent = e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    if exponent < 3 || exponent % 2 == 0 {
        return Err(Error::Jwk("RSA exponent must be odd and at least 3".into()));
    }
    Ok(())
}

/// Coordinate length in octets for each supported curve (RFC 7518 §6.2.1.2).
fn ec_coordinate_len(crv: &str) -> Result<usize> {
    match crv {
        "P-256" => Ok(32),
        "P-384" => Ok(48),
        "P-521" => Ok(66),
        other => Err(Error::Jwk(format!(
            "unsupported EC crv {} (P-256, P-384 or P-521)",
            Shown::new(other)
        ))),
    }
}

fn check_ec(members: &Map<String, Value>) -> Result<()> {
    let crv = str_member(members, "crv")?;
    let len = ec_coordinate_len(crv)?;
    let x = b64::decode_url("x", str_member(members, "x")?)?;
    let y = b64::decode_url("y", str_member(members, "y")?)?;
    if x.len() != len || y.len() != len {
        return Err(Error::Jwk(format!(
            "{crv} coordinates must be {len} octets (x is {}, y is {})",
            x.len(),
            y.len()
        )));
    }
    let mut sec1 = Vec::with_capacity(1 + 2 * len);
    sec1.push(0x04);
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    let on_curve = match crv {
        "P-256" => p256::PublicKey::from_sec1_bytes(&sec1).is_ok(),
        "P-384" => p384::PublicKey::from_sec1_bytes(&sec1).is_ok(),
        _ => p521::PublicKey::from_sec1_bytes(&sec1).is_ok(),
    };
    if !on_curve {
        return Err(Error::Jwk(format!("the point (x, y) is not on {crv}")));
    }
    Ok(())
}

fn check_okp(members: &Map<String, Value>) -> Result<()> {
    let crv = str_member(members, "crv")?;
    let check: fn(&[u8]) -> Result<()> = match crv {
        "Ed25519" => eddsa::check_ed25519,
        "Ed448" => eddsa::check_ed448,
        other => {
            return Err(Error::Jwk(format!(
                "unsupported OKP crv {} (Ed25519 or Ed448)",
                Shown::new(other)
            )))
        }
    };
    check(&b64::decode_url("x", str_member(members, "x")?)?)
}

/// What an `alg` means for a key: the `use` it implies, and whether it fits this key.
pub(super) fn alg_use(kty: Kty, crv: Option<&str>, alg: &str) -> Result<&'static str> {
    let fits = |ok: bool, usage: &'static str| {
        if ok {
            Ok(usage)
        } else {
            Err(Error::Jwk(format!(
                "alg {} does not fit a {} key{}",
                Shown::new(alg),
                kty.name(),
                crv.map(|c| format!(" on {c}")).unwrap_or_default()
            )))
        }
    };
    match alg {
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => fits(kty == Kty::Rsa, "sig"),
        "RSA-OAEP" | "RSA-OAEP-256" | "RSA-OAEP-384" | "RSA-OAEP-512" => {
            fits(kty == Kty::Rsa, "enc")
        }
        "ES256" => fits(crv == Some("P-256"), "sig"),
        "ES384" => fits(crv == Some("P-384"), "sig"),
        "ES512" => fits(crv == Some("P-521"), "sig"),
        "ECDH-ES" | "ECDH-ES+A128KW" | "ECDH-ES+A192KW" | "ECDH-ES+A256KW" => {
            fits(kty == Kty::Ec, "enc")
        }
        "EdDSA" => fits(kty == Kty::Okp, "sig"),
        "Ed25519" => fits(crv == Some("Ed25519"), "sig"),
        "Ed448" => fits(crv == Some("Ed448"), "sig"),
        "none" => Err(Error::Jwk("alg 'none' is never acceptable".into())),
        "RSA1_5" => Err(Error::Jwk("alg 'RSA1_5' is deprecated and refused".into())),
        other => Err(Error::Jwk(format!("unknown alg {}", Shown::new(other)))),
    }
}

//! Pure JWK handling: parse one public JWK, validate it (RFC 7517/7518/8037), compute its
//! RFC 7638 thumbprint, and parse a whole JWKS document for `REPLACE`. No Redis types here.

mod b64;
mod eddsa;
mod material;
mod members;
mod thumbprint;
mod x5c;

use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::{Error, Result, Shown};

/// Most keys one JWKS document (and so one key set) may hold: verifiers fetch the whole
/// document on every miss.
pub const MAX_KEYS: usize = 100;

pub use material::Kty;
pub use thumbprint::thumbprint;

/// Largest JWK accepted as one argument (an `x5c` chain fits comfortably).
pub const MAX_JWK_BYTES: usize = 64 * 1024;
/// Largest JWKS document accepted by `REPLACE`.
pub const MAX_DOCUMENT_BYTES: usize = 512 * 1024;
/// Longest `kid` accepted.
pub const MAX_KID_BYTES: usize = 256;
/// Largest RSA modulus accepted: bigger ones are a denial-of-service risk for verifiers.
pub const MAX_RSA_BITS: usize = 16384;

/// What validation depends on besides the JWK itself.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub min_rsa_bits: usize,
}

/// A validated public JWK. Immutable once built, and shared: a rotation copies the key set
/// it changes, and copying a JWK is then one reference count, not its member map.
#[derive(Debug, Clone)]
pub struct Jwk(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    kid: String,
    kty: Kty,
    /// Exactly what is published, `kid` included.
    members: Map<String, Value>,
    /// `members` as JSON, serialized once: every rotation saves the set and every cache
    /// miss renders it, and escaping the same base64url text each time was their main cost.
    json: Box<RawValue>,
}

impl PartialEq for Jwk {
    fn eq(&self, other: &Jwk) -> bool {
        // `json` is derived from `members`.
        self.0.kty == other.0.kty && self.0.members == other.0.members
    }
}

impl Jwk {
    fn new(kid: String, kty: Kty, members: Map<String, Value>) -> Result<Jwk> {
        let json = serde_json::value::to_raw_value(&members)
            .map_err(|e| Error::Jwk(format!("cannot serialize: {e}")))?;
        Ok(Jwk(Arc::new(Inner {
            kid,
            kty,
            members,
            json,
        })))
    }

    pub fn kid(&self) -> &str {
        &self.0.kid
    }

    pub fn kty(&self) -> Kty {
        self.0.kty
    }

    pub fn members(&self) -> &Map<String, Value> {
        &self.0.members
    }

    /// The published members as JSON text.
    pub fn json(&self) -> &RawValue {
        &self.0.json
    }

    pub fn member_str(&self, name: &str) -> Option<&str> {
        self.members().get(name).and_then(Value::as_str)
    }

    /// Same key material, whatever the optional members say.
    pub fn same_key(&self, other: &Jwk) -> bool {
        self.kty() == other.kty()
            && self
                .kty()
                .material_members()
                .iter()
                .all(|m| self.members().get(*m) == other.members().get(*m))
    }

    /// Parses and validates one JWK given as JSON text.
    pub fn parse(text: &str, policy: &Policy) -> Result<Jwk> {
        if text.len() > MAX_JWK_BYTES {
            return Err(Error::TooLarge {
                what: "JWK",
                len: text.len(),
                max: MAX_JWK_BYTES,
            });
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| Error::Jwk(format!("not JSON: {e}")))?;
        Jwk::from_value(value, policy)
    }

    /// Validates one JWK already parsed from JSON.
    pub fn from_value(value: Value, policy: &Policy) -> Result<Jwk> {
        let Value::Object(mut members) = value else {
            return Err(Error::Jwk("a JWK must be a JSON object".into()));
        };
        members::reject_private(&members)?;
        let kty = match members.get("kty") {
            Some(Value::String(s)) => Kty::from_name(s)?,
            Some(_) => return Err(Error::Jwk("'kty' must be a string".into())),
            None => return Err(Error::Jwk("missing 'kty'".into())),
        };
        let with_kid = |e: Error, members: &Map<String, Value>| match (e, members.get("kid")) {
            (Error::Jwk(reason), Some(Value::String(kid))) => Error::JwkAt {
                kid: Shown::new(kid),
                reason,
            },
            (e, _) => e,
        };
        // Cheapest first: member names, the kid, the optional members, then the key
        // material (sizes before curve arithmetic), and the certificate chain last.
        members::check_known(kty, &members).map_err(|e| with_kid(e, &members))?;
        if let Some(Value::String(kid)) = members.get("kid") {
            check_kid(kid)?;
        }
        members::check_optional(kty, &members).map_err(|e| with_kid(e, &members))?;
        material::check(kty, &members, policy).map_err(|e| with_kid(e, &members))?;
        x5c::check(kty, &members).map_err(|e| with_kid(e, &members))?;
        let kid = match members.get("kid") {
            Some(Value::String(kid)) => kid.clone(),
            Some(_) => return Err(Error::Jwk("'kid' must be a string".into())),
            None => {
                // RFC 7638 §1: the thumbprint is a natural kid for a key that has none.
                let kid = thumbprint(kty, &members)?;
                members.insert("kid".into(), Value::String(kid.clone()));
                kid
            }
        };
        check_kid(&kid)?;
        Jwk::new(kid, kty, members)
    }
}

fn check_kid(kid: &str) -> Result<()> {
    if kid.is_empty() {
        return Err(Error::Jwk("'kid' must not be empty".into()));
    }
    if kid.len() > MAX_KID_BYTES {
        return Err(Error::Jwk(format!(
            "'kid' is longer than {MAX_KID_BYTES} bytes"
        )));
    }
    if kid.chars().any(char::is_control) {
        return Err(Error::Jwk("'kid' contains control characters".into()));
    }
    Ok(())
}

/// Checks a kid given to PROMOTE/RETIRE the same way a JWK's kid is checked.
pub fn parse_kid(raw: &[u8]) -> Result<String> {
    let kid = std::str::from_utf8(raw).map_err(|_| Error::NotUtf8("kid"))?;
    check_kid(kid).map_err(|_| Error::UnknownKid(Shown::new(kid)))?;
    Ok(kid.to_owned())
}

/// Parses a JWKS document (`{"keys":[...]}`) as given to `REPLACE`.
pub fn parse_document(text: &str, policy: &Policy) -> Result<Vec<Jwk>> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(Error::TooLarge {
            what: "JWKS document",
            len: text.len(),
            max: MAX_DOCUMENT_BYTES,
        });
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| Error::Document(format!("not JSON: {e}")))?;
    let Value::Object(mut doc) = value else {
        return Err(Error::Document("must be a JSON object".into()));
    };
    let keys = match doc.remove("keys") {
        Some(Value::Array(keys)) => keys,
        Some(_) => return Err(Error::Document("'keys' must be an array".into())),
        None => return Err(Error::Document("missing 'keys'".into())),
    };
    if let Some(extra) = doc.keys().next() {
        return Err(Error::Document(format!(
            "unknown member {}",
            Shown::new(extra)
        )));
    }
    // No set may hold more keys: refuse before validating any of them, which is where
    // the time goes.
    if keys.len() > MAX_KEYS {
        return Err(Error::TooManyKeys(MAX_KEYS));
    }
    let mut jwks: Vec<Jwk> = Vec::with_capacity(keys.len());
    for key in keys {
        let jwk = Jwk::from_value(key, policy)?;
        if jwks.iter().any(|k| k.kid() == jwk.kid()) {
            return Err(Error::DuplicateKid(Shown::new(jwk.kid())));
        }
        jwks.push(jwk);
    }
    Ok(jwks)
}

#[cfg(test)]
pub(crate) mod fixtures;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod eddsa_tests;

#[cfg(test)]
mod x5c_tests;

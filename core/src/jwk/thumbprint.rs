//! RFC 7638 JWK thumbprint (SHA-256), used as the kid of a key that has none.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{b64, material::Kty};
use crate::error::{Error, Result};

/// `members` must already be validated. The required members go in lexicographic order with
/// no whitespace (RFC 7638 §3.2); the order is spelled out rather than left to the map type.
pub fn thumbprint(kty: Kty, members: &Map<String, Value>) -> Result<String> {
    let mut names: Vec<&str> = kty.material_members().to_vec();
    names.push("kty");
    names.sort_unstable();
    let mut canonical = String::from("{");
    for (i, name) in names.iter().enumerate() {
        let value = match *name {
            "kty" => Value::String(kty.name().into()),
            _ => members
                .get(*name)
                .cloned()
                .ok_or_else(|| Error::Jwk(format!("missing '{name}'")))?,
        };
        if i > 0 {
            canonical.push(',');
        }
        canonical.push_str(&format!("{}:{}", Value::String((*name).into()), value));
    }
    canonical.push('}');
    Ok(b64::encode_url(&Sha256::digest(canonical.as_bytes())))
}

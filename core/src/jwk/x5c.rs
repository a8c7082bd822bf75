//! `x5c`, `x5t` and `x5t#S256` (RFC 7517 §4.7-4.9): a certificate chain published with a
//! key must be about that key. A relying party that trusts the chain trusts the key of its
//! first certificate, so "the key in the first certificate MUST match the public key
//! represented by other members of the JWK" (§4.7) is checked; a JWK whose chain names
//! another key is refused rather than published.
//!
//! Only the structure is checked: every certificate must be a DER X.509 certificate, the
//! first one's SubjectPublicKeyInfo must be this JWK's key, and the thumbprints must be
//! those of the first certificate. The chain itself (signatures, validity, names) is not
//! validated: that is the relying party's job, against its own trust anchors. Cost is
//! bounded by the JWK's size (64 KiB, or the document's) and at most 10 certificates;
//! every step is linear in the input.

use serde_json::{Map, Value};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use x509_cert::der::asn1::{ObjectIdentifier, UintRef};
use x509_cert::der::{Decode, Reader, SliceReader};
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::Certificate;

use super::b64;
use super::material::{str_member, Kty};
use crate::error::{Error, Result};

pub(super) const MAX_X5C_CERTS: usize = 10;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const SECP521R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const ED448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.113");

pub(super) const MISMATCH: &str = "the first x5c certificate's key is not this JWK's key";

/// Checks `x5c` (if present) and the thumbprints against it. `members` must already have
/// passed the material checks (the key members decode) and the thumbprint length checks.
pub(super) fn check(kty: Kty, members: &Map<String, Value>) -> Result<()> {
    let Some(x5c) = members.get("x5c") else {
        return Ok(());
    };
    let ders = decode_chain(x5c)?;
    let Some(first) = ders.first() else {
        return Err(Error::Jwk(format!(
            "'x5c' must hold 1 to {MAX_X5C_CERTS} certificates"
        )));
    };
    // Thumbprints first: two hashes are cheaper than parsing the chain.
    check_thumbprint(
        members,
        "x5t",
        "SHA-1",
        &<Sha1 as sha1::Digest>::digest(first),
    )?;
    check_thumbprint(members, "x5t#S256", "SHA-256", &Sha256::digest(first))?;
    let parse = |i: usize, der: &[u8]| {
        Certificate::from_der(der)
            .map_err(|e| Error::Jwk(format!("x5c[{i}] is not a DER X.509 certificate ({e})")))
    };
    let leaf = parse(0, first)?;
    // The rest of the chain is only parsed, not validated (see above).
    for (i, der) in ders.iter().enumerate().skip(1) {
        parse(i, der)?;
    }
    check_key(
        kty,
        members,
        leaf.tbs_certificate().subject_public_key_info(),
    )
}

/// An array of 1 to 10 non-empty standard-base64 strings (not base64url: RFC 7517 §4.7).
fn decode_chain(x5c: &Value) -> Result<Vec<Vec<u8>>> {
    let Value::Array(certs) = x5c else {
        return Err(Error::Jwk("'x5c' must be an array of strings".into()));
    };
    if certs.is_empty() || certs.len() > MAX_X5C_CERTS {
        return Err(Error::Jwk(format!(
            "'x5c' must hold 1 to {MAX_X5C_CERTS} certificates"
        )));
    }
    let mut ders = Vec::with_capacity(certs.len());
    for cert in certs {
        let Value::String(cert) = cert else {
            return Err(Error::Jwk("'x5c' must be an array of strings".into()));
        };
        let der = b64::decode_std("x5c", cert)?;
        if der.is_empty() {
            return Err(Error::Jwk("'x5c' entries must not be empty".into()));
        }
        ders.push(der);
    }
    Ok(ders)
}

fn check_thumbprint(
    members: &Map<String, Value>,
    name: &str,
    hash: &str,
    actual: &[u8],
) -> Result<()> {
    if !members.contains_key(name) {
        return Ok(());
    }
    let declared = b64::decode_url(name, str_member(members, name)?)?;
    if declared != actual {
        return Err(Error::Jwk(format!(
            "'{name}' is not the {hash} thumbprint of the first x5c certificate"
        )));
    }
    Ok(())
}

fn check_key(
    kty: Kty,
    members: &Map<String, Value>,
    spki: &SubjectPublicKeyInfoOwned,
) -> Result<()> {
    let oid = spki.algorithm.oid;
    // A BIT STRING with unused bits is no key of any of these types.
    let Some(key) = spki.subject_public_key.as_bytes() else {
        return Err(mismatch("its key is not a whole number of octets"));
    };
    let member = |name: &str| b64::decode_url(name, str_member(members, name)?);
    match kty {
        Kty::Rsa => {
            if oid != RSA_ENCRYPTION && oid != RSASSA_PSS {
                return Err(mismatch(&describe(spki)));
            }
            let Some((n, e)) = rsa_public_key(key) else {
                return Err(mismatch("its RSA key does not parse"));
            };
            if n != member("n")?.as_slice() || e != member("e")?.as_slice() {
                return Err(mismatch("another RSA key"));
            }
        }
        Kty::Ec => {
            let crv = str_member(members, "crv")?;
            let curve = match crv {
                "P-256" => SECP256R1,
                "P-384" => SECP384R1,
                _ => SECP521R1,
            };
            let named = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
            if oid != EC_PUBLIC_KEY || named != Some(curve) {
                return Err(mismatch(&describe(spki)));
            }
            let mut sec1 = vec![0x04];
            sec1.extend_from_slice(&member("x")?);
            sec1.extend_from_slice(&member("y")?);
            if !same_ec_point(crv, &sec1, key) {
                return Err(mismatch(&format!("another {crv} key")));
            }
        }
        Kty::Okp => {
            let crv = str_member(members, "crv")?;
            let expected = if crv == "Ed448" { ED448 } else { ED25519 };
            // RFC 8410 §3: the parameters MUST be absent.
            if oid != expected || spki.algorithm.parameters.is_some() {
                return Err(mismatch(&describe(spki)));
            }
            if key != member("x")?.as_slice() {
                return Err(mismatch(&format!("another {crv} key")));
            }
        }
    }
    Ok(())
}

fn mismatch(detail: &str) -> Error {
    Error::Jwk(format!("{MISMATCH} ({detail})"))
}

/// What key the certificate has, for the error message.
fn describe(spki: &SubjectPublicKeyInfoOwned) -> String {
    let oid = spki.algorithm.oid;
    let what = if oid == RSA_ENCRYPTION || oid == RSASSA_PSS {
        "RSA".to_string()
    } else if oid == ED25519 {
        "Ed25519".to_string()
    } else if oid == ED448 {
        "Ed448".to_string()
    } else if oid == EC_PUBLIC_KEY {
        let named = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        match named {
            Some(c) if c == SECP256R1 => "EC P-256".to_string(),
            Some(c) if c == SECP384R1 => "EC P-384".to_string(),
            Some(c) if c == SECP521R1 => "EC P-521".to_string(),
            _ => "EC (other curve)".to_string(),
        }
    } else {
        format!("OID {oid}")
    };
    format!("it has an {what} key")
}

/// RFC 8017 §A.1.1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`,
/// as unsigned big-endian octets without leading zeros.
fn rsa_public_key(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut reader = SliceReader::new(der).ok()?;
    let (n, e) = reader
        .sequence(|r| Ok::<_, x509_cert::der::Error>((UintRef::decode(r)?, UintRef::decode(r)?)))
        .ok()?;
    reader.finish().ok()?;
    Some((n.as_bytes(), e.as_bytes()))
}

/// The certificate may hold the point compressed (SEC 1 §2.3.3): compare decoded points.
fn same_ec_point(crv: &str, jwk_sec1: &[u8], cert_sec1: &[u8]) -> bool {
    fn same<T: PartialEq, E>(a: std::result::Result<T, E>, b: std::result::Result<T, E>) -> bool {
        matches!((a, b), (Ok(a), Ok(b)) if a == b)
    }
    match crv {
        "P-256" => same(
            p256::PublicKey::from_sec1_bytes(jwk_sec1),
            p256::PublicKey::from_sec1_bytes(cert_sec1),
        ),
        "P-384" => same(
            p384::PublicKey::from_sec1_bytes(jwk_sec1),
            p384::PublicKey::from_sec1_bytes(cert_sec1),
        ),
        _ => same(
            p521::PublicKey::from_sec1_bytes(jwk_sec1),
            p521::PublicKey::from_sec1_bytes(cert_sec1),
        ),
    }
}

//! Test-only: declared under #[cfg(test)] by jwk/mod.rs.
//! x5c / x5t / x5t#S256 against real certificates: testdata/x5c.json holds public JWKs
//! with self-signed (RSA: CA-signed, chain of 2) certificates of the same keys, made
//! offline by testdata/make_x5c.py.

use serde_json::{json, Value};

use super::fixtures::*;
use super::*;

const FIXTURES: &str = include_str!("testdata/x5c.json");

fn fixture(name: &str) -> Value {
    let all: Value = serde_json::from_str(FIXTURES).unwrap();
    all[name].clone()
}

/// The fixture's JWK with its x5c and both thumbprints.
fn full(name: &str) -> Value {
    let f = fixture(name);
    let mut jwk = f["jwk"].clone();
    for m in ["x5c", "x5t", "x5t#S256"] {
        jwk[m] = f[m].clone();
    }
    jwk["kid"] = json!(name);
    jwk
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

fn without(mut base: Value, key: &str) -> Value {
    base.as_object_mut().map(|m| m.remove(key));
    base
}

fn err(v: Value) -> String {
    match Jwk::from_value(v, &POLICY) {
        Ok(j) => panic!("accepted {:?}", j.members()),
        Err(e) => e.to_string(),
    }
}

const NAMES: [&str; 6] = ["rsa", "p256", "p256_compressed", "p384", "ed25519", "ed448"];

#[test]
fn matching_certificates_are_accepted() {
    for name in NAMES {
        let jwk = Jwk::from_value(full(name), &POLICY).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(jwk.kid(), name);
        // Without the thumbprints too.
        let bare = without(without(full(name), "x5t"), "x5t#S256");
        Jwk::from_value(bare, &POLICY).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // The RSA chain has two certificates; the second is only parsed.
    assert_eq!(fixture("rsa")["x5c"].as_array().unwrap().len(), 2);
}

#[test]
fn certificate_of_another_key_is_refused() {
    let swap = |jwk: &str, cert: &str| err(with(full(jwk), "x5c", fixture(cert)["x5c"].clone()));
    let swap_bare = |jwk: &str, cert: &str| {
        let base = without(without(full(jwk), "x5t"), "x5t#S256");
        err(with(base, "x5c", fixture(cert)["x5c"].clone()))
    };
    for (jwk, cert, detail) in [
        ("rsa", "rsa_other", "another RSA key"),
        ("p256", "p256_compressed", "another P-256 key"),
        ("p256_compressed", "p256", "another P-256 key"),
        ("p256", "p384", "it has an EC P-384 key"),
        ("p384", "p256", "it has an EC P-256 key"),
        ("rsa", "p256", "it has an EC P-256 key"),
        ("p256", "rsa", "it has an RSA key"),
        ("ed25519", "ed448", "it has an Ed448 key"),
        ("ed448", "ed25519", "it has an Ed25519 key"),
        ("ed25519", "rsa", "it has an RSA key"),
    ] {
        let e = swap_bare(jwk, cert);
        assert!(
            e.contains(x5c::MISMATCH) && e.contains(detail),
            "{jwk}/{cert}: {e}"
        );
        // With the thumbprints of the JWK's own certificate, those are refused first.
        assert!(swap(jwk, cert).contains("thumbprint"), "{jwk}/{cert}");
    }
    // The error names the key.
    let e = swap_bare("rsa", "rsa_other");
    assert!(e.contains("'rsa'"), "{e}");
}

#[test]
fn unparseable_certificates_are_refused() {
    let rsa = without(without(full("rsa"), "x5t"), "x5t#S256");
    let chain = fixture("rsa")["x5c"].clone();
    let leaf = chain[0].as_str().unwrap();
    let ca = chain[1].as_str().unwrap();
    let der = |b64: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    };
    let enc = |der: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(der)
    };
    // Valid base64, not DER at all.
    assert!(err(with(rsa.clone(), "x5c", json!(["MIIB"]))).contains("x5c[0] is not a DER X.509"));
    assert!(err(with(rsa.clone(), "x5c", json!(["AAAA"]))).contains("x5c[0] is not a DER X.509"));
    // Truncated, and with trailing bytes.
    let mut cut = der(leaf);
    cut.truncate(cut.len() - 1);
    assert!(err(with(rsa.clone(), "x5c", json!([enc(&cut)]))).contains("x5c[0] is not a DER"));
    let mut long = der(leaf);
    long.push(0);
    assert!(err(with(rsa.clone(), "x5c", json!([enc(&long)]))).contains("x5c[0] is not a DER"));
    // One flipped byte inside the leaf's structure.
    let mut flipped = der(leaf);
    flipped[1] ^= 0x40;
    assert!(err(with(rsa.clone(), "x5c", json!([enc(&flipped)]))).contains("x5c[0]"));
    // A bad certificate further down the chain is refused too, but not validated.
    assert!(err(with(rsa.clone(), "x5c", json!([leaf, "MIIB"]))).contains("x5c[1] is not a DER"));
    Jwk::from_value(with(rsa.clone(), "x5c", json!([leaf, ca, ca])), &POLICY).unwrap();
    // Not a JSON array of non-empty standard base64 strings, or too many.
    assert!(err(with(rsa.clone(), "x5c", json!([]))).contains("1 to 10"));
    assert!(err(with(rsa.clone(), "x5c", json!(vec![leaf; 11]))).contains("1 to 10"));
    assert!(err(with(rsa.clone(), "x5c", json!([""]))).contains("must not be empty"));
    assert!(err(with(rsa.clone(), "x5c", json!([1]))).contains("array of strings"));
    assert!(err(with(rsa.clone(), "x5c", json!(leaf))).contains("array of strings"));
    let url_safe = leaf.replace('+', "-").replace('/', "_");
    assert_ne!(url_safe, leaf);
    assert!(err(with(rsa, "x5c", json!([url_safe]))).contains("standard base64"));
}

#[test]
fn thumbprints_must_be_those_of_the_first_certificate() {
    for name in NAMES {
        let other = if name == "rsa" { "rsa_other" } else { "rsa" };
        let wrong_sha1 = fixture(other)["x5t"].clone();
        let wrong_sha256 = fixture(other)["x5t#S256"].clone();
        let e = err(with(full(name), "x5t", wrong_sha1.clone()));
        assert!(
            e.contains("'x5t' is not the SHA-1 thumbprint"),
            "{name}: {e}"
        );
        let e = err(with(full(name), "x5t#S256", wrong_sha256.clone()));
        assert!(
            e.contains("'x5t#S256' is not the SHA-256 thumbprint"),
            "{name}: {e}"
        );
        // Each thumbprint alone is checked.
        let only_sha1 = without(full(name), "x5t#S256");
        Jwk::from_value(only_sha1.clone(), &POLICY).unwrap();
        assert!(err(with(only_sha1, "x5t", wrong_sha1)).contains("SHA-1"));
        let only_sha256 = without(full(name), "x5t");
        Jwk::from_value(only_sha256.clone(), &POLICY).unwrap();
        assert!(err(with(only_sha256, "x5t#S256", wrong_sha256)).contains("SHA-256"));
    }
    // The thumbprint of the second certificate of the chain is not the first's.
    let f = fixture("rsa");
    let ders: Vec<Value> = f["x5c"].as_array().unwrap().clone();
    let reversed = with(
        without(full("rsa"), "x5t#S256"),
        "x5c",
        json!([ders[1], ders[0]]),
    );
    assert!(err(reversed).contains("thumbprint"));
    // Lengths are checked with or without x5c.
    let sha1 = fixture("rsa")["x5t"].clone();
    assert!(err(with(full("rsa"), "x5t#S256", sha1)).contains("32-octet"));
    let short = b64::encode_url(&[1u8; 19]);
    assert!(err(with(rfc7517_rsa(), "x5t", json!(short))).contains("20-octet"));
    assert!(err(with(full("rsa"), "x5t", json!("not base64!"))).contains("base64url"));
}

#[test]
fn x5c_keys_round_trip_through_documents() {
    let keys: Vec<Value> = NAMES.iter().map(|n| full(n)).collect();
    let doc = json!({ "keys": keys }).to_string();
    let jwks = parse_document(&doc, &POLICY).unwrap();
    assert_eq!(jwks.len(), NAMES.len());
    for jwk in &jwks {
        let again = Jwk::parse(jwk.json().get(), &POLICY).unwrap();
        assert_eq!(&again, jwk);
    }
}

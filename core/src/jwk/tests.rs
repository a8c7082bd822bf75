#[cfg(test)] // a test-only module (declared under #[cfg(test)] by its parent)
use serde_json::{json, Value};

use super::fixtures::*;
use super::*;
use crate::error::Error;

fn parse(v: Value) -> Result<Jwk> {
    Jwk::from_value(v, &POLICY)
}

fn err(v: Value) -> String {
    match parse(v) {
        Ok(j) => panic!("accepted {:?}", j.members()),
        Err(e) => e.to_string(),
    }
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

fn without(mut base: Value, key: &str) -> Value {
    base.as_object_mut().map(|m| m.remove(key));
    base
}

#[test]
fn rfc7638_thumbprint_vector() {
    let jwk = parse(without(rfc7517_rsa(), "kid")).unwrap();
    assert_eq!(jwk.kid(), RFC7638_THUMBPRINT);
    assert_eq!(jwk.member_str("kid"), Some(RFC7638_THUMBPRINT));
}

#[test]
fn rfc8037_thumbprint_vector() {
    let jwk = parse(rfc8037_ed25519()).unwrap();
    assert_eq!(jwk.kid(), RFC8037_THUMBPRINT);
}

#[test]
fn rfc7517_examples_are_accepted() {
    assert_eq!(parse(rfc7517_rsa()).unwrap().kid(), "2011-04-29");
    assert_eq!(parse(rfc7517_ec()).unwrap().kid(), "1");
}

#[test]
fn generated_keys_are_valid() {
    for k in 1..20 {
        parse(ec(&format!("e{k}"), k)).unwrap();
        parse(rsa(&format!("r{k}"), k, 2048)).unwrap();
    }
    parse(rsa("big", 1, 4096)).unwrap();
}

#[test]
fn private_members_are_refused() {
    for m in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
        let e = err(with(rfc7517_rsa(), m, json!("AQAB")));
        assert!(e.contains(&format!("private member '{m}'")), "{e}");
    }
}

#[test]
fn oct_and_unknown_kty_are_refused() {
    assert!(err(json!({"kty": "oct", "k": "AAAA"})).contains("private member"));
    assert!(err(json!({"kty": "oct"})).contains("'oct' keys"));
    assert!(err(json!({"kty": "DSA"})).contains("unsupported kty"));
    assert!(err(json!({"kty": 1})).contains("'kty' must be a string"));
    assert!(err(json!({})).contains("missing 'kty'"));
    assert!(err(json!([1])).contains("JSON object"));
}

#[test]
fn rsa_checks() {
    let e = err(rsa("short", 1, 1024));
    assert!(e.contains("1024 bits, at least 2048"), "{e}");
    assert!(Jwk::from_value(rsa("short", 1, 1024), &Policy { min_rsa_bits: 1024 }).is_ok());
    assert!(err(with(rfc7517_rsa(), "e", json!("AQAB=="))).contains("unpadded base64url"));
    assert!(err(with(rfc7517_rsa(), "e", json!("Ag"))).contains("odd"));
    assert!(err(with(rfc7517_rsa(), "e", json!("AAEAAQ"))).contains("leading zero"));
    assert!(err(with(rfc7517_rsa(), "n", json!(""))).contains("empty"));
    assert!(err(without(rfc7517_rsa(), "n")).contains("missing 'n'"));
    assert!(err(with(rfc7517_rsa(), "n", json!(5))).contains("'n' must be a string"));
    let mut n = RFC7517_RSA_N.to_string();
    n.insert_str(0, "AA");
    assert!(err(with(rfc7517_rsa(), "n", json!(n))).contains("leading zero"));
    assert!(err(with(rfc7517_rsa(), "n", json!("a+b/"))).contains("base64url"));
}

#[test]
fn ec_checks() {
    let off_curve = with(rfc7517_ec(), "y", json!(RFC7517_EC_X));
    assert!(err(off_curve).contains("not on P-256"));
    assert!(err(with(rfc7517_ec(), "x", json!("AAAA"))).contains("32 octets"));
    assert!(err(with(rfc7517_ec(), "crv", json!("P-192"))).contains("unsupported EC crv"));
    assert!(err(with(rfc7517_ec(), "crv", json!("P-384"))).contains("48 octets"));
    assert!(err(without(rfc7517_ec(), "y")).contains("missing 'y'"));
}

#[test]
fn okp_checks() {
    assert!(err(with(rfc8037_ed25519(), "x", json!("AAAA"))).contains("32 octets"));
    assert!(err(with(rfc8037_ed25519(), "crv", json!("X25519"))).contains("unsupported OKP"));
    assert!(err(with(rfc8037_ed25519(), "use", json!("enc"))).contains("only sign"));
    // y = 2 has no x on Ed25519 (2 is not a valid y coordinate's square ratio).
    let mut bad = [0u8; 32];
    bad[0] = 2;
    let x = b64::encode_url(&bad);
    assert!(err(with(rfc8037_ed25519(), "x", json!(x))).contains("not a point"));
}

#[test]
fn alg_and_use_must_fit() {
    assert!(err(with(rfc7517_rsa(), "alg", json!("ES256"))).contains("does not fit"));
    assert!(err(with(rfc7517_ec(), "alg", json!("ES384"))).contains("does not fit"));
    assert!(err(with(rfc7517_rsa(), "alg", json!("none"))).contains("never acceptable"));
    assert!(err(with(rfc7517_rsa(), "alg", json!("HS256"))).contains("unknown alg"));
    assert!(err(with(rfc7517_rsa(), "use", json!("enc"))).contains("'use' is 'enc'"));
    assert!(err(with(rfc7517_rsa(), "use", json!("both"))).contains("'sig' or 'enc'"));
    parse(with(
        with(rfc7517_rsa(), "alg", json!("RSA-OAEP")),
        "use",
        json!("enc"),
    ))
    .unwrap();
    parse(with(rfc7517_ec(), "alg", json!("ECDH-ES"))).unwrap();
    parse(with(rfc8037_ed25519(), "alg", json!("EdDSA"))).unwrap();
}

#[test]
fn key_ops_x5c_x5t() {
    parse(with(rfc7517_rsa(), "key_ops", json!(["verify"]))).unwrap();
    assert!(err(with(rfc7517_rsa(), "key_ops", json!(["sign"]))).contains("private-key"));
    assert!(err(with(rfc7517_rsa(), "key_ops", json!(["verify", "verify"]))).contains("repeats"));
    assert!(err(with(rfc7517_rsa(), "key_ops", json!(["encrypt"]))).contains("inconsistent"));
    assert!(err(with(rfc7517_rsa(), "key_ops", json!("verify"))).contains("array"));
    // Valid base64 but no certificate (the x5c checks proper are in x5c_tests.rs).
    assert!(err(with(rfc7517_rsa(), "x5c", json!(["MIIB"]))).contains("not a DER X.509"));
    assert!(err(with(rfc7517_rsa(), "x5c", json!([]))).contains("1 to 10"));
    assert!(err(with(rfc7517_rsa(), "x5c", json!(["***"]))).contains("standard base64"));
    let sha1 = b64::encode_url(&[7u8; 20]);
    parse(with(rfc7517_rsa(), "x5t", json!(sha1))).unwrap();
    assert!(err(with(rfc7517_rsa(), "x5t#S256", json!(sha1))).contains("32-octet"));
}

#[test]
fn unknown_members_and_bad_kids() {
    let e = err(with(rfc7517_rsa(), "crv", json!("P-256")));
    assert!(
        e.contains("unknown member 'crv'") && e.contains("'2011-04-29'"),
        "{e}"
    );
    assert!(err(with(rfc7517_rsa(), "x5u", json!("https://x"))).contains("unknown member"));
    assert!(err(with(rfc7517_rsa(), "kid", json!(""))).contains("empty"));
    assert!(err(with(rfc7517_rsa(), "kid", json!(7))).contains("'kid' must be a string"));
    assert!(err(with(rfc7517_rsa(), "kid", json!("a\nb"))).contains("control"));
    assert!(err(with(rfc7517_rsa(), "kid", json!("k".repeat(300)))).contains("longer"));
}

#[test]
fn text_parsing_limits() {
    assert!(matches!(Jwk::parse("{", &POLICY), Err(Error::Jwk(_))));
    let deep = "[".repeat(10_000);
    assert!(Jwk::parse(&deep, &POLICY).is_err());
    let huge = format!(
        "{{\"kty\":\"RSA\",\"n\":\"{}\"}}",
        "A".repeat(MAX_JWK_BYTES)
    );
    assert!(matches!(
        Jwk::parse(&huge, &POLICY),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn documents() {
    let doc = json!({"keys": [rfc7517_rsa(), rfc7517_ec()]}).to_string();
    assert_eq!(parse_document(&doc, &POLICY).unwrap().len(), 2);
    let dup = json!({"keys": [rfc7517_rsa(), rfc7517_rsa()]}).to_string();
    assert!(matches!(
        parse_document(&dup, &POLICY),
        Err(Error::DuplicateKid(_))
    ));
    assert!(parse_document("[]", &POLICY).is_err());
    assert!(parse_document("{\"keys\":{}}", &POLICY).is_err());
    assert!(parse_document("{\"keys\":[],\"x\":1}", &POLICY).is_err());
    assert_eq!(parse_document("{\"keys\":[]}", &POLICY).unwrap().len(), 0);
}

#[test]
fn documents_with_too_many_keys_are_refused_before_any_key_is_validated() {
    use crate::jwk::MAX_KEYS;
    // 5,000 keys, each of which would take time to validate (and the first of which is
    // invalid): the count alone refuses the document.
    let mut keys = vec![json!({"kty": "nonsense"})];
    keys.extend((1..5_000).map(|i| with(rfc8037_ed25519(), "kid", json!(format!("k{i}")))));
    let doc = json!({ "keys": keys }).to_string();
    assert!(doc.len() <= MAX_DOCUMENT_BYTES);
    assert_eq!(
        parse_document(&doc, &POLICY),
        Err(Error::TooManyKeys(MAX_KEYS))
    );
    // The limit itself: MAX_KEYS keys are accepted, one more is refused.
    let keys: Vec<Value> = (1..=MAX_KEYS as u64 + 1)
        .map(|i| rsa(&format!("r{i}"), i, 2048))
        .collect();
    let doc = json!({ "keys": keys[..MAX_KEYS] }).to_string();
    assert_eq!(parse_document(&doc, &POLICY).unwrap().len(), MAX_KEYS);
    let doc = json!({ "keys": keys }).to_string();
    assert_eq!(
        parse_document(&doc, &POLICY),
        Err(Error::TooManyKeys(MAX_KEYS))
    );
}

#[test]
fn same_key_ignores_optional_members() {
    let a = parse(rfc7517_rsa()).unwrap();
    let b = parse(with(rfc7517_rsa(), "use", json!("sig"))).unwrap();
    let c = parse(with(rsa("2011-04-29", 9, 2048), "alg", json!("RS256"))).unwrap();
    assert!(a.same_key(&b));
    assert!(!a.same_key(&c));
}

#[test]
fn hardening_fuzz_seeds_are_what_their_names_say() {
    let seed = |dir: &str, name: &str| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/seeds")
            .join(dir)
            .join(name);
        std::fs::read_to_string(path).unwrap()
    };
    for (name, why) in [
        ("ed25519_small_order", "small-order"),
        ("ed25519_order8", "small-order"),
        ("ed25519_non_canonical", "non-canonical"),
        ("ed448_small_order", "small-order"),
        (
            "x5c_mismatch",
            "the first x5c certificate's key is not this JWK's key",
        ),
        ("x5c", "not the SHA-1 thumbprint"),
    ] {
        let e = Jwk::parse(&seed("jwk", name), &POLICY)
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{name}: {e}");
    }
    for name in [
        "ed448_rfc8032",
        "x5c_rsa_chain",
        "x5c_p256_compressed",
        "x5c_ed448",
    ] {
        Jwk::parse(&seed("jwk", name), &POLICY).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert_eq!(
        parse_document(&seed("document", "x5c_and_eddsa"), &POLICY)
            .unwrap()
            .len(),
        5
    );
    assert_eq!(
        parse_document(&seed("document", "too_many_keys"), &POLICY),
        Err(Error::TooManyKeys(MAX_KEYS))
    );
}

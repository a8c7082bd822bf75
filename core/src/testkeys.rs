//! Deterministic public JWKs for tests, benchmarks and fuzz seeds (never for production:
//! the RSA moduli are random odd numbers, not products of primes, which is all the module
//! checks and all a test needs).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// RFC 7517 Appendix A.1 RSA key; its RFC 7638 thumbprint is [`RFC7638_THUMBPRINT`].
pub const RFC7517_RSA_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
pub const RFC7638_THUMBPRINT: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
/// RFC 7517 Appendix A.1 EC key.
pub const RFC7517_EC_X: &str = "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4";
pub const RFC7517_EC_Y: &str = "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM";
/// RFC 8037 Appendix A.2 Ed25519 public key and its A.3 thumbprint.
pub const RFC8037_ED25519_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
pub const RFC8037_THUMBPRINT: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";

pub fn rfc7517_rsa() -> Value {
    json!({"kty": "RSA", "n": RFC7517_RSA_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"})
}

pub fn rfc7517_ec() -> Value {
    json!({"kty": "EC", "crv": "P-256", "x": RFC7517_EC_X, "y": RFC7517_EC_Y, "use": "enc", "kid": "1"})
}

pub fn rfc8037_ed25519() -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_ED25519_X})
}

/// An RSA public JWK with a `bits`-bit modulus derived from `seed`.
pub fn rsa(kid: &str, seed: u64, bits: usize) -> Value {
    let len = bits.div_ceil(8);
    let mut n = Vec::with_capacity(len + 32);
    let mut counter = 0u64;
    while n.len() < len {
        let mut h = Sha256::new();
        h.update(seed.to_be_bytes());
        h.update(counter.to_be_bytes());
        n.extend_from_slice(&h.finalize());
        counter += 1;
    }
    n.truncate(len);
    let top_bit = (bits - 1) % 8;
    n[0] &= (1u16 << (top_bit + 1)).wrapping_sub(1) as u8;
    n[0] |= 1 << top_bit;
    n[len - 1] |= 1;
    json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
           "n": URL_SAFE_NO_PAD.encode(&n), "e": "AQAB"})
}

/// A P-256 public JWK: the point `k`·G, so every `k` >= 1 gives a distinct valid key.
pub fn ec(kid: &str, k: u64) -> Value {
    let point = (p256::ProjectivePoint::GENERATOR * p256::Scalar::from(k.max(1))).to_affine();
    let encoded = point.to_encoded_point(false);
    let (x, y) = (encoded.x(), encoded.y());
    let (x, y) = match (x, y) {
        (Some(x), Some(y)) => (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y)),
        _ => (String::new(), String::new()),
    };
    json!({"kty": "EC", "kid": kid, "crv": "P-256", "use": "sig", "alg": "ES256", "x": x, "y": y})
}

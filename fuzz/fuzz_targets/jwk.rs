//! One JWK as ADD receives it: any bytes must give Ok or an error, never a panic, and an
//! accepted key must have a kid and no private member.
#![no_main]
use libfuzzer_sys::fuzz_target;
use redis_jwks_core::jwk::{Jwk, Policy};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for min_rsa_bits in [0, 2048] {
        if let Ok(jwk) = Jwk::parse(text, &Policy { min_rsa_bits }) {
            assert!(!jwk.kid().is_empty());
            for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
                assert!(!jwk.members().contains_key(private));
            }
        }
    }
});

//! A JWKS document as REPLACE receives it, then applied to a key set: no panic, and an
//! applied set renders to a document that parses back to the same kids.
#![no_main]
use libfuzzer_sys::fuzz_target;
use redis_jwks_core::jwk::{parse_document, Policy};
use redis_jwks_core::keyset::{KeySet, Op, RSA_FLOOR_BITS};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The lowest floor any configuration allows: what a stored key set is re-validated with.
    let policy = Policy { min_rsa_bits: RSA_FLOOR_BITS };
    let Ok(jwks) = parse_document(text, &policy) else { return };
    let Ok((set, _)) = KeySet::default().apply(&[Op::Replace(jwks)], 0, false) else { return };
    let rendered = set.render();
    let back = parse_document(&rendered, &policy).expect("rendered JWKS parses");
    assert_eq!(back.len(), set.published_kids().len());
    assert_eq!(KeySet::from_stored(&set.to_stored()).expect("round trip"), set);
});

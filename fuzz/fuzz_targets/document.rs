//! A JWKS document as REPLACE receives it, then applied to a key set: no panic, and an
//! applied set renders to a document that parses back to the same kids.
#![no_main]
use libfuzzer_sys::fuzz_target;
use redis_jwks_core::jwk::{parse_document, Policy};
use redis_jwks_core::keyset::{KeySet, Op};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(jwks) = parse_document(text, &Policy { min_rsa_bits: 0 }) else { return };
    let Ok((set, _)) = KeySet::default().apply(&[Op::Replace(jwks)], 0, false) else { return };
    let rendered = set.render();
    let back = parse_document(&rendered, &Policy { min_rsa_bits: 0 }).expect("rendered JWKS parses");
    assert_eq!(back.len(), set.published_kids().len());
    assert_eq!(KeySet::from_stored(&set.to_stored()).expect("round trip"), set);
});

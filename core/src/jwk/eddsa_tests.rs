//! Test-only: declared under #[cfg(test)] by jwk/mod.rs.
//! Ed25519 and Ed448 public points: small-order, mixed-order, non-canonical and invalid
//! encodings are refused; the RFC 8037 / RFC 8032 keys are accepted.

use serde_json::json;

use super::b64::encode_url;
use super::fixtures::*;
use super::*;

fn okp(crv: &str, x: &[u8]) -> Result<Jwk> {
    Jwk::from_value(
        json!({"kty": "OKP", "crv": crv, "x": encode_url(x), "kid": "k"}),
        &POLICY,
    )
}

fn refused(crv: &str, x: &[u8], why: &str) {
    match okp(crv, x) {
        Ok(_) => panic!("{crv} point {} accepted", hex(x)),
        Err(e) => assert!(
            e.to_string().contains(why),
            "{crv} point {}: {e} (wanted {why:?})",
            hex(x)
        ),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(h: &str) -> [u8; N] {
    let v: Vec<u8> = (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

// ---- Ed25519 ----

/// The 8 points of order 1, 2, 4 and 8, canonically encoded (as listed in "Taming the
/// many EdDSAs", Chalkias et al. 2020, and libsodium's blocklist); the test checks each
/// one's order independently.
const ED25519_SMALL_ORDER: [&str; 8] = [
    "0100000000000000000000000000000000000000000000000000000000000000", // identity
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // order 2: y = -1
    "0000000000000000000000000000000000000000000000000000000000000000", // order 4: y = 0
    "0000000000000000000000000000000000000000000000000000000000000080", // order 4: y = 0, -x
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", // order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa", // order 8
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", // order 8
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85", // order 8
];

/// y = p + k (p = 2^255 - 19), which encodes y = k: possible for k < 19.
fn ed25519_p_plus(k: u8) -> [u8; 32] {
    let mut b = [0xff; 32];
    b[0] = 0xed + k;
    b[31] = 0x7f;
    b
}

#[test]
fn ed25519_rfc8037_key_is_accepted() {
    let x: [u8; 32] = b64::decode_url("x", RFC8037_ED25519_X)
        .unwrap()
        .try_into()
        .unwrap();
    okp("Ed25519", &x).unwrap();
    // The 8 torsion points really are of order dividing 8 and distinct.
    let mut seen = Vec::new();
    for h in ED25519_SMALL_ORDER {
        let p = curve25519_dalek::edwards::CompressedEdwardsY(unhex(h))
            .decompress()
            .unwrap();
        assert!(
            curve25519_dalek::traits::IsIdentity::is_identity(&p.mul_by_cofactor()),
            "{h}"
        );
        assert!(!seen.contains(&p), "{h}");
        seen.push(p);
    }
}

#[test]
fn ed25519_small_order_points_are_refused() {
    for h in ED25519_SMALL_ORDER {
        refused("Ed25519", &unhex::<32>(h), "small-order Ed25519 point");
    }
}

#[test]
fn ed25519_non_canonical_encodings_are_refused() {
    let negative_zero = |h: &str| {
        let mut b = unhex::<32>(h);
        b[31] |= 0x80;
        b
    };
    // x = 0 with the sign bit set: the identity and the point of order 2.
    refused(
        "Ed25519",
        &negative_zero(ED25519_SMALL_ORDER[0]),
        "non-canonical",
    );
    refused(
        "Ed25519",
        &negative_zero(ED25519_SMALL_ORDER[1]),
        "non-canonical",
    );
    // y = p (the order-4 points' y = 0) and y = p + 1 (the identity), either sign.
    for k in [0, 1] {
        refused("Ed25519", &ed25519_p_plus(k), "non-canonical");
        let mut signed = ed25519_p_plus(k);
        signed[31] |= 0x80;
        refused("Ed25519", &signed, "non-canonical");
    }
    // y = p + k for the other k < 19 whose y is on the curve: points of large order,
    // encoded non-canonically.
    let mut large = 0;
    for k in 2..19 {
        let bytes = ed25519_p_plus(k);
        if curve25519_dalek::edwards::CompressedEdwardsY(bytes)
            .decompress()
            .is_some()
        {
            refused("Ed25519", &bytes, "non-canonical");
            large += 1;
        } else {
            refused("Ed25519", &bytes, "not a point");
        }
    }
    assert!(large > 0);
}

#[test]
fn ed25519_mixed_order_points_are_refused() {
    let x = b64::decode_url("x", RFC8037_ED25519_X).unwrap();
    let a = curve25519_dalek::edwards::CompressedEdwardsY(x.try_into().unwrap())
        .decompress()
        .unwrap();
    for h in &ED25519_SMALL_ORDER[1..] {
        let t = curve25519_dalek::edwards::CompressedEdwardsY(unhex(h))
            .decompress()
            .unwrap();
        let mixed = (a + t).compress().to_bytes();
        refused("Ed25519", &mixed, "prime-order subgroup");
    }
}

#[test]
fn ed25519_invalid_points_and_sizes_are_refused() {
    refused("Ed25519", &[0u8; 31], "32 octets");
    refused("Ed25519", &[0u8; 57], "32 octets");
    let mut y2 = [0u8; 32];
    y2[0] = 2;
    refused("Ed25519", &y2, "not a point");
}

// ---- Ed448 ----

/// RFC 8032 §7.4 public keys (the 1-octet key serves two vectors; the last is §7.5's).
const RFC8032_ED448: [&str; 9] = [
    "5fd7449b59b461fd2ce787ec616ad46a1da1342485a70e1f8a0ea75d80e96778edf124769b46c7061bd6783df1e50f6cd1fa1abeafe8256180",
    "43ba28f430cdff456ae531545f7ecd0ac834a55d9358c0372bfa0c6c6798c0866aea01eb00742802b8438ea4cb82169c235160627b4c3a9480",
    "dcea9e78f35a1bf3499a831b10b86c90aac01cd84b67a0109b55a36e9328b1e365fce161d71ce7131a543ea4cb5f7e9f1d8b00696447001400",
    "3ba16da0c6f2cc1f30187740756f5e798d6bc5fc015d7c63cc9510ee3fd44adc24d8e968b6e46e6f94d19b945361726bd75e149ef09817f580",
    "b3da079b0aa493a5772029f0467baebee5a8112d9d3a22532361da294f7bb3815c5dc59e176b4d9f381ca0938e13c6c07b174be65dfa578e80",
    "df9705f58edbab802c7f8363cfe5560ab1c6132c20a9f1dd163483a26f8ac53a39d6808bf4a1dfbd261b099bb03b3fb50906cb28bd8a081f00",
    "79756f014dcfe2079f5dd9e718be4171e2ef2486a08f25186f6bff43a9936b9bfe12402b08ae65798a3d81e22e9ec80e7690862ef3d4ed3a00",
    "a81b2e8a70a5ac94ffdbcc9badfc3feb0801f258578bb114ad44ece1ec0e799da08effb81c5d685c0c56f64eecaef8cdf11cc38737838cf400",
    "259b71c19f83ef77a7abd26524cbdb3161b590a48f7d17de3ee0ba9c52beb743c09428a131d6b1b57303d90d8132c276d5ed3d5d01c0f53880",
];

/// y = k, sign bit as given.
fn ed448_y(k: u8, negative: bool) -> [u8; 57] {
    let mut b = [0u8; 57];
    b[0] = k;
    b[56] = if negative { 0x80 } else { 0 };
    b
}

/// y = p - 1 = -1 (p = 2^448 - 2^224 - 1).
fn ed448_minus_one(negative: bool) -> [u8; 57] {
    let mut b = [0xff; 57];
    b[0] = 0xfe;
    b[28] = 0xfe;
    b[56] = if negative { 0x80 } else { 0 };
    b
}

/// y = p + k for 1 <= k <= 255, which encodes y = k (fits: p + k < 2^448).
fn ed448_p_plus(k: u8) -> [u8; 57] {
    let mut b = [0u8; 57];
    b[0] = k - 1;
    b[28..56].fill(0xff);
    b
}

fn ed448_decode(b: [u8; 57]) -> Option<ed448_goldilocks::EdwardsPoint> {
    let p: Option<ed448_goldilocks::AffinePoint> = ed448_goldilocks::CompressedEdwardsY(b)
        .decompress_unchecked()
        .into();
    p.map(|p| p.to_edwards())
}

#[test]
fn ed448_rfc8032_keys_are_accepted() {
    for h in RFC8032_ED448 {
        okp("Ed448", &unhex::<57>(h)).unwrap_or_else(|e| panic!("{h}: {e}"));
    }
}

#[test]
fn ed448_small_order_points_are_refused() {
    // The 4 points of order 1, 2 and 4: (0, 1), (0, -1), (1, 0) and (-1, 0).
    let small = [
        ed448_y(1, false),
        ed448_minus_one(false),
        ed448_y(0, false),
        ed448_y(0, true),
    ];
    for b in small {
        let p = ed448_decode(b).unwrap();
        assert_eq!(
            p.double().double(),
            ed448_goldilocks::EdwardsPoint::IDENTITY
        );
        refused("Ed448", &b, "small-order Ed448 point");
    }
}

#[test]
fn ed448_non_canonical_encodings_are_refused() {
    // x = 0 with the sign bit set.
    refused("Ed448", &ed448_y(1, true), "non-canonical");
    refused("Ed448", &ed448_minus_one(true), "non-canonical");
    // y >= p: p + 1 (the identity), p (y = 0), and p + k for points of large order.
    refused("Ed448", &ed448_p_plus(1), "non-canonical");
    let mut p = [0xff; 57];
    p[28] = 0xfe;
    p[56] = 0;
    refused("Ed448", &p, "non-canonical");
    let mut large = 0;
    for k in 2..=255u8 {
        let canonical = ed448_y(k, false);
        if ed448_decode(canonical).is_some() {
            refused("Ed448", &ed448_p_plus(k), "non-canonical");
            large += 1;
        }
    }
    assert!(large > 0);
    // The 7 unused bits of the last octet must be zero.
    for bit in 0..7 {
        let mut b = unhex::<57>(RFC8032_ED448[0]);
        b[56] |= 1 << bit;
        refused("Ed448", &b, "non-canonical");
    }
}

#[test]
fn ed448_mixed_order_points_are_refused() {
    let a = ed448_decode(unhex(RFC8032_ED448[0])).unwrap();
    for t in [ed448_minus_one(false), ed448_y(0, false), ed448_y(0, true)] {
        let mixed = (a + ed448_decode(t).unwrap()).to_affine().compress().0;
        refused("Ed448", &mixed, "prime-order subgroup");
    }
}

#[test]
fn ed448_invalid_points_and_sizes_are_refused() {
    refused("Ed448", &[0u8; 56], "57 octets");
    refused("Ed448", &[0u8; 32], "57 octets");
    let mut not_on_curve = 0;
    for k in 2..=255u8 {
        if ed448_decode(ed448_y(k, false)).is_none() {
            refused("Ed448", &ed448_y(k, false), "not a point on Ed448");
            not_on_curve += 1;
        }
    }
    assert!(not_on_curve > 0);
}

#[test]
fn multiples_of_the_base_point_are_accepted_and_their_torsion_translates_refused() {
    use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
    let torsion = curve25519_dalek::edwards::CompressedEdwardsY(unhex(ED25519_SMALL_ORDER[4]))
        .decompress()
        .unwrap();
    let mut a = ED25519_BASEPOINT_POINT;
    let mut b = ed448_goldilocks::EdwardsPoint::GENERATOR;
    let order4 = ed448_decode(ed448_y(0, true)).unwrap();
    for _ in 0..32 {
        okp("Ed25519", a.compress().as_bytes()).unwrap();
        refused(
            "Ed25519",
            (a + torsion).compress().as_bytes(),
            "prime-order subgroup",
        );
        okp("Ed448", &b.to_affine().compress().0).unwrap();
        refused(
            "Ed448",
            &(b + order4).to_affine().compress().0,
            "prime-order subgroup",
        );
        a = a + a + ED25519_BASEPOINT_POINT;
        b = b.double() + ed448_goldilocks::EdwardsPoint::GENERATOR;
    }
}

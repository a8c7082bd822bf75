//! The public point of an OKP signing key (RFC 8037 §2): Ed25519 and Ed448.
//!
//! A point that merely decodes is not enough. Verifiers differ on how they treat small-order
//! points, points with a torsion component and non-canonical encodings ("Taming the many
//! EdDSAs", Chalkias et al. 2020), and under a small-order key a lax verifier accepts
//! forged signatures: a signature made with such a key proves nothing. An honest key is
//! `[s]B` for a secret scalar `s`, so it is canonically encoded and in the prime-order
//! subgroup; anything else is refused here. The input is public, so nothing needs constant
//! time.

use crate::error::{Error, Result};

/// Ed25519 (RFC 8032 §5.1.3), in order:
/// 1. 32 octets;
/// 2. the y-coordinate has an x on the curve (`decompress`);
/// 3. the encoding is canonical: re-encoding the decoded point gives the same octets. This
///    refuses y >= p (y + p encodes the same y for y < 19) and x = 0 with the sign bit set
///    ("negative zero", for y = 1 and y = -1);
/// 4. the point is not of small order (1, 2, 4 or 8: the 8 torsion points);
/// 5. the point is in the prime-order subgroup (no torsion component): `[l]A` is the
///    identity.
pub(super) fn check_ed25519(x: &[u8]) -> Result<()> {
    use curve25519_dalek::edwards::CompressedEdwardsY;
    let bytes: [u8; 32] = x
        .try_into()
        .map_err(|_| Error::Jwk(format!("Ed25519 'x' must be 32 octets, not {}", x.len())))?;
    let Some(point) = CompressedEdwardsY(bytes).decompress() else {
        return Err(Error::Jwk("'x' is not a point on Ed25519".into()));
    };
    if point.compress().to_bytes() != bytes {
        return Err(Error::Jwk(
            "'x' is a non-canonical encoding of an Ed25519 point".into(),
        ));
    }
    if point.is_small_order() {
        return Err(Error::Jwk(
            "'x' is a small-order Ed25519 point: signatures under it can be forged".into(),
        ));
    }
    if !point.is_torsion_free() {
        return Err(Error::Jwk(
            "'x' is not in the prime-order subgroup of Ed25519".into(),
        ));
    }
    Ok(())
}

/// Ed448 (RFC 8032 §5.2.3), in order:
/// 1. 57 octets;
/// 2. the y-coordinate (the first 56 octets, little-endian) has an x on the curve:
///    x^2 = (y^2 - 1) / (d y^2 - 1) has a root (`decompress_unchecked`);
/// 3. the encoding is canonical: re-encoding the decoded point gives the same octets. This
///    refuses y >= p, x = 0 with the sign bit set (y = 1 and y = -1), and any of the 7
///    unused low bits of the last octet set;
/// 4. the point is not of small order (1, 2 or 4; the cofactor is 4): `[4]A` is not the
///    identity;
/// 5. the point is in the prime-order subgroup (no torsion component).
pub(super) fn check_ed448(x: &[u8]) -> Result<()> {
    use ed448_goldilocks::{AffinePoint, CompressedEdwardsY, EdwardsPoint};
    let bytes: [u8; 57] = x
        .try_into()
        .map_err(|_| Error::Jwk(format!("Ed448 'x' must be 57 octets, not {}", x.len())))?;
    let decoded: Option<AffinePoint> = CompressedEdwardsY(bytes).decompress_unchecked().into();
    let Some(affine) = decoded else {
        return Err(Error::Jwk("'x' is not a point on Ed448".into()));
    };
    if affine.compress().0 != bytes {
        return Err(Error::Jwk(
            "'x' is a non-canonical encoding of an Ed448 point".into(),
        ));
    }
    let point = affine.to_edwards();
    if !bool::from(point.is_on_curve()) {
        return Err(Error::Jwk("'x' is not a point on Ed448".into()));
    }
    if point.double().double() == EdwardsPoint::IDENTITY {
        return Err(Error::Jwk(
            "'x' is a small-order Ed448 point: signatures under it can be forged".into(),
        ));
    }
    if !bool::from(point.is_torsion_free()) {
        return Err(Error::Jwk(
            "'x' is not in the prime-order subgroup of Ed448".into(),
        ));
    }
    Ok(())
}

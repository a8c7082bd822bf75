//! Strict base64url (RFC 7515 §2: no padding, no line breaks) and the standard base64 that
//! `x5c` uses (RFC 7517 §4.7).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

use crate::error::{Error, Result};

pub(super) fn decode_url(member: &str, text: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| Error::Jwk(format!("'{member}' is not unpadded base64url")))
}

pub(super) fn encode_url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(super) fn decode_std(member: &str, text: &str) -> Result<Vec<u8>> {
    STANDARD
        .decode(text)
        .map_err(|_| Error::Jwk(format!("'{member}' entries must be standard base64")))
}

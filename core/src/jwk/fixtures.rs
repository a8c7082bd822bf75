pub use crate::testkeys::*;

pub const POLICY: super::Policy = super::Policy { min_rsa_bits: 2048 };

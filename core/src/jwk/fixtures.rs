pub(crate) use crate::testkeys::*;

pub(crate) const POLICY: super::Policy = super::Policy { min_rsa_bits: 2048 };

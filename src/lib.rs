pub mod args;
pub mod error;
pub mod jwk;
pub mod keys;
pub mod keyset;
#[doc(hidden)]
pub mod testkeys;

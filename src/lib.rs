pub mod error;
pub mod jwk;
#[doc(hidden)]
pub mod testkeys;

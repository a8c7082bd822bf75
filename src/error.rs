//! Every error the module can reply with. `Display` is the exact Redis error text, so call
//! sites never build error strings by hand.

use std::fmt;

/// Client-supplied text as it appears inside an error reply: quoted, control characters
/// escaped (an error reply cannot carry CR/LF or NUL) and cut to a readable length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown(pub String);

impl Shown {
    pub fn bytes(b: &[u8]) -> Self {
        Self::new(&String::from_utf8_lossy(b))
    }

    pub fn new(s: &str) -> Self {
        const MAX_CHARS: usize = 64;
        let mut cut: String = s.chars().take(MAX_CHARS).collect();
        if s.chars().count() > MAX_CHARS {
            cut.push('…');
        }
        Shown(format!("{cut:?}").replace('"', "'"))
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("ERR wrong number of arguments for '{0}' command")]
    Arity(&'static str),
    #[error("ERR syntax error: {0}")]
    Syntax(String),
    #[error("ERR {0} is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("ERR {what} is too large: {len} bytes, at most {max}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("ERR invalid key set name {0}: {1}")]
    KeyName(Shown, &'static str),
    #[error("ERR invalid JWK: {0}")]
    Jwk(String),
    #[error("ERR invalid JWK {kid}: {reason}")]
    JwkAt { kid: Shown, reason: String },
    #[error("ERR JWK contains private member '{0}': private key material must never be stored or published")]
    PrivateMember(&'static str),
    #[error("ERR invalid JWKS document: {0}")]
    Document(String),
    #[error("ERR duplicate kid {0}")]
    DuplicateKid(Shown),
    #[error("ERR unknown kid {0}")]
    UnknownKid(Shown),
    #[error("ERR kid {0} is already current")]
    AlreadyCurrent(Shown),
    #[error("ERR kid {0} is in the key set with different key material")]
    KidConflict(Shown),
    #[error("ERR cannot retire the current key {0} unless the same command promotes another key")]
    RetireCurrent(Shown),
    #[error("ERR key set is full: at most {0} keys")]
    TooManyKeys(usize),
    #[error("ERR generation mismatch: IFGEN {expected} but the key set is at generation {actual}")]
    GenerationMismatch { expected: u64, actual: u64 },
    #[error("ERR invalid reason: {0}")]
    Reason(&'static str),
    #[error("WRONGTYPE key {0} holds the wrong kind of value: {1}")]
    WrongType(Shown, &'static str),
    #[error("ERR corrupt key set state: {0}")]
    State(String),
    #[error("ERR {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_escapes_and_cuts() {
        assert_eq!(Shown::new("a\r\nb").to_string(), "'a\\r\\nb'");
        assert_eq!(Shown::new("x\0").to_string(), "'x\\0'");
        let long = "k".repeat(100);
        assert!(Shown::new(&long).to_string().len() < 80);
    }

    #[test]
    fn messages_are_redis_errors() {
        let e = Error::UnknownKid(Shown::new("k1"));
        assert_eq!(e.to_string(), "ERR unknown kid 'k1'");
        assert!(Error::WrongType(Shown::new("k"), "x")
            .to_string()
            .starts_with("WRONGTYPE "));
    }
}

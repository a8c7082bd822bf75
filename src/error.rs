//! Every error the module can reply with. `Display` is the exact Redis error text, so call
//! sites never build error strings by hand.

use std::fmt;

/// Client-supplied text as it appears inside an error reply: quoted, control characters
/// escaped (an error reply cannot carry CR/LF or NUL) and cut to a readable length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown(pub String);

const MAX_SHOWN_CHARS: usize = 64;

/// Appends `s` to `out` quoted, control characters escaped and cut to a readable length:
/// the form client text takes in error replies and log lines.
pub fn push_shown(out: &mut String, s: &str) {
    out.push('\'');
    for (i, c) in s.chars().enumerate() {
        if i == MAX_SHOWN_CHARS {
            out.push('…');
            break;
        }
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out.push('\'');
}

impl Shown {
    pub fn bytes(b: &[u8]) -> Self {
        Self::new(&String::from_utf8_lossy(b))
    }

    pub fn new(s: &str) -> Self {
        let mut out = String::with_capacity(s.len().min(MAX_SHOWN_CHARS) + 2);
        push_shown(&mut out, s);
        Shown(out)
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    Syntax(String),
    NotUtf8(&'static str),
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    KeyName(Shown, &'static str),
    Jwk(String),
    JwkAt {
        kid: Shown,
        reason: String,
    },
    PrivateMember(&'static str),
    Document(String),
    DuplicateKid(Shown),
    UnknownKid(Shown),
    AlreadyCurrent(Shown),
    KidConflict(Shown),
    RetireCurrent(Shown),
    TooManyKeys(usize),
    GenerationMismatch {
        expected: u64,
        actual: u64,
    },
    Reason(&'static str),
    WrongType(Shown, &'static str),
    State(String),
}

/// The exact Redis error text (the first word is the error code).
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Syntax(a0) => write!(f, "ERR syntax error: {a0}"),
            Error::NotUtf8(a0) => write!(f, "ERR {a0} is not valid UTF-8"),
            Error::TooLarge { what, len, max } => write!(f, "ERR {what} is too large: {len} bytes, at most {max}"),
            Error::KeyName(a0, a1) => write!(f, "ERR invalid key set name {a0}: {a1}"),
            Error::Jwk(a0) => write!(f, "ERR invalid JWK: {a0}"),
            Error::JwkAt { kid, reason } => write!(f, "ERR invalid JWK {kid}: {reason}"),
            Error::PrivateMember(a0) => write!(f, "ERR JWK contains private member '{a0}': private key material must never be stored or published"),
            Error::Document(a0) => write!(f, "ERR invalid JWKS document: {a0}"),
            Error::DuplicateKid(a0) => write!(f, "ERR duplicate kid {a0}"),
            Error::UnknownKid(a0) => write!(f, "ERR unknown kid {a0}"),
            Error::AlreadyCurrent(a0) => write!(f, "ERR kid {a0} is already current"),
            Error::KidConflict(a0) => write!(f, "ERR kid {a0} is in the key set with different key material"),
            Error::RetireCurrent(a0) => write!(f, "ERR cannot retire the current key {a0} unless the same command promotes another key"),
            Error::TooManyKeys(a0) => write!(f, "ERR key set is full: at most {a0} keys"),
            Error::GenerationMismatch { expected, actual } => write!(f, "ERR generation mismatch: IFGEN {expected} but the key set is at generation {actual}"),
            Error::Reason(a0) => write!(f, "ERR invalid reason: {a0}"),
            Error::WrongType(a0, a1) => write!(f, "WRONGTYPE key {a0} holds the wrong kind of value: {a1}"),
            Error::State(a0) => write!(f, "ERR corrupt key set state: {a0}"),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_escapes_and_cuts() {
        assert_eq!(Shown::new("a\r\nb").to_string(), "'a\\r\\nb'");
        assert_eq!(Shown::new("x\0").to_string(), "'x\\u{0}'");
        assert_eq!(Shown::new("it's").to_string(), "'it\\'s'");
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

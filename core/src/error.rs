//! Every error the module can reply with. `Display` is the exact Redis error text: a stable
//! code (the first word, which clients match on and `INFO errorstats` counts) and a message
//! that names the problem. Call sites never build error strings by hand.

use std::fmt;

use crate::escape;

/// Client-supplied text as it appears inside an error reply: quoted, in the ASCII text form
/// of [`crate::escape`] (an error reply cannot carry CR/LF or NUL, and no two inputs look
/// alike), cut to a readable length with a digest of the whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown(pub String);

/// Bytes of the escaped form shown before a cut.
pub const MAX_SHOWN_BYTES: usize = 96;

/// Appends `s` to `out` quoted, escaped and cut as [`Shown`] does.
pub fn push_shown(out: &mut String, s: &str) {
    escape::push_quoted(out, s.as_bytes(), MAX_SHOWN_BYTES);
}

impl Shown {
    pub fn bytes(b: &[u8]) -> Self {
        let mut out = String::with_capacity(b.len().min(MAX_SHOWN_BYTES) + 2);
        escape::push_quoted(&mut out, b, MAX_SHOWN_BYTES);
        Shown(out)
    }

    pub fn new(s: &str) -> Self {
        Self::bytes(s.as_bytes())
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the module needed to do with a key the caller's ACL does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Publish,
}

impl Access {
    fn verb(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Publish => "publish to",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The command's name, lower case.
    Arity(&'static str),
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
    NoKeySet(Shown),
    /// A manual change the lifecycle policy does not allow yet.
    TooEarly {
        kid: Shown,
        ago_ms: i64,
        window: &'static str,
        window_ms: u64,
        remaining_ms: i64,
    },
    /// A manual PROMOTE under CONFIRM before the verifiers confirm it (code TOOEARLY).
    Unconfirmed {
        kid: Shown,
        holding: usize,
        live: usize,
        needed: usize,
        pct: u8,
        wait_remaining_ms: i64,
        ceiling_remaining_ms: Option<i64>,
    },
    NoPerm {
        user: Shown,
        access: Access,
        key: Shown,
    },
    /// A new key set's derived name holds a value the module did not write (its name, and
    /// what it holds).
    NotOurs(Shown, &'static str),
    /// The audit stream cannot take the command's entries (its last ID is at the maximum).
    AuditFull(Shown),
    /// The cache could not be deleted (audited and counted; the TTL heals it).
    InvalidationFailed(String),
    Disabled(&'static str),
    /// A `loadmodule` argument (its name) and why it is refused.
    LoadArg(Shown, String),
    /// An ack from a new verifier beyond a cap (`what`: "this key set", "this server").
    TooManyVerifiers(&'static str, usize),
    /// An ack of a generation the key set has not reached.
    GenerationAhead {
        acked: u64,
        generation: u64,
    },
    /// An ack sent to a replica.
    AckOnReplica,
    /// An ack of a generation whose document (by ETag) is not this key set's.
    StaleAck {
        generation: u64,
        etag: Shown,
    },
    /// A module API function this server lacks.
    Api(&'static str),
    Internal,
}

impl Error {
    /// The stable error code: the first word of the reply.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Arity(_)
            | Error::Syntax(_)
            | Error::NotUtf8(_)
            | Error::TooLarge { .. }
            | Error::Reason(_)
            | Error::Disabled(_)
            | Error::LoadArg(..)
            | Error::InvalidationFailed(_)
            | Error::GenerationAhead { .. }
            | Error::Api(_)
            | Error::Internal => "ERR",
            Error::KeyName(..) => "BADNAME",
            Error::Jwk(_) | Error::JwkAt { .. } | Error::PrivateMember(_) | Error::Document(_) => {
                "BADJWK"
            }
            Error::DuplicateKid(_) | Error::KidConflict(_) => "KIDCONFLICT",
            Error::UnknownKid(_) => "NOKID",
            Error::AlreadyCurrent(_) | Error::RetireCurrent(_) => "BADSTATE",
            Error::TooManyKeys(_) | Error::TooManyVerifiers(..) => "FULL",
            Error::AckOnReplica => "READONLY",
            Error::StaleAck { .. } => "STALE",
            Error::GenerationMismatch { .. } => "GENMISMATCH",
            Error::WrongType(..) => "WRONGTYPE",
            Error::State(_) => "CORRUPT",
            Error::NoKeySet(_) => "NOKEYSET",
            Error::TooEarly { .. } | Error::Unconfirmed { .. } => "TOOEARLY",
            Error::NoPerm { .. } => "NOPERM",
            Error::AuditFull(_) => "AUDITFULL",
            Error::NotOurs(..) => "BUSYKEY",
        }
    }
}

/// The exact Redis error text.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.code())?;
        match self {
            Error::Arity(cmd) => write!(f, "wrong number of arguments for '{cmd}' command"),
            Error::Syntax(a0) => write!(f, "syntax error: {a0}"),
            Error::NotUtf8(a0) => write!(f, "{a0} is not valid UTF-8"),
            Error::TooLarge { what, len, max } => write!(f, "{what} is too large: {len} bytes, at most {max}"),
            Error::KeyName(a0, a1) => write!(f, "invalid key set name {a0}: {a1}"),
            Error::Jwk(a0) => write!(f, "invalid JWK: {a0}"),
            Error::JwkAt { kid, reason } => write!(f, "invalid JWK {kid}: {reason}"),
            Error::PrivateMember(a0) => write!(f, "JWK contains private member '{a0}': private key material must never be stored or published"),
            Error::Document(a0) => write!(f, "invalid JWKS document: {a0}"),
            Error::DuplicateKid(a0) => write!(f, "duplicate kid {a0}"),
            Error::UnknownKid(a0) => write!(f, "unknown kid {a0}"),
            Error::AlreadyCurrent(a0) => write!(f, "kid {a0} is already current"),
            Error::KidConflict(a0) => write!(f, "kid {a0} is in the key set with different key material"),
            Error::RetireCurrent(a0) => write!(f, "cannot retire the current key {a0} unless the same command promotes another key"),
            Error::TooManyKeys(a0) => write!(f, "key set is full: at most {a0} keys"),
            Error::GenerationMismatch { expected, actual } => write!(f, "generation mismatch: IFGEN {expected} but the key set is at generation {actual}"),
            Error::Reason(a0) => write!(f, "invalid reason: {a0}"),
            Error::WrongType(a0, a1) => write!(f, "key {a0} holds the wrong kind of value: {a1}"),
            Error::State(a0) => write!(f, "corrupt key set state: {a0}"),
            Error::NoKeySet(a0) => write!(f, "no key set at {a0}"),
            Error::TooEarly { kid, ago_ms, window, window_ms, remaining_ms } => {
                let what = if *window == "PROMOTE-AFTER" { "published" } else { "demoted" };
                write!(f, "kid {kid} was {what} {ago_ms} ms ago and {window} is {window_ms} ms: {remaining_ms} ms remain (FORCE overrides)")
            }
            Error::Unconfirmed { kid, holding, live, needed, pct, wait_remaining_ms, ceiling_remaining_ms } => {
                write!(f, "kid {kid} is not confirmed: {holding} of {live} live verifiers hold it and CONFIRM {pct} % needs {needed}")?;
                if *wait_remaining_ms > 0 {
                    write!(f, ", and MIN-WAIT has {wait_remaining_ms} ms to go")?;
                }
                if let Some(ms) = ceiling_remaining_ms {
                    write!(f, "; PROMOTE-AFTER allows it in {ms} ms")?;
                }
                f.write_str(" (FORCE overrides)")
            }
            Error::NoPerm { user, access, key } => write!(f, "user {user} has no permission to {} {key}, which this command uses for the key set", access.verb()),
            Error::NotOurs(a0, a1) => write!(f, "key {a0} holds {a1} that redis-jwks did not write, at a name a new key set would use; nothing was changed: delete or rename it first"),
            Error::AuditFull(a0) => write!(f, "audit stream {a0} cannot take new entries (its last ID is at the maximum); nothing was changed"),
            Error::InvalidationFailed(a0) => write!(f, "cache invalidation failed: {a0} (audited; the cached JWKS expires within jwks.cache-ttl)"),
            Error::Disabled(a0) => f.write_str(a0),
            Error::LoadArg(name, why) => write!(f, "module argument {name} {why}"),
            Error::TooManyVerifiers(what, n) => write!(f, "too many verifiers: {what} has {n} live ones; acks from new IDs are refused until some expire"),
            Error::GenerationAhead { acked, generation } => write!(f, "generation {acked} is newer than the key set's ({generation})"),
            Error::StaleAck { generation, etag } => write!(f, "ETag {etag} is not the document of this key set's generation {generation}: the verifier holds a key set once at this name; reload"),
            Error::AckOnReplica => f.write_str("You can't ack a replica: acks are kept by the primary, where promotions happen"),
            Error::Api(a0) => write!(f, "module API {a0} is missing or failed"),
            Error::Internal => f.write_str("redis-jwks internal error; the command was aborted"),
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
        assert_eq!(Shown::bytes(b"\xff").to_string(), "'\\xff'");
        assert_eq!(Shown::new("a\u{202e}b").to_string(), "'a\\u{202e}b'");
        let long = "k".repeat(100);
        let shown = Shown::new(&long).to_string();
        assert!(shown.len() < 150, "{shown}");
        assert!(shown.contains("(100 bytes, sha256 "), "{shown}");
        let other = "k".repeat(99) + "l";
        assert_ne!(Shown::new(&other).to_string(), shown);
    }

    #[test]
    fn messages_start_with_their_code() {
        let e = Error::UnknownKid(Shown::new("k1"));
        assert_eq!(e.to_string(), "NOKID unknown kid 'k1'");
        assert!(Error::WrongType(Shown::new("k"), "x")
            .to_string()
            .starts_with("WRONGTYPE "));
        assert_eq!(
            Error::Arity("jwks.get").to_string(),
            "ERR wrong number of arguments for 'jwks.get' command"
        );
        let e = Error::NoPerm {
            user: Shown::new("u"),
            access: Access::Write,
            key: Shown::new("k:cache"),
        };
        assert!(e
            .to_string()
            .starts_with("NOPERM user 'u' has no permission to write 'k:cache'"));
    }
}

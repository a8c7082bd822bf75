//! How names and free text are written where people and tools read them: error replies, log
//! lines, event JSON, audit fields and metric labels. Key-set names are arbitrary bytes and
//! reasons and kids arbitrary UTF-8, so each output needs a form in which two different
//! inputs never look the same and nothing in the input can break the line, reorder it on
//! screen or hide part of it. Pure.
//!
//! - The text form ([`push_text`], [`push_quoted`]): ASCII only. Printable ASCII as it is
//!   but `\` (`\\`) and the quote (`\'`); tab, LF, CR as `\t`, `\n`, `\r`; every other
//!   character as `\u{hex}`; each byte that is not UTF-8 as `\xNN`. Escaping every
//!   non-ASCII character, not only the known dangerous ones, is what makes two names that
//!   differ never *look* the same: no bidi override (U+202E), line separator (U+2028),
//!   invisible character, look-alike letter (Cyrillic `а`) or composed/decomposed pair
//!   (`é` and `e` + U+0301) can pass, whatever Unicode adds next. The form is reversible
//!   (`unescape` in the tests), hence injective. A form longer than its budget is cut at a
//!   token boundary and followed by the input's length and the first 16 hex digits of its
//!   SHA-256, so a cut never makes two long names alike (64 bits: not worth forging).
//! - Labels ([`push_label`]): the documented Prometheus label form, UTF-8 kept but
//!   control, invisible, separator and bidi characters ([`is_hidden`]), `\` and bytes that
//!   are not UTF-8 as `\xNN` per byte.
//! - JSON ([`ascii_json`]): every non-ASCII character as `\uXXXX`, so a message is ASCII,
//!   safe to embed in JavaScript or a log, and still decodes to the exact string.
//! - Audit values ([`lossless`]): stream values are binary-safe, so UTF-8 is kept exactly.

use std::borrow::Cow;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

/// Hex digits of the SHA-256 shown after a cut form.
pub const DIGEST_HEX: usize = 16;

/// Characters that break a line, are invisible, or reorder or disguise the text around them
/// when displayed: C0/C1 controls and DEL, every Unicode line break and space but ASCII
/// space, bidi marks, embeddings, overrides and isolates, zero-width and joiner characters,
/// fillers, variation selectors, the BOM, interlinear annotations and tag characters.
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || (c.is_whitespace() && c != ' ')
        || matches!(
            u32::from(c),
            0x00AD
                | 0x034F
                | 0x061C
                | 0x115F
                | 0x1160
                | 0x17B4
                | 0x17B5
                | 0x180B..=0x180F
                | 0x200B..=0x200F
                | 0x2028..=0x202E
                | 0x2060..=0x206F
                | 0x3164
                | 0xFE00..=0xFE0F
                | 0xFEFF
                | 0xFFA0
                | 0xFFF0..=0xFFFB
                | 0x1BCA0..=0x1BCA3
                | 0x1D173..=0x1D17A
                | 0xE0000..=0xE0FFF
        )
}

/// Printable ASCII that stands for itself in the text form.
fn plain(b: u8, quote: Option<char>) -> bool {
    (0x20..0x7f).contains(&b) && b != b'\\' && Some(char::from(b)) != quote
}

/// The text form of one character.
fn push_char(out: &mut String, c: char, quote: Option<char>) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\t' => out.push_str("\\t"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        c if Some(c) == quote => {
            out.push('\\');
            out.push(c);
        }
        ' '..='~' => out.push(c),
        c => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
}

/// Appends the text form of `bytes`, with `quote` escaped, whole. Stops early (returning
/// false) once more than `max` bytes have been written; `cut` then holds the length of
/// `out` after the last token that fit.
fn push_tokens(
    out: &mut String,
    bytes: &[u8],
    quote: Option<char>,
    max: usize,
    cut: &mut usize,
) -> bool {
    let start = out.len();
    *cut = start;
    if bytes.iter().all(|b| plain(*b, quote)) {
        let fits = bytes.len().min(max);
        // Printable ASCII: every byte is a token and a char boundary.
        out.push_str(std::str::from_utf8(&bytes[..fits]).unwrap_or_default());
        *cut = out.len();
        return bytes.len() <= max;
    }
    let mut fits = |out: &String| {
        if out.len() - start <= max {
            *cut = out.len();
            true
        } else {
            false
        }
    };
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_char(out, c, quote);
            if !fits(out) {
                return false;
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
            if !fits(out) {
                return false;
            }
        }
    }
    true
}

/// Appends the text form of `bytes` (`\` escaped, no quote), whole.
pub fn push_text(out: &mut String, bytes: &[u8]) {
    let mut cut = 0;
    push_tokens(out, bytes, None, usize::MAX, &mut cut);
}

/// The text form of `bytes`, whole.
pub fn text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    push_text(&mut out, bytes);
    out
}

/// ` (N bytes, sha256 0123456789abcdef)`: what follows a cut form.
fn push_digest(out: &mut String, bytes: &[u8]) {
    let digest = Sha256::digest(bytes);
    let _ = write!(out, " ({} bytes, sha256 ", bytes.len());
    for b in digest.iter().take(DIGEST_HEX / 2) {
        let _ = write!(out, "{b:02x}");
    }
    out.push(')');
}

/// Appends `bytes` in the text form, unquoted; if that is longer than `max` bytes, cut to
/// at most `max` at a token boundary, then `…` and the input's length and digest. `…` is
/// not ASCII, so it never occurs in a text form: it always marks a cut.
pub fn push_cut(out: &mut String, bytes: &[u8], max: usize) {
    let mut cut = 0;
    if !push_tokens(out, bytes, None, max, &mut cut) {
        out.truncate(cut);
        out.push('…');
        push_digest(out, bytes);
    }
}

/// Appends `'text form'` (`'` escaped as well); if the form is longer than `max` bytes,
/// `'prefix…' (N bytes, sha256 0123456789abcdef)` with a prefix of at most `max` bytes.
pub fn push_quoted(out: &mut String, bytes: &[u8], max: usize) {
    out.push('\'');
    let mut cut = 0;
    if push_tokens(out, bytes, Some('\''), max, &mut cut) {
        out.push('\'');
    } else {
        out.truncate(cut);
        out.push_str("…'");
        push_digest(out, bytes);
    }
}

/// `bytes` as an audit value: exactly, if it is UTF-8 without a backslash; otherwise the
/// text form, which then always holds a `\`. Two inputs never give the same value.
pub fn lossless(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.contains('\\') => Cow::Borrowed(s),
        _ => Cow::Owned(text(bytes)),
    }
}

/// Appends `bytes` as a Prometheus label value: UTF-8 as it is, but [`is_hidden`]
/// characters, `\` and bytes that are not UTF-8 as `\xNN` per byte, so distinct names stay
/// distinct and none can hide or reorder the text of an alert.
pub fn push_label(out: &mut String, bytes: &[u8]) {
    // Nearly every name is printable ASCII: copied as it is.
    if bytes.iter().all(|b| plain(*b, None)) {
        out.push_str(std::str::from_utf8(bytes).unwrap_or_default());
        return;
    }
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' || is_hidden(c) {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\x{b:02x}");
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

/// Serialized JSON with every non-ASCII character written as `\uXXXX` (a surrogate pair
/// above U+FFFF): the same JSON value, in ASCII. Only valid inside string literals, which
/// is the only place serde_json writes non-ASCII.
pub fn ascii_json(json: String) -> String {
    if json.is_ascii() {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 32);
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{u:04x}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reverses the text form (quoted or not): what proves it injective.
    fn unescape(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                continue;
            }
            match chars.next() {
                Some('\\') => out.push(b'\\'),
                Some('\'') => out.push(b'\''),
                Some('t') => out.push(b'\t'),
                Some('n') => out.push(b'\n'),
                Some('r') => out.push(b'\r'),
                Some('x') => {
                    let hex: String = chars.by_ref().take(2).collect();
                    out.push(u8::from_str_radix(&hex, 16).expect("\\xNN"));
                }
                Some('u') => {
                    assert_eq!(chars.next(), Some('{'));
                    let hex: String = chars.by_ref().take_while(|c| *c != '}').collect();
                    let c = char::from_u32(u32::from_str_radix(&hex, 16).expect("hex"))
                        .expect("a char");
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                other => panic!("bad escape {other:?} in {s}"),
            }
        }
        out
    }

    /// Reverses the label form.
    fn unlabel(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = s;
        while let Some(i) = rest.find("\\x") {
            out.extend_from_slice(&rest.as_bytes()[..i]);
            out.push(u8::from_str_radix(&rest[i + 2..i + 4], 16).expect("\\xNN"));
            rest = &rest[i + 4..];
        }
        out.extend_from_slice(rest.as_bytes());
        out
    }

    fn quoted(b: &[u8], max: usize) -> String {
        let mut s = String::new();
        push_quoted(&mut s, b, max);
        s
    }

    fn label(b: &[u8]) -> String {
        let mut s = String::new();
        push_label(&mut s, b);
        s
    }

    /// A small deterministic generator (xorshift): no dependency, reproducible failures.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        /// Bytes biased towards the interesting ones: ASCII, escapes, UTF-8 lead and
        /// continuation bytes, and whole dangerous characters.
        fn bytes(&mut self) -> Vec<u8> {
            let n = (self.next() % 24) as usize;
            let mut v = Vec::with_capacity(n * 3);
            for _ in 0..n {
                match self.next() % 8 {
                    0 => v.extend_from_slice("\u{2028}".as_bytes()),
                    1 => v.extend_from_slice("\u{202e}".as_bytes()),
                    2 => v.extend_from_slice(b"\\x"),
                    3 => v.push(b"\\'\"\r\n\t\0u{}"[(self.next() % 10) as usize]),
                    4 => v.push(0x80 | (self.next() % 0x80) as u8),
                    5 => v.push(0xc0 | (self.next() % 0x40) as u8),
                    _ => v.push(self.next() as u8),
                }
            }
            v
        }
    }

    #[test]
    fn forms_round_trip_on_random_bytes() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut seen = std::collections::HashMap::new();
        let mut cut = std::collections::HashMap::new();
        for _ in 0..50_000 {
            let b = rng.bytes();
            let t = text(&b);
            assert!(t.is_ascii(), "{t}");
            assert_eq!(unescape(&t), b, "{t}");
            let q = quoted(&b, usize::MAX);
            assert_eq!(unescape(&q[1..q.len() - 1]), b, "{q}");
            let l = label(&b);
            assert!(!l.chars().any(is_hidden), "{l:?}");
            assert_eq!(unlabel(&l), b, "{l}");
            // Cut forms stay distinct too (the digest tells long ones apart).
            if let Some(other) = cut.insert(quoted(&b, 8), b.clone()) {
                assert_eq!(other, b);
            }
            let ll = lossless(&b);
            if let Some(other) = seen.insert(ll.clone().into_owned(), b.clone()) {
                assert_eq!(other, b, "{ll}");
            }
        }
    }

    #[test]
    fn dangerous_characters_are_escaped() {
        for (input, shown) in [
            ("a\u{2028}b", "'a\\u{2028}b'"),
            ("\u{202e}gpj.exe", "'\\u{202e}gpj.exe'"),
            ("x\r\ny", "'x\\r\\ny'"),
            ("it's \\", "'it\\'s \\\\'"),
            ("\0\u{7f}\u{85}", "'\\u{0}\\u{7f}\\u{85}'"),
            ("caf\u{e9}", "'caf\\u{e9}'"),
            (
                "\u{feff}\u{200b}\u{2066}\u{e0041}",
                "'\\u{feff}\\u{200b}\\u{2066}\\u{e0041}'",
            ),
        ] {
            assert_eq!(quoted(input.as_bytes(), 100), shown);
        }
        assert_eq!(quoted(b"\xff\xfe a", 100), "'\\xff\\xfe a'");
        // A name spelled like another's escape is still told apart.
        assert_ne!(quoted(b"\xff", 100), quoted(b"\\xff", 100));
        assert_ne!(text("\u{2028}".as_bytes()), text(b"\\u{2028}"));
        for c in [
            '\u{2028}',
            '\u{2029}',
            '\u{202a}',
            '\u{202e}',
            '\u{2066}',
            '\u{2069}',
            '\u{200e}',
            '\u{200f}',
            '\u{feff}',
            '\u{85}',
            '\u{9b}',
            '\u{a0}',
            '\u{3000}',
            '\u{e0001}',
        ] {
            assert!(is_hidden(c), "{c:?}");
        }
        for c in ['a', ' ', 'é', 'ж', '語', '😀'] {
            assert!(!is_hidden(c), "{c:?}");
        }
    }

    #[test]
    fn long_forms_are_cut_with_a_digest_of_the_whole() {
        let a = [b'k'; 512];
        let mut b = a;
        b[511] = b'l';
        let (qa, qb) = (quoted(&a, 100), quoted(&b, 100));
        assert_ne!(qa, qb);
        assert!(qa.starts_with(&format!("'{}…' (512 bytes, sha256 ", "k".repeat(100))));
        let hex: String = Sha256::digest(a)
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(qa.ends_with(&format!("sha256 {hex})")), "{qa}");
        // Cut at a token boundary, never inside an escape.
        let c = quoted("\u{2028}".repeat(40).as_bytes(), 20);
        assert!(c.starts_with("'\\u{2028}\\u{2028}…' (120 bytes"), "{c}");
        // Exactly the budget still fits whole.
        assert_eq!(quoted(&[b'x'; 8], 8), "'xxxxxxxx'");
        let mut s = String::new();
        push_cut(&mut s, &[b'x'; 9], 8);
        assert!(s.starts_with("xxxxxxxx… (9 bytes, sha256 "), "{s}");
    }

    #[test]
    fn labels_keep_utf8_and_escape_the_rest() {
        assert_eq!(label(b"jwks:{auth}"), "jwks:{auth}");
        assert_eq!(label(b"a\\b\n\xff"), "a\\x5cb\\x0a\\xff");
        assert_eq!(label("caf\u{e9}".as_bytes()), "caf\u{e9}");
        assert_eq!(label("a\u{202e}b".as_bytes()), "a\\xe2\\x80\\xaeb");
        assert_ne!(label(b"\xff"), label(b"\\xff"));
    }

    #[test]
    fn json_is_ascii_and_decodes_to_the_same_value() {
        let s = "a\u{2028}\u{202e}\u{e9}\u{1f600}\"\\";
        let json = ascii_json(serde_json::to_string(s).unwrap());
        assert!(json.is_ascii(), "{json}");
        assert!(
            json.contains("\\u2028") && json.contains("\\ud83d\\ude00"),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<String>(&json).unwrap(), s);
    }

    #[test]
    fn audit_values_keep_utf8_exactly() {
        assert!(matches!(lossless(b"default"), Cow::Borrowed("default")));
        assert_eq!(lossless("\u{202e}x".as_bytes()), "\u{202e}x");
        assert_eq!(lossless(b"\xffa"), "\\xffa");
        assert_eq!(lossless(b"\\xffa"), "\\\\xffa");
    }
}

//! A `RESTORE` payload of the module type, read the way Redis reads it, down to what the
//! module's `rdb_load` is handed: type byte `RDB_TYPE_MODULE_2`, the module type id (an RDB
//! length), then per field a module opcode (string 5, as an RDB length) and an RDB string
//! (plain, integer-encoded or LZF), the EOF opcode 0, then the 2-byte RDB version and the
//! CRC-64. The CRC is not checked: anyone crafting a payload recomputes it (see
//! tests/restore_payloads.rs). Whatever comes out goes through the module's load path
//! (UTF-8, `KeySet::from_stored`). Nothing may panic, no length from the input may drive an
//! allocation before it is checked against the input, and a key set that loads must survive
//! being stored, framed and read again unchanged.
//!
//! Seeds (fuzz/seeds/dump_payload): real DUMPs of the key sets the integration test makes,
//! with rdbcompression yes and no (`JWKS_DUMP_SEEDS=fuzz/seeds/dump_payload cargo test
//! --test restore_payloads crafted`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use redis_jwks::keyset::KeySet;

const RDB_TYPE_MODULE_2: u8 = 7;
const OPCODE_EOF: u64 = 0;
const OPCODE_STRING: u64 = 5;
/// What `RedisModule_CreateDataType("jwks-keys", 1, ...)` registers.
const TYPE_NAME: &[u8; 9] = b"jwks-keys";
const ENCODING_VERSION: u64 = 1;

/// `moduleTypeEncodeId`: 9 characters of 6 bits, then 10 bits of encoding version.
fn type_id(name: &[u8; 9], encver: u64) -> u64 {
    const CHARSET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let id = name.iter().fold(0u64, |id, c| {
        let pos = CHARSET.iter().position(|x| x == c).expect("a valid name");
        (id << 6) | pos as u64
    });
    (id << 10) | encver
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// `n` bytes, checked against what is left before anything is allocated.
    fn take(&mut self, n: u64) -> Option<&'a [u8]> {
        let n = usize::try_from(n).ok()?;
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len())?;
        let out = &self.buf[self.at..end];
        self.at = end;
        Some(out)
    }

    /// `rdbLoadLenByRef`: (value, is an encoding rather than a length).
    fn len(&mut self) -> Option<(u64, bool)> {
        let first = self.take(1)?[0];
        Some(match first >> 6 {
            0 => (u64::from(first & 0x3f), false),
            1 => (
                (u64::from(first & 0x3f) << 8) | u64::from(self.take(1)?[0]),
                false,
            ),
            3 => (u64::from(first & 0x3f), true),
            _ if first == 0x80 => (
                u64::from(u32::from_be_bytes(self.take(4)?.try_into().ok()?)),
                false,
            ),
            _ if first == 0x81 => (u64::from_be_bytes(self.take(8)?.try_into().ok()?), false),
            _ => return None,
        })
    }

    /// `rdbLoadLen(rdb, NULL)`, as opcodes and the module id are read: an encoding byte
    /// reads as its low bits.
    fn plain_len(&mut self) -> Option<u64> {
        self.len().map(|(v, _)| v)
    }

    /// `rdbGenericLoadStringObject(RDB_LOAD_PLAIN)`, what `RM_LoadStringBuffer` returns.
    fn string(&mut self) -> Option<Vec<u8>> {
        let (len, encoded) = self.len()?;
        if !encoded {
            return self.take(len).map(<[u8]>::to_vec);
        }
        match len {
            0 => Some((self.take(1)?[0] as i8).to_string().into_bytes()),
            1 => Some(
                i16::from_le_bytes(self.take(2)?.try_into().ok()?)
                    .to_string()
                    .into_bytes(),
            ),
            2 => Some(
                i32::from_le_bytes(self.take(4)?.try_into().ok()?)
                    .to_string()
                    .into_bytes(),
            ),
            3 => {
                let clen = self.plain_len()?;
                let plain = self.plain_len()?;
                let compressed = self.take(clen)?;
                // Redis fails a decompression that does not give exactly `plain` bytes, and
                // an empty one.
                let out = lzf_decompress(compressed, plain)?;
                (!out.is_empty()).then_some(out)
            }
            _ => None,
        }
    }
}

/// liblzf's `lzf_decompress` into a buffer of exactly `plain` bytes; None where it fails.
fn lzf_decompress(input: &[u8], plain: u64) -> Option<Vec<u8>> {
    // A back reference (at most 3 input bytes) yields at most 264 bytes: a larger `plain`
    // cannot be met, so it is refused before it sizes an allocation.
    if plain > (input.len() as u64).saturating_mul(264) {
        return None;
    }
    let cap = usize::try_from(plain).ok()?;
    let mut out: Vec<u8> = Vec::with_capacity(cap);
    let mut ip = 0;
    while ip < input.len() {
        let ctrl = usize::from(input[ip]);
        ip += 1;
        if ctrl < 32 {
            let run = input.get(ip..ip + ctrl + 1)?;
            if out.len() + run.len() > cap {
                return None;
            }
            out.extend_from_slice(run);
            ip += ctrl + 1;
        } else {
            let mut len = ctrl >> 5;
            if len == 7 {
                len += usize::from(*input.get(ip)?);
                ip += 1;
            }
            len += 2;
            let back = ((ctrl & 0x1f) << 8) + usize::from(*input.get(ip)?) + 1;
            ip += 1;
            let from = out.len().checked_sub(back)?;
            if out.len() + len > cap {
                return None;
            }
            for i in 0..len {
                out.push(out[from + i]);
            }
        }
    }
    (out.len() == cap).then_some(out)
}

/// RESTORE of `payload`: the key set the module loads, or None where Redis or the module
/// refuses it. The module's load runs before Redis checks for the EOF opcode after it.
fn restore(payload: &[u8]) -> Option<KeySet> {
    let body = payload.get(..payload.len().checked_sub(10)?)?;
    let mut r = Reader { buf: body, at: 0 };
    if r.take(1)?[0] != RDB_TYPE_MODULE_2 {
        return None;
    }
    let id = r.plain_len()?;
    if id >> 10 != type_id(TYPE_NAME, 0) >> 10 {
        return None;
    }
    let set = load(&mut r, id & 1023)?;
    (r.plain_len()? == OPCODE_EOF).then_some(set)
}

/// The module's `rdb_load`: its encoding version, one string (`RM_LoadStringBuffer` wants
/// the string opcode first), UTF-8, the stored form.
fn load(r: &mut Reader, encver: u64) -> Option<KeySet> {
    if encver != ENCODING_VERSION || r.plain_len()? != OPCODE_STRING {
        return None;
    }
    let text = r.string()?;
    KeySet::from_stored(std::str::from_utf8(&text).ok()?).ok()
}

/// A key set's stored form framed as DUMP writes it (uncompressed; CRC left zero).
fn encode(stored: &str) -> Vec<u8> {
    let mut out = vec![RDB_TYPE_MODULE_2, 0x81];
    out.extend(type_id(TYPE_NAME, ENCODING_VERSION).to_be_bytes());
    out.push(OPCODE_STRING as u8);
    let n = stored.len() as u64;
    if n < 1 << 6 {
        out.push(n as u8);
    } else if n < 1 << 14 {
        out.extend([0x40 | (n >> 8) as u8, n as u8]);
    } else {
        out.push(0x80);
        out.extend((n as u32).to_be_bytes());
    }
    out.extend(stored.as_bytes());
    out.push(OPCODE_EOF as u8);
    out.extend([0u8; 10]);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some(set) = restore(data) else { return };
    assert_eq!(restore(&encode(&set.to_stored())).expect("re-load"), set);
});

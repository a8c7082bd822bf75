//! Redis glue: one file per command, registered from `table`. Handlers parse with `args`,
//! decide with `keyset`, check everything the change will write (ACL and types, with
//! `write::Targets`), and only then write, through `write::commit`, so a refused command
//! changes nothing and opens no key for writing. Nothing outside this directory (but the
//! registration in `lib.rs`) imports it.

pub(crate) mod ack;
pub(crate) mod debug;
pub(crate) mod get;
pub(crate) mod info;
pub(crate) mod invalidate;
pub(crate) mod key;
pub(crate) mod policy;
pub(crate) mod rotate;
pub(crate) mod setstate;
pub(crate) mod stats;
pub(crate) mod table;
pub(crate) mod verifiers;

use std::collections::BTreeMap;

use redis_module::redisvalue::RedisValueKey;
use redis_module::RedisValue;

/// A reply map: a RESP3 map, flattened to `[name, value, ...]` on RESP2.
#[derive(Default)]
pub(crate) struct Map(BTreeMap<RedisValueKey, RedisValue>);

impl Map {
    pub(crate) fn put(&mut self, name: &str, value: RedisValue) -> &mut Map {
        self.0.insert(RedisValueKey::String(name.to_owned()), value);
        self
    }

    pub(crate) fn done(self) -> RedisValue {
        RedisValue::OrderedMap(self.0)
    }
}

pub(crate) fn text(s: &str) -> RedisValue {
    RedisValue::BulkString(s.to_owned())
}

pub(crate) fn bytes(b: &[u8]) -> RedisValue {
    RedisValue::StringBuffer(b.to_vec())
}

pub(crate) fn opt_int(v: Option<i64>) -> RedisValue {
    v.map_or(RedisValue::Null, RedisValue::Integer)
}

pub(crate) fn int(v: u64) -> RedisValue {
    RedisValue::Integer(i64::try_from(v).unwrap_or(i64::MAX))
}

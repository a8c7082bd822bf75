//! ACL checks on the keys a command touches besides the key it names (its cache, audit
//! stream, counters and events channel), through the caller's selectors.
//!
//! Redis runs a command when one of the user's selectors (the root permissions or one
//! `(...)` group) allows the command with its declared key. The module's derived keys are
//! not declared, so the module checks them itself, and it must check them against that
//! same selector: `RedisModule_ACLCheckKeyPermissions` and
//! `RedisModule_ACLCheckChannelPermissions` accept a key that *any* selector allows, so for
//! `~jwks:{a} &jwks:{a}:* +jwks.rotate (~jwks:{a}:* +get)` they would let `JWKS.ROTATE`
//! write `jwks:{a}:audit`, which that user may not `XADD`.
//!
//! So, for a user with selectors: the user's rules as the server describes them
//! (`RedisModule_GetModuleUserACLString`, the `ACL LIST` form, which the server caches per
//! user) are split into the root rules and each selector's rules; each selector becomes a
//! module user holding only its rules (kept while the description stays the same); the
//! selectors that allow the running command (`RedisModule_ACLCheckCommandPermissions` with
//! the command's real arguments, so its key spec checks its own key) are the candidates,
//! and each derived access keeps only the candidates that allow it too. The access is allowed while one candidate is left.
//! For a user without selectors Redis's own check is already exact and none of this runs.
//! Anything the module cannot reproduce (a description it cannot split, a rule the server
//! refuses to apply, unknown arguments) allows nothing: the check fails closed.
//!
//! Not redis-module's `Context::acl_check_key_permission`: it looks the user up by name on
//! every call, unwraps the API pointers (a panic on a server that lacks one), and asks
//! `RedisModule_ACLCheckKeyPermissions` on the whole user, i.e. any selector: the bypass
//! this file closes. Not `ACL GETUSER` through `RedisModule_Call` either: the description
//! is one cached string away, while a command call builds a reply (RESP2 or RESP3, a
//! `databases` field on Valkey 9) and counts in every restricted caller's commandstats.

use std::cell::{OnceCell, RefCell};
use std::ffi::CString;
use std::mem::ManuallyDrop;
use std::os::raw::c_int;
use std::ptr::{self, NonNull};
use std::rc::Rc;

use redis_module::raw::{self, RedisModuleString, RedisModuleUser};
use redis_module::{Context, RedisString};
use smallvec::SmallVec;

use super::ffi::api;
use super::redis_key::db;
use redis_jwks_core::error::{Access, Result};

/// A command's arguments as Redis passed them, for `RedisModule_ACLCheckCommandPermissions`:
/// valid while that command runs, and only used then (by its `Caller`).
#[derive(Clone, Copy)]
pub(crate) struct Argv {
    pub ptr: *mut *mut RedisModuleString,
    pub len: c_int,
}

/// Whether `user`, running the command `argv` (`None`: not inside a command), may
/// `access` the key or channel `name` by the selector that allows the command and every
/// access asked about before with the same `scope`.
pub(crate) fn allowed(
    ctx: &Context,
    user: NonNull<RedisModuleUser>,
    scope: &OnceCell<Scope>,
    argv: Option<Argv>,
    name: &[u8],
    access: Access,
) -> Result<bool> {
    let probe = Probe::new(ctx, name, access)?;
    // Redis's own check first: some selector allows the access. Exact for a user without
    // selectors, and a refusal needs no more work.
    if !probe.allowed_by(user) {
        return Ok(false);
    }
    let scope = scope.get_or_init(|| Scope::of(user, argv, db(ctx)));
    Ok(scope.narrow(&probe))
}

/// One key or channel access, ready to ask about several users.
struct Probe {
    name: RedisString,
    check: unsafe extern "C" fn(*mut RedisModuleUser, *mut RedisModuleString, c_int) -> c_int,
    flags: c_int,
}

impl Probe {
    fn new(ctx: &Context, name: &[u8], access: Access) -> Result<Probe> {
        let (check, flags) = match access {
            Access::Publish => (
                api!(RedisModule_ACLCheckChannelPermissions)?,
                raw::REDISMODULE_CMD_CHANNEL_PUBLISH as c_int,
            ),
            Access::Read => (
                api!(RedisModule_ACLCheckKeyPermissions)?,
                raw::REDISMODULE_CMD_KEY_ACCESS as c_int,
            ),
            Access::Write => (
                api!(RedisModule_ACLCheckKeyPermissions)?,
                (raw::REDISMODULE_CMD_KEY_INSERT
                    | raw::REDISMODULE_CMD_KEY_UPDATE
                    | raw::REDISMODULE_CMD_KEY_DELETE) as c_int,
            ),
        };
        Ok(Probe {
            name: RedisString::create_from_slice(ctx.ctx, name),
            check,
            flags,
        })
    }

    fn allowed_by(&self, user: NonNull<RedisModuleUser>) -> bool {
        // The flags are the ones the function documents for this kind of access.
        // SAFETY: a live user (the caller's, or a temporary one this file owns), a live string.
        let status = unsafe { (self.check)(user.as_ptr(), self.name.inner, self.flags) };
        status == raw::REDISMODULE_OK as c_int
    }
}

/// What the caller's selectors leave allowed, worked out on the first derived access.
pub(crate) enum Scope {
    /// No selectors: Redis's own any-selector check is exact.
    Root,
    Selectors {
        /// The user's selectors, the root one first.
        all: Rc<[Selector]>,
        /// Those that allow the command and every derived access checked so far.
        alive: RefCell<SmallVec<[usize; 4]>>,
    },
}

impl Scope {
    /// Nothing allowed: the module could not tell which selector allows what.
    fn nothing() -> Scope {
        Scope::Selectors {
            all: Rc::from([]),
            alive: RefCell::default(),
        }
    }

    /// The scope of `user` running the command `argv` (`None`: unknown, nothing allowed
    /// when the user has selectors) in the selected db `db`.
    fn of(user: NonNull<RedisModuleUser>, argv: Option<Argv>, db: i32) -> Scope {
        let Ok(describe) = api!(RedisModule_GetModuleUserACLString) else {
            return Scope::nothing();
        };
        // The string comes with a reference for us, released when `acl` drops (no context:
        // it is not in this context's auto-memory pool).
        // SAFETY: a live user.
        let acl = unsafe { describe(user.as_ptr()) };
        if acl.is_null() {
            return Scope::nothing();
        }
        let acl = RedisString::from_redis_module_string(ptr::null_mut(), acl);
        let acl = acl.as_slice();
        // Most users have no selectors (and no '(' anywhere in their rules).
        if !acl.contains(&b'(') {
            return Scope::Root;
        }
        let Some(all) = Selector::all_of(acl) else {
            return Scope::nothing();
        };
        if all.len() == 1 {
            return Scope::Root;
        }
        let Some(argv) = argv else {
            return Scope::nothing();
        };
        let alive = (0..all.len()).filter(|&i| all[i].runs(argv, db)).collect();
        Scope::Selectors {
            all,
            alive: RefCell::new(alive),
        }
    }

    /// Whether the access is allowed by a selector that allowed the command and all the
    /// accesses before it; narrows the candidates to those that allow it.
    fn narrow(&self, probe: &Probe) -> bool {
        let Scope::Selectors { all, alive } = self else {
            return true;
        };
        let mut alive = alive.borrow_mut();
        alive.retain(|i| all.get(*i).is_some_and(|s| s.allows(probe)));
        !alive.is_empty()
    }
}

thread_local! {
    /// The selectors of the users seen so far, by the server's description of the user: a
    /// caller with selectors then costs a few checks per command, not a module user built
    /// and freed per selector (about 45,000 instructions each: freeing one walks every
    /// client). A changed ACL describes itself differently and gets new selectors; the list
    /// is emptied when full. Never dropped (no server calls while the process exits); only
    /// the main thread runs commands.
    static SEEN: ManuallyDrop<RefCell<Vec<Seen>>> =
        const { ManuallyDrop::new(RefCell::new(Vec::new())) };
}

/// A user's description and its selectors.
type Seen = (Box<[u8]>, Rc<[Selector]>);

/// At most this many users' selectors are kept.
const SEEN_MAX: usize = 64;

/// One of a user's selectors: the databases it grants and a module user holding its other
/// rules (`None`: the server refused one, or the db rules are unknown; it allows nothing).
pub(crate) struct Selector {
    dbs: Dbs,
    user: Option<TempUser>,
}

impl Selector {
    /// The selectors of the user the server describes as `acl`, the root one first.
    fn all_of(acl: &[u8]) -> Option<Rc<[Selector]>> {
        let seen = SEEN.with(|s| {
            s.borrow()
                .iter()
                .find(|(described, _)| **described == *acl)
                .map(|(_, all)| Rc::clone(all))
        });
        if seen.is_some() {
            return seen;
        }
        let all: Rc<[Selector]> = split(acl)?.iter().map(|r| Selector::new(r)).collect();
        SEEN.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() >= SEEN_MAX {
                s.clear();
            }
            s.push((acl.into(), Rc::clone(&all)));
        });
        Some(all)
    }

    fn new(rules: &[&[u8]]) -> Selector {
        // Passwords and flags do not take part in a check; databases are checked apart
        // (the module API has no client, hence no selected db, to check them against).
        let applied = rules
            .iter()
            .filter(|r| !r.starts_with(b"#") && !is_db_rule(r));
        match dbs(rules) {
            Some(dbs) => Selector {
                dbs,
                user: TempUser::with(applied),
            },
            None => Selector {
                dbs: Dbs::Only(SmallVec::new()),
                user: None,
            },
        }
    }

    /// Whether this selector allows the command `argv`, with its declared keys and
    /// channels, in db `db`.
    fn runs(&self, argv: Argv, db: i32) -> bool {
        self.dbs.allows(db) && self.user.as_ref().is_some_and(|u| u.runs(argv))
    }

    fn allows(&self, probe: &Probe) -> bool {
        self.user.as_ref().is_some_and(|u| probe.allowed_by(u.ptr))
    }
}

/// One selector's rules, each as the server describes it (`~pattern`, `+command` ...).
type Rules<'a> = SmallVec<[&'a [u8]; 8]>;

/// The user's rules split as the server describes a user (`ACL LIST`, `ACLDescribeUser`):
/// flags, passwords and root rules, then each selector as `(rules)`; rules are space
/// separated and contain no spaces (the server refuses patterns with one). The first entry
/// is the root selector. `None` if the description does not have that shape.
fn split(acl: &[u8]) -> Option<SmallVec<[Rules<'_>; 4]>> {
    let mut out: SmallVec<[Rules<'_>; 4]> = SmallVec::new();
    out.push(SmallVec::new());
    let mut open = false;
    for token in acl.split(|&b| b == b' ').filter(|t| !t.is_empty()) {
        let mut rule = token;
        if !open {
            // Root rules come first; after a selector only another selector may follow.
            rule = match rule.strip_prefix(b"(") {
                Some(rest) => {
                    out.push(SmallVec::new());
                    open = true;
                    rest
                }
                None if out.len() > 1 => return None,
                None => rule,
            };
        }
        if open {
            if let Some(rest) = rule.strip_suffix(b")") {
                rule = rest;
                open = false;
            }
        }
        if !rule.is_empty() {
            out.last_mut()?.push(rule);
        }
    }
    (!open).then_some(out)
}

/// The databases a selector grants (Valkey 9's `db=0,3`, `alldbs`, `resetdbs`; no such
/// rule: every db, as on Redis); `None` if a db rule does not parse.
fn dbs(rules: &[&[u8]]) -> Option<Dbs> {
    let mut dbs = Dbs::All;
    for rule in rules {
        match *rule {
            b"alldbs" => dbs = Dbs::All,
            b"resetdbs" => dbs = Dbs::Only(SmallVec::new()),
            _ => {
                if let Some(list) = rule.strip_prefix(b"db=") {
                    let mut only = SmallVec::new();
                    for n in list.split(|&b| b == b',') {
                        only.push(std::str::from_utf8(n).ok()?.parse().ok()?);
                    }
                    dbs = Dbs::Only(only);
                }
            }
        }
    }
    Some(dbs)
}

enum Dbs {
    All,
    Only(SmallVec<[i32; 4]>),
}

impl Dbs {
    fn allows(&self, db: i32) -> bool {
        match self {
            Dbs::All => true,
            Dbs::Only(only) => only.contains(&db),
        }
    }
}

fn is_db_rule(rule: &[u8]) -> bool {
    rule == b"alldbs" || rule == b"resetdbs" || rule.starts_with(b"db=")
}

/// A module user holding one selector's rules, freed on drop. No client authenticates
/// as it: it only answers the checks here.
pub(crate) struct TempUser {
    ptr: NonNull<RedisModuleUser>,
}

impl TempUser {
    /// A new user with only `rules`.
    fn with<'r, 's: 'r>(rules: impl Iterator<Item = &'r &'s [u8]>) -> Option<TempUser> {
        let create = api!(RedisModule_CreateModuleUser).ok()?;
        let set = api!(RedisModule_SetModuleUserACL).ok()?;
        // SAFETY: a NUL-terminated name; the server copies it. Freed by `drop`.
        let created = unsafe { create(c"jwks-acl-selector".as_ptr()) };
        let user = TempUser {
            ptr: NonNull::new(created)?,
        };
        // A new user's channels follow `acl-pubsub-default`: start from nothing.
        const START: [&[u8]; 3] = [b"resetkeys", b"resetchannels", b"-@all"];
        for rule in START.iter().chain(rules) {
            let rule = CString::new(*rule).ok()?;
            // SAFETY: a live user this file owns and a NUL-terminated rule, copied.
            if unsafe { set(user.ptr.as_ptr(), rule.as_ptr()) } != raw::REDISMODULE_OK as c_int {
                return None;
            }
        }
        Some(user)
    }

    /// Whether this selector allows the command `argv`, with its declared keys and channels.
    fn runs(&self, argv: Argv) -> bool {
        let Ok(check) = api!(RedisModule_ACLCheckCommandPermissions) else {
            return false;
        };
        // `argv` holds the running command's `len` live arguments (see `Argv`).
        // SAFETY: a live user this file owns; live arguments, which the server only reads.
        unsafe { check(self.ptr.as_ptr(), argv.ptr, argv.len) == raw::REDISMODULE_OK as c_int }
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        if let Ok(free) = api!(RedisModule_FreeModuleUser) {
            // No client is authenticated as it.
            // SAFETY: made by RedisModule_CreateModuleUser, freed once.
            unsafe { free(self.ptr.as_ptr()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(acl: &str) -> Option<Vec<Vec<String>>> {
        split(acl.as_bytes()).map(|s| {
            s.iter()
                .map(|r| {
                    r.iter()
                        .map(|t| String::from_utf8_lossy(t).into_owned())
                        .collect()
                })
                .collect()
        })
    }

    #[test]
    fn splits_root_rules_and_selectors() {
        assert_eq!(
            rules("on #ab ~jwks:{a} resetchannels &jwks:{a}:* -@all +xadd (~jwks:{a}:* resetchannels -@all +get) (%R~x:* %W~y resetchannels &q* -@all +client|list +set)"),
            Some(vec![
                vec!["on", "#ab", "~jwks:{a}", "resetchannels", "&jwks:{a}:*", "-@all", "+xadd"]
                    .into_iter().map(String::from).collect(),
                vec!["~jwks:{a}:*", "resetchannels", "-@all", "+get"]
                    .into_iter().map(String::from).collect(),
                vec!["%R~x:*", "%W~y", "resetchannels", "&q*", "-@all", "+client|list", "+set"]
                    .into_iter().map(String::from).collect(),
            ])
        );
        assert_eq!(rules("on nopass ~* &* +@all").map(|r| r.len()), Some(1));
        assert_eq!(rules("off resetchannels -@all").map(|r| r.len()), Some(1));
        // A selector's last rule ending in ')' is the only way to close it.
        assert_eq!(rules("on (~a) -@all)"), None);
        assert_eq!(rules("on (~a -@all"), None);
        assert_eq!(rules("on ()").map(|r| r.len()), Some(2));
    }

    #[test]
    fn databases() {
        let r =
            |s: &'static str| -> Vec<&'static [u8]> { s.split(' ').map(str::as_bytes).collect() };
        let allows = |rules: &'static str, db| dbs(&r(rules)).map(|d| d.allows(db));
        assert_eq!(allows("~* +@all", 3), Some(true));
        assert_eq!(allows("~* db=0,3 +@all", 3), Some(true));
        assert_eq!(allows("~* db=0,3 +@all", 1), Some(false));
        assert_eq!(allows("resetdbs ~*", 0), Some(false));
        assert_eq!(allows("alldbs ~*", 9), Some(true));
        assert_eq!(allows("db=x", 0), None);
    }
}

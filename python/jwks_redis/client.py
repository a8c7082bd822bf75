"""Synchronous client. Commands and replies are described in the repository README."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import redis

# --------------------------------------------------------------------------- errors


class JwksError(redis.ResponseError):
    """An error reply from the module (the message is the module's; `code` its first word).

    A subclass of `redis.ResponseError`, so code that catches redis-py's errors keeps working.
    """

    code = "ERR"


class ModuleNotLoaded(JwksError):
    """The server does not know the command: the module is not loaded there."""


class InvalidKeyName(JwksError):
    """BADNAME: the name is refused as a key set name (e.g. it is a derived name)."""

    code = "BADNAME"


class InvalidJwk(JwksError):
    """BADJWK: a JWK or JWKS document was refused (private member, bad key, unknown member...)."""

    code = "BADJWK"


class KidConflict(JwksError):
    """KIDCONFLICT: a kid is already in the key set with other key material (or twice in one command)."""

    code = "KIDCONFLICT"


class UnknownKid(JwksError):
    """NOKID: PROMOTE/RETIRE named a kid that is not in the key set."""

    code = "NOKID"


class InvalidState(JwksError):
    """BADSTATE: the key is already current, or the current key cannot be retired alone."""

    code = "BADSTATE"


class KeySetFull(JwksError):
    """FULL: the key set holds the maximum number of keys."""

    code = "FULL"


class GenerationMismatch(JwksError):
    """GENMISMATCH: IFGEN did not match: the key set changed since it was read (e.g. a duplicate run)."""

    code = "GENMISMATCH"


class WrongType(JwksError):
    """WRONGTYPE: the key (or one of its derived keys) holds another kind of value."""

    code = "WRONGTYPE"


class CorruptKeySet(JwksError):
    """CORRUPT: the stored key set could not be read."""

    code = "CORRUPT"


class NoKeySet(JwksError):
    """NOKEYSET: the command needs an existing key set (JWKS.POLICY, JWKS.INVALIDATE)."""

    code = "NOKEYSET"


class NoPermission(JwksError):
    """NOPERM: the caller's ACL does not allow a key or command the module needs."""

    code = "NOPERM"


class AuditFull(JwksError):
    """AUDITFULL: the audit stream cannot take new entries; nothing was changed."""

    code = "AUDITFULL"


class TooEarly(JwksError):
    """TOOEARLY: a manual PROMOTE/RETIRE before the lifecycle policy allows it (FORCE overrides)."""

    code = "TOOEARLY"


# The module's error codes (the first word of the reply) and the exceptions they become.
_CODES = {
    cls.code: cls
    for cls in (InvalidKeyName, InvalidJwk, KidConflict, UnknownKid, InvalidState, KeySetFull,
                GenerationMismatch, WrongType, CorruptKeySet, NoKeySet, NoPermission, AuditFull,
                TooEarly)
}


def _translate(err: redis.ResponseError) -> JwksError:
    """The module's error reply as the exception of its code (redis-py strips some codes,
    e.g. ERR and NOPERM, from the message and keeps them in `status_code`)."""
    if isinstance(err, JwksError):
        return err
    text = str(err)
    code = getattr(err, "status_code", None)
    if code:
        text = f"{code} {text}"
    else:
        code = text.split(" ", 1)[0]
    if code == "ERR" and text.startswith("ERR unknown command"):
        return ModuleNotLoaded(text)
    return _CODES.get(code, JwksError)(text)


# --------------------------------------------------------------------------- operations


@dataclass(frozen=True)
class Add:
    """Publish a public JWK as `next`."""

    jwk: Mapping[str, Any]

    def args(self) -> list:
        """This operation's JWKS.ROTATE arguments."""
        return ["ADD", json.dumps(dict(self.jwk), separators=(",", ":"))]


@dataclass(frozen=True)
class Promote:
    """Make a published key `current` (the old current becomes `previous`)."""

    kid: str

    def args(self) -> list:
        """This operation's JWKS.ROTATE arguments."""
        return ["PROMOTE", self.kid]


@dataclass(frozen=True)
class Retire:
    """Unpublish a key."""

    kid: str

    def args(self) -> list:
        """This operation's JWKS.ROTATE arguments."""
        return ["RETIRE", self.kid]


@dataclass(frozen=True)
class Replace:
    """Make the published set exactly these public JWKs."""

    jwks: Sequence[Mapping[str, Any]]

    def args(self) -> list:
        """This operation's JWKS.ROTATE arguments."""
        doc = {"keys": [dict(k) for k in self.jwks]}
        return ["REPLACE", json.dumps(doc, separators=(",", ":"))]


Op = Union[Add, Promote, Retire, Replace]

# --------------------------------------------------------------------------- replies


def _s(v: Any) -> Any:
    return v.decode() if isinstance(v, bytes) else v


def _as_dict(reply: Any) -> dict:
    """A RESP3 map or a RESP2 flat array as a dict with str keys."""
    if isinstance(reply, dict):
        return {_s(k): v for k, v in reply.items()}
    items = list(reply)
    return {_s(items[i]): items[i + 1] for i in range(0, len(items), 2)}


def _opt_int(v: Any) -> Optional[int]:
    return None if v is None else int(v)


@dataclass(frozen=True)
class RotateResult:
    """`JWKS.ROTATE`'s reply: the new `generation`, the `current` kid (or None), the
    `published` kids in published order, the number of changes (`changed`; 0 if the
    operations changed nothing), whether the cached document was invalidated and whether
    one was deleted, `invalidation_error` if the invalidation failed (the rotation still
    committed), and with `dry_run` the `document` the rotation would publish."""

    generation: int
    current: Optional[str]
    published: list
    changed: int
    invalidated: bool
    cache_deleted: bool
    invalidation_error: Optional[str] = None
    #: DRYRUN only: the document the rotation would publish.
    document: Optional[str] = None

    @classmethod
    def parse(cls, reply: Any) -> "RotateResult":
        """From the reply (a RESP3 map or a RESP2 flat array)."""
        d = _as_dict(reply)
        return cls(
            generation=int(d["generation"]),
            current=_s(d.get("current")),
            published=[_s(k) for k in d.get("published") or []],
            changed=int(d["changed"]),
            invalidated=bool(int(d["invalidated"])),
            cache_deleted=bool(int(d["cache_deleted"])),
            invalidation_error=_s(d.get("invalidation_error")),
            document=_s(d.get("document")),
        )


@dataclass(frozen=True)
class JwksDocument:
    """`JWKS.GET K META`: the document, its ETag, the generation, and `ttl_ms`, how long a
    copy may be kept (the cache's remaining TTL, never past the next scheduled change)."""

    document: str
    etag: str
    generation: int
    ttl_ms: int

    @classmethod
    def parse(cls, reply: Any) -> "JwksDocument":
        """From the reply of `JWKS.GET K META`."""
        d = _as_dict(reply)
        return cls(document=_s(d["document"]), etag=_s(d["etag"]),
                   generation=int(d["generation"]), ttl_ms=int(d["ttl_ms"]))


@dataclass(frozen=True)
class NextChange:
    """The next change the lifecycle policy will make: `promote` or `retire` kid at at_ms."""

    action: str
    kid: str
    at_ms: int

    @classmethod
    def parse(cls, reply: Any) -> Optional["NextChange"]:
        """From the reply's `next_change` (None for nil)."""
        if reply is None:
            return None
        d = _as_dict(reply)
        return cls(action=_s(d["action"]), kid=_s(d["kid"]), at_ms=int(d["at_ms"]))


@dataclass(frozen=True)
class Policy:
    """The lifecycle policy (0 = that part off) and the next scheduled change.
    `confirm_pct` and `min_wait_ms`: the CONFIRM part (a next key is promoted once that
    share of the live verifiers holds it, and MIN-WAIT has passed; 0 if off or the module
    predates it)."""

    promote_after_ms: int
    retire_after_ms: int
    next_change: Optional[NextChange] = None
    confirm_pct: int = 0
    min_wait_ms: int = 0

    @classmethod
    def parse(cls, reply: Any, next_change: Any = None) -> "Policy":
        """From `JWKS.POLICY`'s reply, or JWKS.INFO's `policy` with its `next_change`."""
        d = _as_dict(reply)
        nc = d.get("next_change", next_change)
        return cls(promote_after_ms=int(d["promote_after_ms"]),
                   retire_after_ms=int(d["retire_after_ms"]),
                   next_change=NextChange.parse(nc),
                   confirm_pct=int(d.get("confirm_pct") or 0),
                   min_wait_ms=int(d.get("min_wait_ms") or 0))


@dataclass(frozen=True)
class KeyInfo:
    """One key of `JWKS.INFO`: its kid, `state` (`next`, `current` or `previous`), `kty`,
    `alg` and `use` (None if the JWK has none), and when it was added, promoted and
    demoted (Unix milliseconds; None if it has not been)."""

    kid: str
    state: str
    kty: str
    alg: Optional[str]
    use: Optional[str]
    added_ms: int
    promoted_ms: Optional[int]
    demoted_ms: Optional[int]


@dataclass(frozen=True)
class KeySetInfo:
    """`JWKS.INFO`: the `generation`, the `current` kid, the `keys` (`KeyInfo`, in published
    order), `cache_ttl_ms` (as PTTL: -2 when no document is cached), the key set's
    `counters`, `audit_length`, the `derived_keys` names, the document's `etag`, the
    lifecycle `policy` (a `Policy` with its `next_change`), the number of live
    `verifiers` (JWKS.ACK) and, under CONFIRM while a next key waits, its `confirmation`
    (a dict: `kid`, `live`, `holding`, `needed`, `confirm_pct`, `min_wait_until_ms`,
    `confirmed`; None otherwise)."""

    generation: int
    current: Optional[str]
    keys: list
    cache_ttl_ms: int
    counters: dict
    audit_length: int
    derived_keys: dict
    etag: Optional[str] = None
    policy: Optional[Policy] = None
    verifiers: int = 0
    confirmation: Optional[dict] = None

    @property
    def next_change(self) -> Optional[NextChange]:
        """The next change the lifecycle policy will make, or None."""
        return self.policy.next_change if self.policy else None

    @classmethod
    def parse(cls, reply: Any) -> "KeySetInfo":
        """From `JWKS.INFO`'s reply (not nil)."""
        d = _as_dict(reply)
        keys = []
        for k in d["keys"]:
            kd = _as_dict(k)
            keys.append(
                KeyInfo(
                    kid=_s(kd["kid"]), state=_s(kd["state"]), kty=_s(kd["kty"]),
                    alg=_s(kd.get("alg")), use=_s(kd.get("use")), added_ms=int(kd["added_ms"]),
                    promoted_ms=_opt_int(kd.get("promoted_ms")),
                    demoted_ms=_opt_int(kd.get("demoted_ms")),
                )
            )
        derived = d.get("derived_keys")
        return cls(
            generation=int(d["generation"]),
            current=_s(d.get("current")),
            keys=keys,
            cache_ttl_ms=int(d.get("cache_ttl_ms", -2)),
            counters={_s(k): int(v) for k, v in _as_dict(d.get("counters") or []).items()},
            audit_length=int(d.get("audit_length", 0)),
            derived_keys={} if derived is None else {_s(k): _s(v) for k, v in _as_dict(derived).items()},
            etag=_s(d.get("etag")),
            policy=None if d.get("policy") is None else Policy.parse(d["policy"], d.get("next_change")),
            verifiers=int(d.get("verifiers") or 0),
            confirmation=None if d.get("confirmation") is None else {
                k: (_s(v) if k == "kid" else int(v))
                for k, v in _as_dict(d["confirmation"]).items()},
        )


@dataclass(frozen=True)
class AuditEntry:
    """One entry of a key set's audit stream: its stream `id` and its `fields` (`action`,
    `reason`, `user`, `generation`, `kid` ..., see docs/data-model.md)."""

    id: str
    fields: dict = field(default_factory=dict)

    @property
    def action(self) -> str:
        """The entry's action (`JWKS_KEY_ADDED`, `JWKS_CACHE_INVALIDATED` ...)."""
        return self.fields.get("action", "")

    @property
    def time_ms(self) -> int:
        """When the entry was written (the stream ID's milliseconds)."""
        return int(self.id.split("-", 1)[0])


def derived_key(key: str, suffix: str) -> str:
    """`K:suffix` if K has a hash tag, else `{K}:suffix` (as the module names them)."""
    start = key.find("{")
    if start != -1:
        end = key.find("}", start + 1)
        if end > start + 1:
            return f"{key}:{suffix}"
    return f"{{{key}}}:{suffix}"


def events_channel(key: str) -> str:
    """The sharded pub/sub channel the module announces every change of `key` on."""
    return derived_key(key, "events")


def _audit_entries(reply: Any) -> list:
    out = []
    for entry_id, fields in reply:
        if isinstance(fields, dict):
            items = fields.items()
        else:
            items = zip(fields[::2], fields[1::2])
        out.append(AuditEntry(id=_s(entry_id), fields={_s(k): _s(v) for k, v in items}))
    return out


def _number(v: Any) -> Union[int, float]:
    text = _s(v)
    try:
        return int(text)
    except ValueError:
        return float(text)  # gauges in seconds with milliseconds


def _stats(reply: Any) -> dict:
    """{name: int or float}: counters are integers, lifecycle gauges seconds."""
    flat = list(reply)
    return {_s(flat[i]): _number(flat[i + 1]) for i in range(0, len(flat), 2)}


def _get_reply(meta: bool) -> Callable[[Any], Any]:
    if meta:
        return lambda r: None if r is None else JwksDocument.parse(r)
    return _s


def _key_reply(reply: Any) -> Optional[dict]:
    return None if reply is None else json.loads(reply)


# One (arguments, reply parser) pair per command, shared by the sync and async clients so
# the two cannot drift apart.


def _rotate_cmd(key: str, ops: Iterable[Op], if_gen: Optional[int], reason: Optional[str],
                force: bool = False, dry_run: bool = False) -> tuple:
    args: list = ["JWKS.ROTATE", key]
    if if_gen is not None:
        args += ["IFGEN", str(if_gen)]
    if reason is not None:
        args += ["REASON", reason]
    if force:
        args.append("FORCE")
    if dry_run:
        args.append("DRYRUN")
    ops = list(ops)
    if not ops:
        raise ValueError("rotate needs at least one operation")
    for op in ops:
        args += op.args()
    return args, RotateResult.parse


def _rotate_args(key: str, ops: Iterable[Op], if_gen: Optional[int], reason: Optional[str]) -> list:
    return _rotate_cmd(key, ops, if_gen, reason)[0]


def _invalidate_cmd(key: str, reason: Optional[str]) -> tuple:
    return ["JWKS.INVALIDATE", key] + (["REASON", reason] if reason else []), lambda r: bool(int(r))


def _get_cmd(key: str, meta: bool) -> tuple:
    return ["JWKS.GET", key] + (["META"] if meta else []), _get_reply(meta)


def _info_cmd(key: str) -> tuple:
    return ["JWKS.INFO", key], lambda r: None if r is None else KeySetInfo.parse(r)


def _policy_cmd(key: str, promote_after_ms: Optional[int], retire_after_ms: Optional[int],
                confirm_pct: Optional[int] = None, min_wait_ms: Optional[int] = None) -> tuple:
    args: list = ["JWKS.POLICY", key]
    if promote_after_ms is not None:
        args += ["PROMOTE-AFTER", str(int(promote_after_ms))]
    if retire_after_ms is not None:
        args += ["RETIRE-AFTER", str(int(retire_after_ms))]
    if confirm_pct is not None:
        args += ["CONFIRM", str(int(confirm_pct))]
    if min_wait_ms is not None:
        args += ["MIN-WAIT", str(int(min_wait_ms))]
    return args, Policy.parse


def _ack_cmd(key: str, generation: int, ack_id: str, ttl_ms: Optional[int]) -> tuple:
    args: list = ["JWKS.ACK", key, "GENERATION", str(int(generation)), "ID", ack_id]
    if ttl_ms is not None:
        args += ["TTL", str(int(ttl_ms))]
    return args, int


def _verifier(entry: Any) -> dict:
    d = _as_dict(entry)
    return {k: (_s(v) if k == "id" else int(v)) for k, v in d.items()}


def _verifiers_cmd(key: str) -> tuple:
    return ["JWKS.VERIFIERS", key], lambda r: [_verifier(e) for e in r]


def _audit_cmd(key: str, start: str, end: str, count: Optional[int]) -> tuple:
    args: list = ["XRANGE", derived_key(key, "audit"), start, end]
    if count is not None:
        args += ["COUNT", int(count)]
    return args, _audit_entries


class JwksClient:
    """Wraps a `redis.Redis` (or `redis.cluster.RedisCluster`) connected to a server with
    the module loaded. `AsyncJwksClient` has the same methods on `redis.asyncio`."""

    def __init__(self, client: Any):
        self.redis = client

    def _run(self, cmd: tuple) -> Any:
        args, parse = cmd
        try:
            reply = self.redis.execute_command(*args)
        except redis.ResponseError as e:
            raise _translate(e) from e
        return parse(reply)

    def rotate(self, key: str, ops: Sequence[Op], *, if_gen: Optional[int] = None,
               reason: Optional[str] = None, force: bool = False,
               dry_run: bool = False) -> RotateResult:
        """Apply ops atomically and invalidate the cached JWKS (JWKS.ROTATE). `force`
        overrides the lifecycle policy's guards; `dry_run` writes nothing and returns the
        document the rotation would publish."""
        return self._run(_rotate_cmd(key, ops, if_gen, reason, force, dry_run))

    def invalidate(self, key: str, reason: Optional[str] = None) -> bool:
        """Delete the cached JWKS; True if a document was cached (JWKS.INVALIDATE)."""
        return self._run(_invalidate_cmd(key, reason))

    def get(self, key: str, *, meta: bool = False) -> Any:
        """The JWKS document (str), or None if there is no key set (JWKS.GET). With
        `meta=True`, a `JwksDocument` with its ETag, generation and ttl_ms."""
        return self._run(_get_cmd(key, meta))

    def key(self, key: str, kid: str) -> Optional[dict]:
        """The published JWK with that kid, or None (JWKS.KEY)."""
        return self._run((["JWKS.KEY", key, kid], _key_reply))

    def info(self, key: str) -> Optional[KeySetInfo]:
        """State, keys, policy, counters and derived key names (JWKS.INFO), or None."""
        return self._run(_info_cmd(key))

    def policy(self, key: str, *, promote_after_ms: Optional[int] = None,
               retire_after_ms: Optional[int] = None, confirm_pct: Optional[int] = None,
               min_wait_ms: Optional[int] = None) -> Policy:
        """Set (an argument left None keeps its value) and return the lifecycle policy
        (JWKS.POLICY): `confirm_pct` (0 off, 1..100) and `min_wait_ms` are its CONFIRM and
        MIN-WAIT. Raises NoKeySet if there is no key set."""
        return self._run(_policy_cmd(key, promote_after_ms, retire_after_ms, confirm_pct,
                                     min_wait_ms))

    def audit(self, key: str, start: str = "-", end: str = "+",
              count: Optional[int] = None) -> list:
        """The audit trail (XRANGE of the key set's audit stream) as AuditEntry objects."""
        return self._run(_audit_cmd(key, start, end, count))

    def ack(self, key: str, generation: int, ack_id: str, ttl_ms: Optional[int] = None) -> int:
        """Report that verifier `ack_id` holds `generation` of the key set, for `ttl_ms`
        (JWKS.ACK; the module's default 30 s if None). Returns the key set's current
        generation. A KeyCache acks by itself; this is for other verifiers."""
        return self._run(_ack_cmd(key, generation, ack_id, ttl_ms))

    def verifiers(self, key: str) -> list:
        """The key set's live verifiers (JWKS.VERIFIERS), sorted by id: one dict each with
        `id`, `generation`, `current`, `next`, `age_ms`, `ttl_ms`."""
        return self._run(_verifiers_cmd(key))

    def stats(self) -> dict:
        """This node's counters (JWKS.STATS) as {name: int}."""
        return self._run((["JWKS.STATS"], _stats))

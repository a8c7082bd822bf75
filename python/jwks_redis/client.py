"""Synchronous client. Commands and replies are described in the repository README."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import redis

# --------------------------------------------------------------------------- errors


class JwksError(Exception):
    """An error reply from the module (the message is the module's)."""


class GenerationMismatch(JwksError):
    """IFGEN did not match: the key set changed since it was read (e.g. a duplicate run)."""


class InvalidJwk(JwksError):
    """A JWK or JWKS document was refused (private member, bad key, unknown member...)."""


class UnknownKid(JwksError):
    """PROMOTE/RETIRE named a kid that is not in the key set."""


# The module's error codes (the first word of the reply) and the exceptions they become.
_CODES = {
    "GENMISMATCH": lambda t: GenerationMismatch(t),
    "NOKID": lambda t: UnknownKid(t),
    "BADJWK": lambda t: InvalidJwk(t),
}


def _translate(err: redis.ResponseError) -> JwksError:
    text = str(err)
    code = text.split(" ", 1)[0]
    return _CODES.get(code, JwksError)(text)


# --------------------------------------------------------------------------- operations


@dataclass(frozen=True)
class Add:
    """Publish a public JWK as `next`."""

    jwk: Mapping[str, Any]

    def args(self) -> list:
        return ["ADD", json.dumps(dict(self.jwk), separators=(",", ":"))]


@dataclass(frozen=True)
class Promote:
    """Make a published key `current` (the old current becomes `previous`)."""

    kid: str

    def args(self) -> list:
        return ["PROMOTE", self.kid]


@dataclass(frozen=True)
class Retire:
    """Unpublish a key."""

    kid: str

    def args(self) -> list:
        return ["RETIRE", self.kid]


@dataclass(frozen=True)
class Replace:
    """Make the published set exactly these public JWKs."""

    jwks: Sequence[Mapping[str, Any]]

    def args(self) -> list:
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


@dataclass(frozen=True)
class RotateResult:
    generation: int
    current: Optional[str]
    published: list
    changed: int
    invalidated: bool
    cache_deleted: bool
    invalidation_error: Optional[str] = None

    @classmethod
    def parse(cls, reply: Any) -> "RotateResult":
        d = _as_dict(reply)
        return cls(
            generation=int(d["generation"]),
            current=_s(d.get("current")),
            published=[_s(k) for k in d.get("published") or []],
            changed=int(d["changed"]),
            invalidated=bool(int(d["invalidated"])),
            cache_deleted=bool(int(d["cache_deleted"])),
            invalidation_error=_s(d.get("invalidation_error")),
        )


@dataclass(frozen=True)
class KeyInfo:
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
    generation: int
    current: Optional[str]
    keys: list
    cache_ttl_ms: int
    counters: dict
    audit_length: int
    derived_keys: dict

    @classmethod
    def parse(cls, reply: Any) -> "KeySetInfo":
        d = _as_dict(reply)
        keys = []
        for k in d["keys"]:
            kd = _as_dict(k)
            opt = lambda name: None if kd.get(name) is None else int(kd[name])  # noqa: E731
            keys.append(
                KeyInfo(
                    kid=_s(kd["kid"]), state=_s(kd["state"]), kty=_s(kd["kty"]),
                    alg=_s(kd.get("alg")), use=_s(kd.get("use")), added_ms=int(kd["added_ms"]),
                    promoted_ms=opt("promoted_ms"), demoted_ms=opt("demoted_ms"),
                )
            )
        return cls(
            generation=int(d["generation"]),
            current=_s(d.get("current")),
            keys=keys,
            cache_ttl_ms=int(d["cache_ttl_ms"]),
            counters={_s(k): int(v) for k, v in _as_dict(d["counters"]).items()},
            audit_length=int(d["audit_length"]),
            derived_keys={_s(k): _s(v) for k, v in _as_dict(d["derived_keys"]).items()},
        )


@dataclass(frozen=True)
class AuditEntry:
    id: str
    fields: dict = field(default_factory=dict)

    @property
    def action(self) -> str:
        return self.fields.get("action", "")


def derived_key(key: str, suffix: str) -> str:
    """`K:suffix` if K has a hash tag, else `{K}:suffix` (as the module names them)."""
    start = key.find("{")
    if start != -1:
        end = key.find("}", start + 1)
        if end > start + 1:
            return f"{key}:{suffix}"
    return f"{{{key}}}:{suffix}"


def _rotate_args(key: str, ops: Iterable[Op], if_gen: Optional[int], reason: Optional[str]) -> list:
    args: list = ["JWKS.ROTATE", key]
    if if_gen is not None:
        args += ["IFGEN", str(if_gen)]
    if reason is not None:
        args += ["REASON", reason]
    for op in ops:
        args += op.args()
    return args


def _audit_entries(reply: Any) -> list:
    out = []
    for entry_id, fields in reply:
        if isinstance(fields, dict):
            items = fields.items()
        else:
            items = zip(fields[::2], fields[1::2])
        out.append(AuditEntry(id=_s(entry_id), fields={_s(k): _s(v) for k, v in items}))
    return out


class JwksClient:
    """Wraps a `redis.Redis` connected to a server with the module loaded."""

    def __init__(self, client: redis.Redis):
        self.redis = client

    def _call(self, *args: Any) -> Any:
        try:
            return self.redis.execute_command(*args)
        except redis.ResponseError as e:
            raise _translate(e) from e

    def rotate(self, key: str, ops: Sequence[Op], *, if_gen: Optional[int] = None,
               reason: Optional[str] = None) -> RotateResult:
        """Apply ops atomically and invalidate the cached JWKS (JWKS.ROTATE)."""
        return RotateResult.parse(self._call(*_rotate_args(key, ops, if_gen, reason)))

    def invalidate(self, key: str, reason: Optional[str] = None) -> bool:
        """Delete the cached JWKS; True if a document was cached (JWKS.INVALIDATE)."""
        args = ["JWKS.INVALIDATE", key] + (["REASON", reason] if reason else [])
        return bool(self._call(*args))

    def get(self, key: str) -> Optional[str]:
        """The JWKS document, or None if there is no key set (JWKS.GET)."""
        return _s(self._call("JWKS.GET", key))

    def info(self, key: str) -> Optional[KeySetInfo]:
        reply = self._call("JWKS.INFO", key)
        return None if reply is None else KeySetInfo.parse(reply)

    def audit(self, key: str, start: str = "-", end: str = "+",
              count: Optional[int] = None) -> list:
        """The audit trail (XRANGE of the key set's audit stream) as AuditEntry objects."""
        args = ["XRANGE", derived_key(key, "audit"), start, end]
        if count is not None:
            args += ["COUNT", count]
        return _audit_entries(self.redis.execute_command(*args))

    def stats(self) -> dict:
        flat = self._call("JWKS.STATS")
        return {_s(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}

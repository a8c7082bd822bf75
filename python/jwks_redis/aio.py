"""asyncio client: the same methods as JwksClient (same names, same signatures), awaited, on
`redis.asyncio.Redis` or `redis.asyncio.cluster.RedisCluster`."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import redis

from .client import (
    KeySetInfo,
    Op,
    Policy,
    RotateResult,
    _ack_cmd,
    _audit_cmd,
    _get_cmd,
    _info_cmd,
    _invalidate_cmd,
    _key_reply,
    _policy_cmd,
    _rotate_cmd,
    _stats,
    _translate,
    _verifiers_cmd,
)


class AsyncJwksClient:
    """JwksClient for asyncio: wraps a `redis.asyncio.Redis` (or
    `redis.asyncio.cluster.RedisCluster`); the same methods with the same signatures,
    awaited (a test compares them)."""

    def __init__(self, client: Any):
        self.redis = client

    async def _run(self, cmd: tuple) -> Any:
        args, parse = cmd
        try:
            reply = await self.redis.execute_command(*args)
        except redis.ResponseError as e:
            raise _translate(e) from e
        return parse(reply)

    async def rotate(self, key: str, ops: Sequence[Op], *, if_gen: Optional[int] = None,
                     reason: Optional[str] = None, force: bool = False,
                     dry_run: bool = False) -> RotateResult:
        """See JwksClient.rotate."""
        return await self._run(_rotate_cmd(key, ops, if_gen, reason, force, dry_run))

    async def invalidate(self, key: str, reason: Optional[str] = None) -> bool:
        """See JwksClient.invalidate."""
        return await self._run(_invalidate_cmd(key, reason))

    async def get(self, key: str, *, meta: bool = False) -> Any:
        """See JwksClient.get."""
        return await self._run(_get_cmd(key, meta))

    async def key(self, key: str, kid: str) -> Optional[dict]:
        """See JwksClient.key."""
        return await self._run((["JWKS.KEY", key, kid], _key_reply))

    async def info(self, key: str) -> Optional[KeySetInfo]:
        """See JwksClient.info."""
        return await self._run(_info_cmd(key))

    async def policy(self, key: str, *, promote_after_ms: Optional[int] = None,
                     retire_after_ms: Optional[int] = None, confirm_pct: Optional[int] = None,
                     min_wait_ms: Optional[int] = None) -> Policy:
        """See JwksClient.policy."""
        return await self._run(_policy_cmd(key, promote_after_ms, retire_after_ms, confirm_pct,
                                           min_wait_ms))

    async def audit(self, key: str, start: str = "-", end: str = "+",
                    count: Optional[int] = None) -> list:
        """See JwksClient.audit."""
        return await self._run(_audit_cmd(key, start, end, count))

    async def ack(self, key: str, generation: int, ack_id: str,
                  ttl_ms: Optional[int] = None) -> int:
        """See JwksClient.ack."""
        return await self._run(_ack_cmd(key, generation, ack_id, ttl_ms))

    async def verifiers(self, key: str) -> list:
        """See JwksClient.verifiers."""
        return await self._run(_verifiers_cmd(key))

    async def stats(self) -> dict:
        """See JwksClient.stats."""
        return await self._run((["JWKS.STATS"], _stats))

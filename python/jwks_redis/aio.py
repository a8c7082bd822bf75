"""asyncio client: the same calls as JwksClient, on `redis.asyncio.Redis`."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import redis
import redis.asyncio

from .client import (
    KeySetInfo,
    Op,
    RotateResult,
    _audit_entries,
    _rotate_args,
    _s,
    _translate,
    derived_key,
)


class AsyncJwksClient:
    def __init__(self, client: redis.asyncio.Redis):
        self.redis = client

    async def _call(self, *args: Any) -> Any:
        try:
            return await self.redis.execute_command(*args)
        except redis.ResponseError as e:
            raise _translate(e) from e

    async def rotate(self, key: str, ops: Sequence[Op], *, if_gen: Optional[int] = None,
                     reason: Optional[str] = None) -> RotateResult:
        return RotateResult.parse(await self._call(*_rotate_args(key, ops, if_gen, reason)))

    async def invalidate(self, key: str, reason: Optional[str] = None) -> bool:
        args = ["JWKS.INVALIDATE", key] + (["REASON", reason] if reason else [])
        return bool(await self._call(*args))

    async def get(self, key: str) -> Optional[str]:
        return _s(await self._call("JWKS.GET", key))

    async def info(self, key: str) -> Optional[KeySetInfo]:
        reply = await self._call("JWKS.INFO", key)
        return None if reply is None else KeySetInfo.parse(reply)

    async def audit(self, key: str, start: str = "-", end: str = "+") -> list:
        reply = await self.redis.execute_command("XRANGE", derived_key(key, "audit"), start, end)
        return _audit_entries(reply)

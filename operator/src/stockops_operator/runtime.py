"""What the handlers share in one operator process: settings, API clients, per-object locks.

kopf runs an object's event handlers one at a time, but its timers run beside them; the
per-object lock keeps a timer tick and an event-driven reconcile of the same object from
interleaving (two ticks deciding on the same Jobs could otherwise both act).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httpx

from stockops_operator.kubeapi import KubeApi
from stockops_operator.settings import Settings


@dataclass
class Runtime:
    """Created once at operator start-up and kept in kopf's `memo`."""

    settings: Settings
    kube: KubeApi
    http: httpx.AsyncClient
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def lock(self, uid: str) -> asyncio.Lock:
        """The lock of one object (by uid); created on first use."""
        return self.locks.setdefault(uid, asyncio.Lock())

    def forget(self, uid: str) -> None:
        """Drop the lock of a deleted object."""
        self.locks.pop(uid, None)

    async def close(self) -> None:
        await self.kube.close()
        await self.http.aclose()

"""Volumes in Redis: ``P:vol:{id}`` (status JSON), ``P:vol:{id}:full`` and
``P:vol:{id}:coarse`` (packed sample tiers, :mod:`service.volumes.history`), ``P:volumes``
(the set of volume ids). Names from :mod:`service.keys`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from service.keys import Keys
from service.volumes import history
from service.volumes.projection import Sample
from service.volumes.store import VolumeStore


class RedisVolumeStore(VolumeStore):
    """Statuses and histories in one Redis (the job store's client and prefix)."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.r = client
        self.keys = keys

    def add_samples(self, volume_id: str, samples: Iterable[Sample]) -> None:
        new = list(samples)
        k_full, k_coarse = self.keys.volume_full(volume_id), self.keys.volume_coarse(volume_id)

        def apply(pipe: Any) -> None:
            full = history.unpack(pipe.get(k_full))
            coarse = history.unpack(pipe.get(k_coarse))
            full, coarse = history.add(full, coarse, new)
            pipe.multi()
            pipe.set(k_full, history.pack(full))
            pipe.set(k_coarse, history.pack(coarse))
            pipe.sadd(self.keys.volumes, volume_id)

        # WATCH both tiers: a scheduled and an on-demand scan may write at once.
        self.r.transaction(apply, k_full, k_coarse)

    def history(self, volume_id: str) -> list[Sample]:
        full, coarse = self.r.mget([self.keys.volume_full(volume_id),
                                    self.keys.volume_coarse(volume_id)])
        return history.unpack(coarse) + history.unpack(full)

    def put_status(self, volume_id: str, status: Mapping[str, Any]) -> None:
        pipe = self.r.pipeline()
        pipe.set(self.keys.volume(volume_id), json.dumps(dict(status), separators=(",", ":")))
        pipe.sadd(self.keys.volumes, volume_id)
        pipe.execute()

    def status(self, volume_id: str) -> dict[str, Any] | None:
        raw = self.r.get(self.keys.volume(volume_id))
        return None if raw is None else dict(json.loads(raw))

    def statuses(self) -> list[dict[str, Any]]:
        ids = sorted(v.decode() if isinstance(v, bytes) else str(v)
                     for v in self.r.smembers(self.keys.volumes))
        if not ids:
            return []
        raws = self.r.mget([self.keys.volume(i) for i in ids])
        return [dict(json.loads(raw)) for raw in raws if raw is not None]

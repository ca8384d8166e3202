"""Where the volumes live: each volume's latest status and its sample history.

:class:`VolumeStore` is abstract; :class:`service.volumes.redis_store.RedisVolumeStore`
keeps them in Redis (key names in :mod:`service.keys`), :class:`StubVolumeStore` in memory
for fast tests. The job store carries one as ``store.volumes``.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any

from service.volumes import history
from service.volumes.projection import Sample


class VolumeStore(ABC):
    """Statuses (one JSON-able dict per volume id) and bounded sample histories."""

    @abstractmethod
    def add_samples(self, volume_id: str, samples: Iterable[Sample]) -> None:
        """Append samples (time order) to the volume's history, tiers kept bounded."""

    @abstractmethod
    def history(self, volume_id: str) -> list[Sample]:
        """The volume's samples, oldest first (coarse tier, then full)."""

    @abstractmethod
    def put_status(self, volume_id: str, status: Mapping[str, Any]) -> None:
        """Store the volume's latest status (replaces the previous one)."""

    @abstractmethod
    def status(self, volume_id: str) -> dict[str, Any] | None:
        """The volume's latest status, or ``None``."""

    @abstractmethod
    def statuses(self) -> list[dict[str, Any]]:
        """Every volume's latest status (in id order)."""

    def add_sample(self, volume_id: str, sample: Sample) -> None:
        self.add_samples(volume_id, [sample])


class StubVolumeStore(VolumeStore):
    """In memory, for fast tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tiers: dict[str, tuple[list[Sample], list[Sample]]] = {}
        self._status: dict[str, dict[str, Any]] = {}

    def add_samples(self, volume_id: str, samples: Iterable[Sample]) -> None:
        with self._lock:
            full, coarse = self._tiers.get(volume_id, ([], []))
            self._tiers[volume_id] = history.add(full, coarse, samples)

    def history(self, volume_id: str) -> list[Sample]:
        with self._lock:
            full, coarse = self._tiers.get(volume_id, ([], []))
            return coarse + full

    def put_status(self, volume_id: str, status: Mapping[str, Any]) -> None:
        import json
        with self._lock:
            self._status[volume_id] = json.loads(json.dumps(dict(status)))

    def status(self, volume_id: str) -> dict[str, Any] | None:
        with self._lock:
            got = self._status.get(volume_id)
            return None if got is None else dict(got)

    def statuses(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(self._status[k]) for k in sorted(self._status)]

"""The bounded sample tiers (pure) and the stub volume store."""

from __future__ import annotations

from service.store import StubJobStore
from service.volumes import history
from service.volumes.projection import Sample

DAY = 86400


def series(seconds: int, step: int = 300, t0: int = 1_700_000_000) -> list[Sample]:
    return [Sample(float(t0 + i), 10**12 - i, 5 * 10**11 + i, 10**9) for i in
            range(0, seconds, step)]


def test_pack_roundtrip_and_torn_tail() -> None:
    s = series(3600)
    data = history.pack(s)
    assert len(data) == len(s) * history.RECORD.size == len(s) * 28
    assert history.unpack(data) == s
    assert history.unpack(data + b"\x01\x02") == s
    assert history.unpack(None) == []


def test_thirty_days_stay_bounded() -> None:
    full, coarse = history.add([], [], series(45 * DAY))
    newest = full[-1].t
    assert len(full) == DAY // 300           # every sample of the last day
    assert all(newest - s.t <= DAY for s in full)
    assert len(coarse) == 29 * 24 + 1
    assert all(newest - s.t <= 30 * DAY for s in coarse)
    # One per hour: the hour's last sample.
    hours = [int(s.t) // 3600 for s in coarse]
    assert hours == sorted(set(hours))
    assert all((int(s.t) + 300) // 3600 > int(s.t) // 3600 for s in coarse[:-1])
    assert len(history.pack(full) + history.pack(coarse)) == history.TYPICAL_BYTES == 27580


def test_one_at_a_time_equals_a_batch() -> None:
    s = series(3 * DAY)
    full: list[Sample] = []
    coarse: list[Sample] = []
    for x in s:
        full, coarse = history.add(full, coarse, [x])
    assert (full, coarse) == history.add([], [], s)


def test_fast_scans_are_thinned_and_late_ones_ignored() -> None:
    full, coarse = history.add([], [], series(2 * DAY, step=10))
    assert len(full) <= DAY // history.MIN_SPACING + 1
    assert len(history.pack(full) + history.pack(coarse)) <= history.MAX_BYTES
    late = Sample(full[0].t - 5000, 1, 1, 1)
    assert history.add(full, coarse, [late]) == (full, coarse)


def test_stub_store() -> None:
    vols = StubJobStore().volumes
    vols.add_samples("v1", series(3600))
    vols.add_sample("v1", Sample(1_700_000_000 + 7200, 5, 6, 7))
    got = vols.history("v1")
    assert len(got) == 13 and got[-1].free_bytes == 5
    vols.put_status("v1", {"id": "v1", "risk": "ok"})
    assert vols.status("v1") == {"id": "v1", "risk": "ok"}
    assert vols.status("nope") is None
    assert [s["id"] for s in vols.statuses()] == ["v1"]

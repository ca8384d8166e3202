"""vhdlib.check on untouched real images (issue 9, item 10): what real writers leave is a
note (exit 0, shown), never a problem, and nothing is counted twice."""

from __future__ import annotations

import pytest

from tests.vhdmend.helpers import run_cli
from vhdlib.check import check

NOTES = [
    pytest.param("qemu-iotests/d2v-zerofilled.vhd", "bitmap_past_end", marks=pytest.mark.slow),
    ("dfvfs/image.orig-9f3915f.vhd", "bitmap_past_end"),
    ("freebsd-mkimg/img-63x255-512-mbr.vhd", "orphan_tail"),
    pytest.param("qemu-iotests/test-disk2vhd.vhdx", "orphan_tail", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("name", "code"), NOTES)
def test_untouched_real_image_is_clean_with_a_note(real_image, name: str, code: str) -> None:
    report = check(str(real_image(name)))
    assert report.clean, report.to_dict()
    assert [n.code for n in report.notes] == [code]
    r = run_cli("check", real_image(name))
    assert r.code == 0, r.out + r.err
    assert f"note: {code}" in r.out


def test_bad_checksum_counted_once_without_lenient_wording(real_image) -> None:
    """dfvfs image.vhd: a hand-edited footer checksum (and the informational bitmap bits)."""
    report = check(str(real_image("dfvfs/image.vhd")))
    assert [p.code for p in report.problems] == ["footer_checksum"]
    assert [n.code for n in report.notes] == ["bitmap_past_end"]
    text = " ".join(p.message for p in report.problems + report.notes)
    assert "lenient" not in text


def test_dirty_log_is_a_problem_reported_once(real_image) -> None:
    """A log not yet replayed: other readers (libvhdi) see stale data until it is."""
    report = check(str(real_image("discutils/vhdx-log-replay.vhdx")))
    assert [p.code for p in report.problems] == ["dirty_log"]
    assert report.notes == []


def test_lenient_pair_checks_parent_as_info_opens_it(real_image) -> None:
    """dfvfs image-differential.vhd: its parent image.vhd has a bad checksum, so without
    --lenient the chain is unreadable (as for info) and the parent is named."""
    child = str(real_image("dfvfs/image-differential.vhd"))
    strict = check(child)
    link = [p for p in strict.problems if p.code == "parent_link"]
    assert link and "image.vhd" in link[0].message and "checksum" in link[0].message
    lenient = check(child, lenient=True)
    assert not [p for p in lenient.problems if p.code == "parent_link"]

"""The format registry: a format defined here, in the test, is picked up everywhere.

``tiny`` is a raw-ish format of this test's own: a 512-byte header (magic, id, parent id,
virtual size) then the disk's bytes. Registered read-only, it must open, describe itself,
convert *from*, be seen by the dependents check, and be refused as a create/convert
target; registered writable (the same layer plus a create function) it must appear in
the CLI's format choices and convert *to* it must work.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import vhdlib
from tests.chains import build_chain, read_all
from vhdlib import fileio, formats, ops
from vhdlib.errors import DependentChildrenError, ImageError, UsageError
from vhdlib.extents import Segment, SegmentState
from vhdlib.layer import DiskType, Layer, ParentLink

MAGIC = b"TINYDISK"
HEADER = struct.Struct("<8s16s16sQ")
HEADER_SIZE = 512


class TinyLayer(Layer):
    """Header, then the disk's bytes: every sector PRESENT at ``512 + offset``."""

    format = "tiny"

    def __init__(self, path: str, fd: int, *, writable: bool = False,
                 lenient: bool = False) -> None:
        super().__init__(path, fd, writable=writable, lenient=lenient)
        magic, own, parent, size = HEADER.unpack(fileio.pread(fd, HEADER.size, 0))
        if magic != MAGIC or os.fstat(fd).st_size != HEADER_SIZE + size:
            raise ImageError("not a tiny image", path=path)
        self._id, self._parent = uuid.UUID(bytes=own), uuid.UUID(bytes=parent)
        self.virtual_size = size
        self.disk_type = DiskType.FIXED if self._parent.int == 0 else DiskType.DIFFERENCING

    @property
    def link_id(self) -> uuid.UUID:
        return self._id

    @property
    def parent_link(self) -> ParentLink | None:
        if self._parent.int == 0:
            return None
        return ParentLink(self._parent, [], os.path.dirname(os.path.abspath(self.path)))

    def segments(self, offset: int, length: int) -> Iterator[Segment]:
        if length:
            yield Segment(offset, length, SegmentState.PRESENT, HEADER_SIZE + offset)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self._require_writable()
        fileio.pwrite(self._fd, memoryview(data).cast("B"), HEADER_SIZE + offset)


def write_tiny(path: Path, data: bytes, *, parent: uuid.UUID | None = None) -> uuid.UUID:
    own = uuid.uuid4()
    parent_bytes = (parent or uuid.UUID(int=0)).bytes
    path.write_bytes(HEADER.pack(MAGIC, own.bytes, parent_bytes, len(data)).ljust(HEADER_SIZE,
                                                                                  b"\0") + data)
    return own


def _probe(fd: int, size: int) -> bool:
    return size >= HEADER_SIZE and fileio.pread(fd, len(MAGIC), 0) == MAGIC


def _create(path: str, req: formats.NewDisk) -> Layer:
    assert req.virtual_size is not None
    with fileio.new_image(path, needed=0) as fd:
        header = HEADER.pack(MAGIC, (req.uuid or uuid.uuid4()).bytes, bytes(16),
                             req.virtual_size)
        fileio.pwrite(fd, header.ljust(HEADER_SIZE, b"\0"), 0)
        os.ftruncate(fd, HEADER_SIZE + req.virtual_size)
        return TinyLayer(path, fd, writable=True)


#: Read-only: no create function.
TINY = formats.Format("tiny", "Tiny", (".tiny",), TinyLayer, child_suffixes=(".atiny",),
                      probe=_probe)
#: The same format, writable (fixed disks only).
TINY_RW = replace(TINY, create=_create, disk_types=(DiskType.FIXED,))


@pytest.fixture
def tiny() -> Iterator[formats.Format]:
    with formats.registered(TINY) as fmt:
        yield fmt
    assert "tiny" not in formats.names()


def cli(*argv: str) -> tuple[int, str, str]:
    """The CLI in this process (the registration is not visible to a subprocess)."""
    from vhdmend import cli as vcli
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = vcli.main(list(argv))
        except SystemExit as e:  # argparse's usage errors
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


DATA = bytes(range(256)) * 2048 + b"\x07" * (1 << 20) + bytes(1 << 20)  # 2.5 MiB


def test_open_and_info_detect_the_registered_format(tmp_path: Path, tiny) -> None:
    path = tmp_path / "disk.tiny"
    write_tiny(path, DATA)
    assert formats.detect(str(path)) == "tiny"
    with vhdlib.open(path) as disk:
        assert disk.read(0, len(DATA)) == DATA
        assert disk.info()["format"] == "tiny"
    code, out, err = cli("info", str(path), "--json")
    assert code == 0, err
    assert json.loads(out)["format"] == "tiny" and json.loads(out)["virtual_size"] == len(DATA)


def test_unregistered_it_is_not_a_disk(tmp_path: Path) -> None:
    path = tmp_path / "disk.tiny"
    write_tiny(path, DATA)
    with pytest.raises(ImageError, match="not a VHD or VHDX"):
        formats.detect(str(path))


def test_convert_from_it(tmp_path: Path, tiny) -> None:
    src = tmp_path / "disk.tiny"
    write_tiny(src, DATA)
    for fmt in ("vhd", "vhdx"):
        out = tmp_path / f"out.{fmt}"
        ops.prepare("convert", str(src), str(out), type="dynamic").run()
        assert read_all(out) == DATA
    # A destination without a known suffix: the source's format cannot be written, so VHD.
    out = tmp_path / "out.disk"
    ops.prepare("convert", str(src), str(out)).run()
    assert formats.detect(str(out)) == "vhd" and read_all(out) == DATA
    code, _, err = cli("convert", str(src), str(tmp_path / "cli.vhdx"), "-q")
    assert code == 0, err
    assert read_all(tmp_path / "cli.vhdx") == DATA


def test_it_is_refused_as_a_target_while_read_only(tmp_path: Path, tiny) -> None:
    src = tmp_path / "disk.tiny"
    write_tiny(src, DATA)
    assert "tiny" not in formats.writable_names()
    with pytest.raises(UsageError, match="read-only"):
        formats.create(str(tmp_path / "new.tiny"), "tiny",
                       formats.NewDisk(1 << 20, DiskType.FIXED))
    with pytest.raises(UsageError, match=r"(?i)tiny"):
        ops.prepare("convert", str(src), str(tmp_path / "out.tiny"))
    with pytest.raises(UsageError, match=r"(?i)tiny"):
        ops.prepare("convert", str(src), str(tmp_path / "out.vhd"), format="tiny")
    code, _, err = cli("convert", str(src), str(tmp_path / "o.vhd"), "--format", "tiny")
    assert code == 2 and "tiny" in err
    # create picks the format from the suffix, and refuses it.
    code, _, err = cli("create", str(tmp_path / "new.tiny"), "--type", "fixed", "--size", "1M")
    assert code == 2 and "read-only" in err
    assert not (tmp_path / "new.tiny").exists() and not (tmp_path / "o.vhd").exists()


def test_writable_it_is_offered_and_written(tmp_path: Path) -> None:
    src = tmp_path / "disk.tiny"
    write_tiny(src, DATA)
    with formats.registered(TINY_RW):
        code, _, err = cli("convert", "--help")
        assert code == 0 and "tiny" in _, err
        out = tmp_path / "copy.tiny"
        ops.prepare("convert", str(src), str(out)).run()
        with vhdlib.open(out) as disk:
            assert disk.top.format == "tiny" and disk.read(0, len(DATA)) == DATA
        # The API's options schema (and so its OpenAPI enum) offers it too.
        from api.jobs.schemas import load_options
        assert load_options("remediate", {"format": "tiny"}) == {"format": "tiny"}
        # Only what it declares: no dynamic tiny disks.
        with pytest.raises(UsageError, match="no dynamic"):
            ops.prepare("convert", str(src), str(tmp_path / "d.tiny"), type="dynamic")
    code, out_text, _ = cli("convert", "--help")
    assert code == 0 and "tiny" not in out_text


def test_api_refuses_it_while_read_only(tiny) -> None:
    from marshmallow import ValidationError

    from api.jobs.schemas import load_options
    with pytest.raises(ValidationError, match="format"):
        load_options("convert", {"output": "o.tiny", "format": "tiny"})


def test_dependents_check_sees_its_children(tmp_path: Path, tiny) -> None:
    chain = build_chain(tmp_path, "vhd", size=4 << 20, children=1, writes=4)
    with vhdlib.open(chain.base) as disk:
        base_id = disk.top.link_id
    # Another snapshot branch, in the new format, hangs off the base.
    branch = tmp_path / "branch.atiny"
    write_tiny(branch, bytes(4 << 20), parent=base_id)
    with pytest.raises(DependentChildrenError) as ei:
        ops.prepare("merge", str(chain.newest))
    assert str(branch) in ei.value.children
    with pytest.raises(DependentChildrenError):
        ops.prepare("remediate", str(chain.newest))
    # Without the registration the file is not a disk: nothing to protect.
    formats.unregister("tiny")
    ops.prepare("merge", str(chain.newest))
    formats.register(TINY)

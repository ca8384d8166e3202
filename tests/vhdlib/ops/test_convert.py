"""convert: any chain -> fixed/dynamic VHD, VHDX or raw, in one pass."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import vhdlib
from tests.chains import build_chain, read_all
from tests.conftest import require_tool
from vhdlib import ops
from vhdlib.errors import UsageError


@pytest.mark.parametrize("out_type", ["fixed", "dynamic"])
def test_convert_chain_preserves_content(tmp_path: Path, fmt: str, out_type: str) -> None:
    # Given a base and three snapshots with overlapping writes
    chain = build_chain(tmp_path, fmt)
    dest = tmp_path / f"out.{fmt}"
    # When the chain is converted
    op = ops.prepare("convert", str(chain.newest), str(dest), type=out_type)
    result = op.run()
    # Then the output is one standalone disk reading as the chain did
    assert result["status"] == "done"
    with vhdlib.open(str(dest)) as disk:
        assert len(disk.layers) == 1
        assert disk.top.disk_type.value == out_type
        assert disk.read(0, disk.virtual_size) == chain.ref
    assert read_all(chain.newest) == chain.ref  # the chain is untouched
    assert not os.path.exists(str(dest) + ".vhdmend-partial")
    assert not os.path.exists(str(dest) + ".vhdmend.json")


def test_fixed_output_is_allocated_but_only_data_written(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhd", size=64 << 20)
    dest = tmp_path / "fixed.vhd"
    op = ops.prepare("convert", str(chain.newest), str(dest), type="fixed")

    def wchar() -> int:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
        raise AssertionError("no wchar")

    before = wchar()
    op.run()
    written = wchar() - before
    st = os.stat(dest)
    # Fully reserved on the volume (fallocate) ...
    assert st.st_blocks * 512 >= 64 << 20
    # ... while the bytes written are about the data, not the virtual size.
    data = op.plan.details["data_bytes"]
    assert written < data + (2 << 20), (written, data)
    assert written < (64 << 20) // 2


def test_sparse_fixed_output_is_not_allocated(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhd", size=64 << 20, children=1)
    dest = tmp_path / "sparse.vhd"
    ops.prepare("convert", str(chain.newest), str(dest), type="fixed", sparse=True).run()
    assert os.stat(dest).st_blocks * 512 < 48 << 20
    assert read_all(dest) == chain.ref


def test_convert_to_raw_reads_back_with_qemu(tmp_path: Path) -> None:
    qemu = require_tool("qemu-img")
    chain = build_chain(tmp_path, "vhd", size=32 << 20)
    dest = tmp_path / "out.raw"
    ops.prepare("convert", str(chain.newest), str(dest), type="fixed", format="raw").run()
    assert dest.read_bytes() == chain.ref
    fixed = tmp_path / "out-fixed.vhd"
    ops.prepare("convert", str(chain.newest), str(fixed), type="fixed").run()
    raw2 = tmp_path / "qemu.raw"
    subprocess.run([qemu, "convert", "-f", "vpc", "-O", "raw", str(fixed), str(raw2)],
                   check=True)
    # qemu 7.2 sizes fixed VHDs by CHS; compare the part it sees.
    got = raw2.read_bytes()
    assert len(got) <= len(chain.ref)
    assert got == chain.ref[:len(got)]


def test_output_is_reproducible_with_explicit_ids(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhd", size=16 << 20, children=1)
    a, b = tmp_path / "a.vhd", tmp_path / "b.vhd"
    for dest in (a, b):
        ops.prepare("convert", str(chain.newest), str(dest), type="dynamic",
                    uuid="12345678-1234-5678-1234-567812345678", timestamp=1700000000).run()
    assert a.read_bytes() == b.read_bytes()


def test_convert_refuses_existing_destination(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhd", size=8 << 20, children=1)
    dest = tmp_path / "exists.vhd"
    dest.write_bytes(b"precious")
    with pytest.raises(UsageError, match="exists"):
        ops.prepare("convert", str(chain.newest), str(dest))
    assert dest.read_bytes() == b"precious"


def test_vhd_output_refuses_4k_and_oversize(tmp_path: Path) -> None:
    spec = ops.output.OutputSpec("vhd", "fixed", 2041 << 30, 0, 512, "0" * 32, 0)
    with pytest.raises(UsageError, match="2040 GiB"):
        spec.validate()
    spec = ops.output.OutputSpec("vhd", "fixed", 1 << 30, 0, 4096, "0" * 32, 0)
    with pytest.raises(UsageError, match="512-byte"):
        spec.validate()

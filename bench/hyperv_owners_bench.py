#!/usr/bin/env python3
"""How long finding a chain's VM takes on a share with many VM folders.

    python bench/hyperv_owners_bench.py [--dir DIR] [--vms 300] [--checkpoints 5]

Builds ``--vms`` 2012 R2-style VM folders under ``DIR/vms`` (``Virtual Hard Disks`` with a
base and one differencing file per checkpoint, ``Virtual Machines/<id>.xml``,
``Snapshots/<id>.xml``; the disk files are empty placeholders: the lookup never opens disks),
then times ``owners.lookup`` for one VM's chain with the default roots (its folder and two
parents, so the whole share is walked) and ``nextsteps.for_remediation``. Not a test.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.vhdlib.hyperv.vmfolder import Disk, config_xml, write_config
from vhdlib.hyperv import nextsteps, owners


def build(share: Path, vms: int, checkpoints: int) -> list[Path]:
    target: list[Path] = []
    for i in range(vms):
        vm = share / f"vm{i:04d}"
        disks = vm / "Virtual Hard Disks"
        disks.mkdir(parents=True)
        chain = [disks / f"vm{i:04d}.vhdx"] + [
            disks / f"vm{i:04d}_{uuid.UUID(int=k).hex.upper()}.avhdx" for k in range(checkpoints)]
        for p in chain:
            p.touch()
        unc = [rf"\\FS01\vms\vm{i:04d}\Virtual Hard Disks\{p.name}" for p in chain]
        vm_id = str(uuid.UUID(int=i + 1)).upper()
        write_config(vm / "Virtual Machines", vm_id,
                     config_xml(f"vm {i}", vm_id, [Disk("SCSI", 0, 0, unc[-1])]))
        for k in range(checkpoints):
            cid = str(uuid.UUID(int=(i + 1) << 32 | k)).upper()
            write_config(vm / "Snapshots", cid,
                         config_xml(f"vm {i} - ({k})", cid, [Disk("SCSI", 0, 0, unc[k])]))
        if i == vms // 2:
            target = chain
    return target


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir")
    ap.add_argument("--vms", type=int, default=300)
    ap.add_argument("--checkpoints", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        share = Path(tmp) / "vms"
        started = time.perf_counter()
        chain = build(share, args.vms, args.checkpoints)
        built = time.perf_counter() - started
        shares = {"vms": str(share)}
        started = time.perf_counter()
        found = owners.lookup([str(p) for p in chain], shares=shares)
        looked = time.perf_counter() - started
        started = time.perf_counter()
        nextsteps.remediation_steps(found, result=str(chain[0]), chain=[str(p) for p in chain],
                                    shares=shares)
        steps = time.perf_counter() - started
        configs = args.vms * (1 + args.checkpoints)
        assert found.attachment is not None
        print(f"{args.vms} VMs, {configs} configuration XMLs (built in {built:.2f} s)")
        print(f"lookup (walk + parse all + map): {looked * 1000:.0f} ms "
              f"({looked / configs * 1e6:.0f} us per configuration); "
              f"owner {found.attachment.vm_name!r}, {len(found.checkpoints)} checkpoints")
        print(f"next steps from the lookup: {steps * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

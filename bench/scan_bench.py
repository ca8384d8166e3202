#!/usr/bin/env python3
"""The scan benchmark: ``vhdmend scan`` over a tree of 10,000 disk files, cold cache.

    python bench/scan_bench.py [--dir DIR] [--files 10000] [--threads 8] [--processes 0,2]
                               [--warm] [--build-only]

Workload (built once in ``--dir``, reused while it matches): VM folders, each with a
Hyper-V style chain of 5 files (a 127 GiB dynamic base and four differencing snapshots
named ``base_<GUID>.avhd[x]``), half VHD (2 MiB blocks: 254 KiB BATs), half VHDX (32 MiB
blocks), each layer with a few allocated blocks, plus one VM configuration file per folder
(not a disk, so every file's content is probed). The folders are grouped in parts of 1,000
disk files, so the same tree also measures 1,000 files (memory against the file count).

Each run is a child process (``os.wait4`` gives its wall time, CPU time and peak RSS)
after ``sync; echo 3 > /proc/sys/vm/drop_caches`` (root only; otherwise the cache stays
warm and the report says so). Results are printed and written to
``bench/out/scan-<timestamp>.json``. Not part of the tests.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

MiB = 1 << 20
GiB = 1 << 30
LAYERS = 5
PER_PART = 1000


def _sparse_copy(src: str, dst: str) -> None:
    """Copy only the data extents of ``src`` (the templates are mostly holes)."""
    fi = os.open(src, os.O_RDONLY)
    fo = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        size = os.fstat(fi).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fi, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fi, start, os.SEEK_HOLE)
            os.pwrite(fo, os.pread(fi, end - start, start), start)
            pos = end
        os.ftruncate(fo, size)
    finally:
        os.close(fi)
        os.close(fo)


def _templates(folder: str) -> dict[str, list[str]]:
    """One chain per format, written through vhdlib (names as Hyper-V gives them)."""
    from vhdlib import vhd, vhdx
    from vhdlib.layer import DiskType

    out: dict[str, list[str]] = {}
    for fmt, mod in (("vhd", vhd), ("vhdx", vhdx)):
        d = os.path.join(folder, f"template-{fmt}")
        os.makedirs(d, exist_ok=True)
        paths = [os.path.join(d, f"base.{fmt}")]
        layer = mod.create(paths[0], 127 * GiB, DiskType.DYNAMIC)  # type: ignore[attr-defined]
        layers = [layer]
        for k in range(LAYERS):
            # A few allocated blocks per layer, written before its child exists (a write
            # changes a VHDX's DataWriteGuid, which its children link to).
            for b in range(3):
                layers[-1].write((k * 7 + b * 131) * 64 * MiB, os.urandom(4096))
            layers[-1].flush()
            if k + 1 == LAYERS:
                break
            p = os.path.join(d, f"base_{k + 1:08X}-1111-2222-3333-444455556666.a{fmt}")
            layers.append(mod.create(p, 127 * GiB, DiskType.DIFFERENCING,  # type: ignore[attr-defined]
                                     parent=layers[-1]))
            paths.append(p)
        for lay in layers:
            lay.close()
        out[fmt] = paths
    return out


def build(root: str, files: int) -> dict[str, Any]:
    marker = os.path.join(root, "tree.json")
    want = {"files": files, "layers": LAYERS, "version": 3}
    if os.path.exists(marker):
        with open(marker) as f:
            if json.load(f) == want:
                return want
    import shutil
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    t0 = time.monotonic()
    tpl = _templates(os.path.join(root, "templates"))
    vms = files // LAYERS
    per_part = PER_PART // LAYERS
    for vm in range(vms):
        fmt = "vhd" if vm % 2 == 0 else "vhdx"
        folder = os.path.join(root, f"part{vm // per_part:02d}", f"vm{vm:05d}")
        os.makedirs(folder)
        for src in tpl[fmt]:
            _sparse_copy(src, os.path.join(folder, os.path.basename(src)))
        with open(os.path.join(folder, "vm.vmcx"), "wb") as f:
            f.write(os.urandom(2048))
    shutil.rmtree(os.path.join(root, "templates"))
    with open(marker, "w") as f:
        json.dump(want, f)
    print(f"built {vms * LAYERS} disk files in {time.monotonic() - t0:.1f} s", flush=True)
    return want


def drop_caches() -> bool:
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


CHILD = """
import json, resource, sys, time
from vhdlib import scan
t = time.monotonic()
r = scan.scan(sys.argv[1:-2], threads=int(sys.argv[-2]), processes=int(sys.argv[-1]))
seconds = time.monotonic() - t
scan_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "scan_peak_rss_mib": round(scan_rss, 1),
                  "files": r.files_scanned,
                  "disks": len(r.disks), "chains": len(r.chains),
                  "problems": sum(1 for c in r.chains if c.problems),
                  "json_bytes": len(json.dumps(r.to_dict()))}))
"""


def run(paths: list[str], threads: int, processes: int, cold: bool = True) -> dict[str, Any]:
    cold = drop_caches() if cold else False
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *paths, str(threads), str(processes)],
                            stdout=subprocess.PIPE, env=env, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    if status != 0:
        raise SystemExit(f"scan child failed ({status})")
    res = json.loads(out)
    res.update({"threads": threads, "processes": processes, "cold_cache": cold,
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "wall_seconds": round(wall, 3),
                "cpu_seconds": round(ru.ru_utime + ru.ru_stime, 3),
                "peak_rss_mib": round(ru.ru_maxrss / 1024, 1)})
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/var/tmp/vhdmend-scan-bench")
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--threads", default="8")
    ap.add_argument("--processes", default="0,2",
                    help="worker processes past 1,500 files (0: all in-process)")
    ap.add_argument("--warm", action="store_true", help="also measure with a warm cache")
    ap.add_argument("--build-only", action="store_true", help="build the tree, measure nothing")
    args = ap.parse_args()
    build(args.dir, args.files)
    if args.build_only:
        return 0
    parts = sorted(os.path.join(args.dir, p) for p in os.listdir(args.dir)
                   if p.startswith("part"))
    results = []
    combos = [(int(t), int(p), c) for t in args.threads.split(",")
              for p in args.processes.split(",") for c in ((True, False) if args.warm else (True,))]
    for threads, processes, cold in combos:
        for label, paths in (("1k", parts[:1]), ("all", [args.dir])):
            r = run(paths, threads, processes, cold)
            r["tree"] = label
            results.append(r)
            print(f"{label:>4} files={r['files']:6d} disks={r['disks']:6d} "
                  f"threads={threads} processes={processes}: scan {r['seconds']:.2f} s "
                  f"(process {r['wall_seconds']:.2f}"
                  f" s, cpu {r['cpu_seconds']:.2f} s), peak RSS {r['scan_peak_rss_mib']} MiB"
                  f" after the scan, {r['peak_rss_mib']} MiB with the JSON, problems "
                  f"{r['problems']}"
                  f"{'' if r['cold_cache'] else ' (warm cache)'}, load {r['load_average'][0]}",
                  flush=True)
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    with open(os.path.join(HERE, "out", f"scan-{stamp}.json"), "w") as f:
        json.dump({"host": platform.node(), "cpus": os.cpu_count(), "results": results}, f,
                  indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

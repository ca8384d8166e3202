#!/usr/bin/env python3
"""The reclaim benchmark: ``remediate --reclaim fs`` against ``--reclaim zeros``, qemu-img, dd.

    python bench/reclaim_bench.py [--dir DIR] [--size 16G] [--quick] [--fmt vhd,vhdx]
                                  [--keep] [--reuse] [--profile] [--repeat N]

Workload (issue 13, "Benchmark"; built once per run in ``--dir``, deterministic per size):
a raw guest disk of ``--size`` (default 16 GiB; ``--quick`` 2 GiB) with a GPT (``sgdisk``)
holding an NTFS partition (first half) and an ext4 partition (second half). Each partition
is first filled over 3/4 of its length with random "stale" bytes; then the file system is
quick-formatted over them (``mkntfs -Q``; ``mke2fs -E nodiscard``, so no discard zeroes the
stale bytes), then live files are added (1/8 of the disk per partition: ``ntfscp`` into the
NTFS, ``mke2fs -d`` for the ext4). For 16 GiB: 4 GiB of live data and ~8 GiB of stale bytes
in free space. The raw disk is converted to a dynamic VHD and VHDX with ``qemu-img convert``.

Measured per format, each after ``sync; echo 3 > drop_caches``, each including an fsync of
its output:

a. ``vhdmend remediate BASE --output OUT --type dynamic --reclaim fs``;
b. the same with ``--reclaim zeros`` (the default: all-zero blocks only);
c. ``qemu-img convert -O vpc|vhdx -o subformat=dynamic`` (drops zero blocks only);
d. ``dd`` from /dev/zero of the live blocks' bytes (``bs=8M conv=fsync``): only writing
   them, a floor no copy reaches (it must also read them from the same device);
e. ``dd`` copying as many bytes from the base image file to a new file (``bs=8M
   conv=fsync``): reading and writing them, the least any copy of the live data does on
   this device. This is the issue's "dd of the live data";
f. the same copy with direct I/O (``iflag=direct oflag=direct``): no page cache at all.
   The time target is judged against the faster of e and f in each round.

Memory state: this machine is a VM that hands freed memory back to its host (virtio-balloon
free page reporting): a page touched for the first time after that costs a host fault (2
GiB of fresh page cache written at ~250-300 MB/s, against ~1.5 GB/s for pages just freed).
So a command started right after another freed gigabytes (an ``rm`` of its output, the
cache drop) runs on warm pages, and one started seconds later on cold ones: the order of
the commands would decide their times. Every command therefore starts after the cache drop
*and* after the host has taken the freed memory back (``/sys/module/page_reporting``
``reported_kib`` unchanged for 2 s): all start cold, the same way. The wait is recorded
(``settle_s``); elsewhere (no page reporting) nothing is waited for.

Rounds run fs, qemu-img and both dd back to back (``--repeat N``; zeros once, it is
slow); each round's ratios use that round's own baselines, since the shared virtio disk's
speed swings by 2x within minutes. The report gives every round, the median and the best.

The repository's modules are byte-compiled first (``compileall``), as an installed package
is: otherwise a machine with ``PYTHONDONTWRITEBYTECODE`` compiles them in every run.

Both formats use 2 MiB blocks (``--block-size 2M``; qemu-img ``block_size=2M`` for VHDX).

"Live blocks" are the 2 MiB blocks (the dynamic output's block size) that are not wholly in
free clusters and not all zero: what an ideal output must hold; the vhdlib volume scan gives
the free clusters, and the check against the file systems' own tools is in the tests. Bytes
written are the child's ``ru_oublock`` (block-layer writes it caused). Results are printed
and written to ``bench/out/reclaim-<timestamp>.json``; the workload is deleted afterwards
(``--keep`` keeps it). Not part of the tests.

The images live in ``DIR/<size>M/disks``: remediate's result looks for the Hyper-V VM using
the chain in its folder and two parents (vhdlib.hyperv.owners), so those are the bench's
own folders, not ``/tmp`` itself, where other runs' VM configurations lie (1,800 of them on
the shared machine cost 4.6 s per run).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
for p in (REPO, HERE):
    if p not in sys.path:
        sys.path.insert(0, p)

from chain_bench import GiB, MiB, human, machine_info, parse_size, rm  # noqa: E402

SEED = 20261201
BLOCK = 2 * MiB
POOL = 32 * MiB
DROP_CACHES = "/proc/sys/vm/drop_caches"
TARGETS = {"fs_size_vs_live_max": 1.02, "fs_time_vs_best_dd_copy_max": 1.2}
#: The measurements compared with each dd baseline.
RATIOED = ("fs", "zeros", "qemu")
QEMU_FMT = {"vhd": ("vpc", ["-o", "subformat=dynamic,force_size=on"]),
            "vhdx": ("vhdx", ["-o", "subformat=dynamic,block_size=2M"])}


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


class Pool:
    """Random bytes, cheap: a 32 MiB pool read at a new random offset per chunk."""

    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd
        self.data = rnd.randbytes(POOL) * 2

    def chunk(self, n: int) -> memoryview:
        off = self.rnd.randrange(POOL)
        return memoryview(self.data)[off:off + n]


def fill(path: str, offset: int, length: int, pool: Pool) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        left = length
        while left:
            n = min(8 * MiB, left)
            f.write(pool.chunk(n))
            left -= n


def build(folder: str, size: int, log: Any) -> dict[str, Any]:
    """The raw guest disk (see the module docstring); returns its layout."""
    rnd = random.Random(SEED)
    pool = Pool(rnd)
    raw = os.path.join(folder, "guest.raw")
    ntfs = os.path.join(folder, "ntfs.raw")
    live_dir = os.path.join(folder, "live")
    sectors = size // 512
    half = sectors // 2
    p1 = (2048, half - 1)
    p2 = (half, sectors - 34)  # last usable LBA: the backup GPT takes the last 33 sectors
    with open(raw, "wb") as f:
        f.truncate(size)
    sh("sgdisk", "-n", f"1:{p1[0]}:{p1[1]}", "-t", "1:0700", "-c", "1:windows",
       "-n", f"2:{p2[0]}:{p2[1]}", "-t", "2:8300", "-c", "2:linux", raw)
    len1 = (p1[1] - p1[0] + 1) * 512
    len2 = (p2[1] - p2[0] + 1) * 512 // 4096 * 4096
    live_each = size // 8
    files = max(1, live_each // (256 * MiB))
    t0 = time.perf_counter()
    # NTFS: stale bytes, quick format over them, live files; then into the disk.
    with open(ntfs, "wb") as f:
        f.truncate(len1)
    fill(ntfs, 0, len1 * 3 // 4, pool)
    sh("mkntfs", "-Q", "-F", "-q", "-c", "4096", "-p", str(p1[0]), "-H", "255", "-S", "63",
       "-L", "win", ntfs)
    os.makedirs(live_dir, exist_ok=True)
    for i in range(files):
        path = os.path.join(live_dir, f"file{i:03d}.bin")
        with open(path, "wb") as f:
            f.write(b"")
        fill(path, 0, live_each // files, pool)
        sh("ntfscp", "-f", ntfs, path, f"file{i:03d}.bin")
    sh("dd", f"if={ntfs}", f"of={raw}", "bs=8M", f"seek={p1[0] * 512}", "oflag=seek_bytes",
       "conv=notrunc,sparse", "status=none")
    rm(ntfs)
    # ext4: stale bytes in place, mke2fs -E nodiscard over them with the live files (new
    # random content, so NTFS and ext4 files differ).
    fill(raw, p2[0] * 512, len2 * 3 // 4, pool)
    for i in range(files):
        path = os.path.join(live_dir, f"file{i:03d}.bin")
        with open(path, "wb") as f:
            f.write(b"")
        fill(path, 0, live_each // files, pool)
    sh("mke2fs", "-F", "-q", "-t", "ext4", "-b", "4096", "-L", "linux",
       "-E", f"nodiscard,offset={p2[0] * 512}", "-d", live_dir, raw, str(len2 // 4096))
    rm(live_dir)
    os.sync()
    layout = {"virtual_size": size, "ntfs": [p1[0] * 512, len1], "ext4": [p2[0] * 512, len2],
              "live_file_bytes": 2 * files * (live_each // files),
              "stale_written_bytes": len1 * 3 // 4 + len2 * 3 // 4,
              "build_s": round(time.perf_counter() - t0, 1)}
    layout.update(ideal(raw))
    log(f"built {human(size)} guest in {layout['build_s']} s: live files "
        f"{human(layout['live_file_bytes'])}, stale written "
        f"{human(layout['stale_written_bytes'])}, "
        f"free in file systems {human(layout['fs_free_bytes'])}, live blocks "
        f"{human(layout['live_block_bytes'])}")
    return layout


def ideal(raw: str) -> dict[str, Any]:
    """The 2 MiB blocks an ideal output holds: not wholly free, not all zero."""
    from vhdlib.volume import FileDisk, scan
    with FileDisk(raw) as disk:
        vmap = scan(disk)
        free = set(vmap.reclaimable_blocks(BLOCK))
        kept = [p.kept for p in vmap.partitions if p.kept]
        live = zero_kept = 0
        for b in range(disk.virtual_size // BLOCK):
            if b in free:
                continue
            if any(disk.read(b * BLOCK, BLOCK)):
                live += 1
            else:
                zero_kept += 1
    return {"fs_free_bytes": vmap.free_bytes, "reclaimable_block_bytes": len(free) * BLOCK,
            "live_block_bytes": live * BLOCK, "zero_block_bytes": zero_kept * BLOCK,
            "kept_whole": kept}


REPORTED = "/sys/module/page_reporting/parameters/reported_kib"


def settle_memory(quiet_s: float = 2.0, limit_s: float = 60.0) -> float:
    """Wait until free page reporting has reported nothing new for ``quiet_s`` (at most
    ``limit_s``); returns the seconds waited (0 where the kernel does not report)."""
    try:
        with open(REPORTED) as f:
            last = f.read()
    except OSError:
        return 0.0
    t0 = time.monotonic()
    still = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        time.sleep(0.25)
        with open(REPORTED) as f:
            now = f.read()
        if now != last:
            last, still = now, time.monotonic()
        elif time.monotonic() - still >= quiet_s:
            break
    return time.monotonic() - t0


class Runner:
    def __init__(self, logfile: str, log: Any) -> None:
        self.logfile = logfile
        self.log = log
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = REPO + os.pathsep + self.env.get("PYTHONPATH", "")
        self.dropped = True

    def drop_caches(self) -> float:
        """Drop the page cache, then wait for free page reporting to settle (see the
        module docstring); returns the seconds waited."""
        os.sync()
        try:
            with open(DROP_CACHES, "w") as f:
                f.write("3\n")
        except OSError:
            self.dropped = False
        return settle_memory()

    def run(self, name: str, argv: list[str], out: str, prefix: list[str] | None = None
            ) -> dict[str, Any]:
        """Wall time (with the output's fsync), CPU, bytes written, output size."""
        settle = self.drop_caches()
        cmd = (prefix or []) + argv
        with open(self.logfile, "a") as logf:
            logf.write(f"\n$ {' '.join(cmd)}\n")
            logf.flush()
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                    env=self.env)
            _, status, ru = os.wait4(proc.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"{name} failed; see {self.logfile}")
            fd = os.open(out, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            wall = time.perf_counter() - t0
        st = os.stat(out)
        res = {"name": name, "argv": argv, "wall_s": round(wall, 3),
               "cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
               "written_bytes": ru.ru_oublock * 512, "file_size": st.st_size,
               "allocated_bytes": st.st_blocks * 512,
               "loadavg_1m": round(os.getloadavg()[0], 2), "settle_s": round(settle, 2)}
        self.log(f"  {name:<26} {wall:8.2f} s  cpu {res['cpu_s']:7.2f} s  written "
                 f"{human(res['written_bytes']):>11}  size {human(st.st_size):>11}")
        return res


def vhdmend(*args: str) -> list[str]:
    return [sys.executable, "-m", "vhdmend", *args, "-q"]


def dd_runs(base: str, folder: str, layout: dict[str, Any], runner: Runner
            ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The dd baselines: writing the live blocks' bytes, copying as many through the page
    cache and with direct I/O."""
    dd_out = os.path.join(folder, "dd.bin")
    dd = runner.run("dd live blocks", [
        "dd", "if=/dev/zero", f"of={dd_out}", "bs=8M", f"count={layout['live_block_bytes']}",
        "iflag=count_bytes", "conv=fsync", "status=none"], dd_out)
    rm(dd_out)
    dd_copy = runner.run("dd copy live bytes", [
        "dd", f"if={base}", f"of={dd_out}", "bs=8M", f"count={layout['live_block_bytes']}",
        "iflag=count_bytes", "conv=fsync", "status=none"], dd_out)
    rm(dd_out)
    dd_direct = runner.run("dd copy live bytes direct", [
        "dd", f"if={base}", f"of={dd_out}", "bs=8M", f"count={layout['live_block_bytes']}",
        "iflag=count_bytes,direct", "oflag=direct", "conv=fsync", "status=none"], dd_out)
    rm(dd_out)
    return dd, dd_copy, dd_direct


def round_figures(fs: dict[str, Any], qemu: dict[str, Any], dd: dict[str, Any],
                  dd_copy: dict[str, Any], dd_direct: dict[str, Any]) -> dict[str, Any]:
    """One round's times and their ratios (all measured in that round)."""
    best = min(dd_copy["wall_s"], dd_direct["wall_s"])
    return {"fs_s": fs["wall_s"], "qemu_s": qemu["wall_s"], "dd_s": dd["wall_s"],
            "dd_copy_s": dd_copy["wall_s"], "dd_direct_s": dd_direct["wall_s"],
            "fs_vs_dd": round(fs["wall_s"] / dd["wall_s"], 3),
            "fs_vs_dd_copy": round(fs["wall_s"] / dd_copy["wall_s"], 3),
            "fs_vs_dd_direct": round(fs["wall_s"] / dd_direct["wall_s"], 3),
            "fs_vs_best_dd_copy": round(fs["wall_s"] / best, 3),
            "fs_vs_qemu": round(fs["wall_s"] / qemu["wall_s"], 3),
            "loadavg_1m": [r["loadavg_1m"] for r in (fs, qemu, dd, dd_copy, dd_direct)],
            "settle_s": [r["settle_s"] for r in (fs, qemu, dd, dd_copy, dd_direct)]}


def make_base(fmt: str, raw: str, folder: str) -> str:
    """The dynamic base of format ``fmt``, converted from the raw guest by qemu-img."""
    qfmt, qopts = QEMU_FMT[fmt]
    base = os.path.join(folder, f"base.{fmt}")
    sh("qemu-img", "convert", "-f", "raw", "-O", qfmt, *qopts, raw, base)
    return base


def bench_format(fmt: str, base: str, folder: str, layout: dict[str, Any], runner: Runner,
                 profile: bool, repeat: int = 1, keep: bool = False) -> dict[str, Any]:
    qfmt, qopts = QEMU_FMT[fmt]
    out = os.path.join(folder, f"out.{fmt}")
    res: dict[str, Any] = {"base_file_size": os.stat(base).st_size}
    runner.log(f"{fmt}: dynamic base {human(res['base_file_size'])}")
    # 2 MiB blocks for both formats (VHDX's default is 32 MiB), so that every output is
    # measured against the same live blocks.
    fixed = ["--block-size", "2M", "--uuid", "6b1f0c52-3c1e-4b8e-9d57-0d5c1a2b3c4d",
             "--timestamp", "1764547200"]
    for key, mode in (("fs", "fs"), ("zeros", "zeros")):
        prefix = None
        if profile and key == "fs":
            prefix = [sys.executable, "-m", "cProfile", "-o",
                      os.path.join(folder, f"profile-{fmt}.pstats")]
            argv = ["-m", "vhdmend", "remediate", base, "--output", out, "--type", "dynamic",
                    "--reclaim", mode, *fixed, "-q"]
        else:
            argv = vhdmend("remediate", base, "--output", out, "--type", "dynamic",
                           "--reclaim", mode, *fixed)
        res[key] = runner.run(f"{fmt} remediate --reclaim {mode}", argv, out, prefix)
        rm(out)
    res["qemu"] = runner.run(f"{fmt} qemu-img convert", [
        "qemu-img", "convert", "-f", qfmt, "-O", qfmt, *qopts, base, out], out)
    rm(out)
    res["dd"], res["dd_copy"], res["dd_direct"] = dd_runs(base, folder, layout, runner)
    rounds = [round_figures(res["fs"], res["qemu"], res["dd"], res["dd_copy"],
                            res["dd_direct"])]
    # Further rounds on the same base: fs, qemu-img and both dd (zeros only once: slow).
    for _ in range(repeat - 1):
        fs_argv = vhdmend("remediate", base, "--output", out, "--type", "dynamic",
                          "--reclaim", "fs", *fixed)
        fs = runner.run(f"{fmt} remediate --reclaim fs", fs_argv, out)
        rm(out)
        qemu = runner.run(f"{fmt} qemu-img convert", [
            "qemu-img", "convert", "-f", qfmt, "-O", qfmt, *qopts, base, out], out)
        rm(out)
        rounds.append(round_figures(fs, qemu, *dd_runs(base, folder, layout, runner)))
    res["rounds"] = rounds
    keys = ("fs_s", "qemu_s", "dd_s", "dd_copy_s", "dd_direct_s", "fs_vs_dd", "fs_vs_dd_copy",
            "fs_vs_dd_direct", "fs_vs_best_dd_copy", "fs_vs_qemu")
    res["best"] = {k: min(r[k] for r in rounds) for k in keys}
    res["median"] = {k: round(statistics.median(r[k] for r in rounds), 3) for k in keys}
    if not keep:
        rm(base)
    live = layout["live_block_bytes"]
    dd = res["dd"]["wall_s"]
    dd_copy = res["dd_copy"]["wall_s"]
    dd_direct = res["dd_direct"]["wall_s"]
    res["ratios"] = {k: {"size_vs_live": round(res[k]["file_size"] / live, 4),
                         "written_vs_live": round(res[k]["written_bytes"] / live, 4),
                         "time_vs_dd": round(res[k]["wall_s"] / dd, 3),
                         "time_vs_dd_copy": round(res[k]["wall_s"] / dd_copy, 3),
                         "time_vs_dd_direct": round(res[k]["wall_s"] / dd_direct, 3)}
                     for k in RATIOED}
    fs = res["ratios"]["fs"]
    res["meets"] = {"size": fs["size_vs_live"] <= TARGETS["fs_size_vs_live_max"],
                    "time_vs_best_dd_copy_median": res["median"]["fs_vs_best_dd_copy"]
                    <= TARGETS["fs_time_vs_best_dd_copy_max"]}
    return res


def print_table(report: dict[str, Any]) -> None:
    lay = report["layout"]
    print(f"\nguest {human(lay['virtual_size'])}: live blocks {human(lay['live_block_bytes'])}"
          f", free in file systems {human(lay['fs_free_bytes'])}")
    print(f"{'measurement':<28} {'wall s':>8} {'x dd':>6} {'x ddcp':>6} {'out size':>11} "
          f"{'x live':>7} {'written':>11} {'x live':>7}")
    for fmt, res in report["results"].items():
        for k in RATIOED:
            r, q = res[k], res["ratios"][k]
            print(f"{r['name']:<28} {r['wall_s']:8.2f} {q['time_vs_dd']:6.2f} "
                  f"{q['time_vs_dd_copy']:6.2f} {human(r['file_size']):>11} "
                  f"{q['size_vs_live']:7.3f} {human(r['written_bytes']):>11} "
                  f"{q['written_vs_live']:7.3f}")
        for k, name in (("dd", "dd live blocks"), ("dd_copy", "dd copy live bytes"),
                        ("dd_direct", "dd copy direct")):
            d = res[k]
            print(f"{name:<28} {d['wall_s']:8.2f} {d['wall_s'] / res['dd']['wall_s']:6.2f} "
                  f"{d['wall_s'] / res['dd_copy']['wall_s']:6.2f} "
                  f"{human(d['file_size']):>11} {'':>7} {human(d['written_bytes']):>11}")
        print(f"{fmt} targets met (size: first round; time: median of rounds): "
              f"{res['meets']}")
        for i, r in enumerate(res["rounds"]):
            print(f"  round {i + 1}: fs {r['fs_s']:.2f} s, qemu-img {r['qemu_s']:.2f} s, dd "
                  f"{r['dd_s']:.2f} s, dd copy {r['dd_copy_s']:.2f} s, direct "
                  f"{r['dd_direct_s']:.2f} s: fs x dd {r['fs_vs_dd']:.2f}, x dd copy "
                  f"{r['fs_vs_dd_copy']:.2f}, x direct {r['fs_vs_dd_direct']:.2f}, x best "
                  f"copy {r['fs_vs_best_dd_copy']:.2f}, x qemu-img {r['fs_vs_qemu']:.2f} "
                  f"(load {r['loadavg_1m']}, settled {r['settle_s']} s)")
        print(f"  median of {len(res['rounds'])}: {res['median']}")
        print(f"  best of {len(res['rounds'])}: {res['best']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="/tmp/vhdmend-reclaim-bench")
    ap.add_argument("--size", default=None, help="virtual size (default 16G; --quick 2G)")
    ap.add_argument("--quick", action="store_true", help="2 GiB guest, for development")
    ap.add_argument("--fmt", default="vhd,vhdx", help="formats, comma separated")
    ap.add_argument("--profile", action="store_true", help="cProfile the --reclaim fs runs")
    ap.add_argument("--keep", action="store_true", help="keep the raw guest in DIR")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse the guest and bases a --reuse run left in DIR (and keep "
                         "them): rounds without the 2-3 min build")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of fs, qemu-img and dd per format (zeros: once)")
    ap.add_argument("--out", default=os.path.join(HERE, "out"), help="results folder")
    args = ap.parse_args(argv)
    size = parse_size(args.size or ("2G" if args.quick else "16G"))
    if size % (GiB // 4):
        raise SystemExit("--size must be a multiple of 256 MiB")

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    # Two levels below DIR: see the module docstring (the VM owner lookup's roots).
    folder = os.path.join(args.dir, f"{size // MiB}M", "disks")
    keep = args.keep or args.reuse
    layout_path = os.path.join(folder, "layout.json")
    raw = os.path.join(folder, "guest.raw")
    reused = args.reuse and os.path.exists(layout_path) and os.path.exists(raw)
    if not reused:
        rm(folder)
        os.makedirs(folder)
    runner = Runner(os.path.join(folder, "commands.log"), log)
    # Byte-compiled as an installed package is (see the module docstring).
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0",
                    *(os.path.join(REPO, d) for d in ("vhdlib", "vhdmend", "service"))],
                   check=True, stdout=subprocess.DEVNULL)
    try:
        if reused:
            with open(layout_path) as f:
                layout = json.load(f)
            log(f"reusing the guest in {folder}")
        else:
            layout = build(folder, size, log)
            with open(layout_path, "w") as f:
                json.dump(layout, f, indent=1)
        fmts = args.fmt.split(",")
        bases = {fmt: (os.path.join(folder, f"base.{fmt}")
                       if reused and os.path.exists(os.path.join(folder, f"base.{fmt}"))
                       else make_base(fmt, raw, folder))
                 for fmt in fmts}
        if not keep:
            rm(raw)  # 16 GiB less at the peak: the bases are all the runs read
        results = {fmt: bench_format(fmt, bases[fmt], folder, layout, runner, args.profile,
                                     max(1, args.repeat), keep=args.reuse)
                   for fmt in fmts}
    finally:
        if not keep:
            for name in os.listdir(folder):
                if not name.endswith((".log", ".pstats")):
                    rm(os.path.join(folder, name))
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    report = {"layout": layout, "results": results, "targets": TARGETS,
              "page_cache_dropped": runner.dropped, "machine": machine_info(args.dir)}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"reclaim-{stamp}-{size // MiB}M.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    print_table(report)
    print(f"\nwritten {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

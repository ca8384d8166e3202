#!/usr/bin/env python3
"""The chain benchmark: vhdmend remediate against the manual cure, qemu-img and dd.

    python bench/chain_bench.py [--dir DIR] [--size 8G] [--fmt vhd|vhdx] [--quick]
                                [--verify] [--profile] [--only a,b,c,d]

Workload (built once, cached in ``--dir``; deterministic for a given size, format, seed):
a dynamic base of ``--size`` (default 8 GiB) holding ~3/8 of its size in data (3 GiB for
8 GiB) in runs of 8-32 MiB plus 1/16 of its size (512 MiB) of explicit zeros written as
data (whole 32 MiB-aligned regions, so those blocks are allocated full of zeros), and
three differencing children (Hyper-V naming ``base_<GUID>.avhd``) each with ~1/8 of the
size (1 GiB) of 256 KiB-4 MiB writes at 4 KiB-aligned offsets, half of them in a shared
hot region, so they overlap each other and the base.

Measured, each after ``sync; echo 3 > /proc/sys/vm/drop_caches`` and each including an
fsync of its output (``conv=fsync`` for dd; remediate/convert fsync themselves; qemu-img
gets an explicit fsync of its output after it exits, counted):

a. ``vhdmend remediate NEWEST --output OUT --type fixed`` (allocated fixed disk);
b. the manual cure with vhdmend: 3 ``merge X --delete`` (newest first), ``compact BASE``,
   ``convert BASE OUT --type fixed`` (on a sparse copy of the chain; copy not counted);
c. ``qemu-img convert`` of the merged base (the result of b's merges) to a fixed disk,
   sparse and allocated (``-S 0``);
d. ``dd`` of the chain's unique data bytes (the bytes remediate reads: the plan's
   ``data_bytes``) from /dev/zero with ``bs=8M conv=fsync``.

Wall time, CPU time and peak RSS come from ``os.wait4`` per child process. Results are
printed and written to ``bench/out/<timestamp>.json``. Not part of the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
#: Granularity of the workload layout (zero regions are whole chunks).
CHUNK = 32 * MiB
#: Layout resolution of the coverage map (every write is 4 KiB aligned).
GRAIN = 4 * KiB
POOL = 32 * MiB
WORKLOAD_VERSION = 1
SEED = 20240601
DROP_CACHES = "/proc/sys/vm/drop_caches"
TARGETS = {"remediate_vs_dd_max": 1.2, "qemu_alloc_vs_remediate_min": 3.0,
           "peak_rss_mib_max": 150.0}
EXT = {"vhd": (".vhd", ".avhd"), "vhdx": (".vhdx", ".avhdx")}
QEMU_FMT = {"vhd": "vpc", "vhdx": "vhdx"}


def parse_size(text: str) -> int:
    units = {"K": KiB, "M": MiB, "G": GiB, "T": 1 << 40}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def human(n: float) -> str:
    for unit, f in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if abs(n) >= f:
            return f"{n / f:.2f} {unit}"
    return f"{n:.0f} B"


# --- the workload ------------------------------------------------------------------------


@dataclass
class Workload:
    fmt: str
    size: int
    folder: str
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def chain_dir(self) -> str:
        return os.path.join(self.folder, "chain")

    @property
    def manifest_path(self) -> str:
        return os.path.join(self.folder, "workload.json")

    @property
    def paths(self) -> list[str]:
        """Base first."""
        return [os.path.join(self.chain_dir, n) for n in self.manifest["files"]]

    @property
    def newest(self) -> str:
        return self.paths[-1]

    def params(self) -> dict[str, Any]:
        return {"version": WORKLOAD_VERSION, "fmt": self.fmt, "size": self.size, "seed": SEED}

    def save(self) -> None:
        tmp = self.manifest_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.manifest, f, indent=1)
        os.replace(tmp, self.manifest_path)


def _create(fmt: str, path: str, size: int | None, kind: str, parent: Any = None) -> Any:
    from vhdlib.layer import DiskType
    if fmt == "vhd":
        from vhdlib import vhd
        return vhd.create(path, size, DiskType(kind), parent=parent)
    from vhdlib import vhdx
    if size is None:
        size = parent.virtual_size
    return vhdx.create(path, size, DiskType(kind), parent=parent)


class _Data:
    """Deterministic incompressible bytes, cheap: one random pool, sliced at a moving
    offset (a rotation), so consecutive writes differ without generating new bytes."""

    def __init__(self, rnd: random.Random) -> None:
        pool = rnd.randbytes(POOL)
        self.mv = memoryview(pool + pool)
        self.rnd = rnd

    def take(self, n: int) -> memoryview:
        assert n <= POOL
        start = self.rnd.randrange(0, POOL // 512) * 512
        return self.mv[start:start + n]


def build_workload(wl: Workload, log: Any) -> None:
    """Create the chain in a scratch folder, then rename it into place (cache)."""
    fmt, size = wl.fmt, wl.size
    if size % CHUNK or size < 16 * CHUNK:
        raise SystemExit(f"--size must be a multiple of {CHUNK // MiB} MiB and >= "
                         f"{16 * CHUNK // MiB} MiB")
    rnd = random.Random(f"{SEED}-{fmt}-{size}")
    data = _Data(rnd)
    scratch = wl.chain_dir + ".building"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(wl.chain_dir, ignore_errors=True)
    os.makedirs(scratch)
    base_ext, child_ext = EXT[fmt]
    # Coverage map at GRAIN: 0 untouched, 1 data, 2 explicit zeros.
    cov = bytearray(size // GRAIN)
    written = {"base_data": 0, "base_zero": 0, "children": []}

    def mark(off: int, n: int, v: int) -> None:
        cov[off // GRAIN:(off + n) // GRAIN] = bytes([v]) * (n // GRAIN)

    t0 = time.perf_counter()
    files = ["base" + base_ext]
    base = _create(fmt, os.path.join(scratch, files[0]), size, "dynamic")
    chunks = list(range(size // CHUNK))
    rnd.shuffle(chunks)
    zero_target = size // 16
    data_target = size * 3 // 8
    zero_chunks = chunks[:zero_target // CHUNK]
    data_chunks = chunks[len(zero_chunks):]
    # The base: data runs of 8-32 MiB, in disk order (as a guest install writes).
    plan: list[tuple[int, int]] = []
    total = 0
    for c in data_chunks:
        if total >= data_target:
            break
        n = rnd.randrange(8 * MiB // GRAIN, CHUNK // GRAIN + 1) * GRAIN
        off = c * CHUNK + rnd.randrange(0, (CHUNK - n) // GRAIN + 1) * GRAIN
        plan.append((off, n))
        total += n
    hot_chunks = sorted(c for c, _ in ((o // CHUNK, n) for o, n in plan))
    for off, n in sorted(plan):
        pos = 0
        while pos < n:
            k = min(8 * MiB, n - pos)
            base.write(off + pos, data.take(k))
            pos += k
        mark(off, n, 1)
        written["base_data"] += n
    zeros = bytes(8 * MiB)
    for c in sorted(zero_chunks):
        for pos in range(0, CHUNK, len(zeros)):
            base.write(c * CHUNK + pos, zeros)
        mark(c * CHUNK, CHUNK, 2)
        written["base_zero"] += CHUNK
    base.flush()
    layers = [base]
    log(f"  base: {human(written['base_data'])} data + {human(written['base_zero'])} "
        f"zeros ({time.perf_counter() - t0:.1f} s)")
    # Children: ~size/8 each; half the writes land in a shared hot region (the first
    # quarter of the base's data chunks), the rest anywhere.
    hot = hot_chunks[:max(1, len(hot_chunks) // 4)]
    for k in range(3):
        t1 = time.perf_counter()
        guid = str(uuid.UUID(int=rnd.getrandbits(128), version=4)).upper()
        name = f"base_{guid}{child_ext}"
        child = _create(fmt, os.path.join(scratch, name), None, "differencing",
                        parent=layers[-1])
        target = size // 8
        done = 0
        while done < target:
            n = rnd.randrange(256 * KiB // GRAIN, 4 * MiB // GRAIN + 1) * GRAIN
            if rnd.random() < 0.5:
                c = rnd.choice(hot)
                off = c * CHUNK + rnd.randrange(0, (CHUNK - n) // GRAIN + 1) * GRAIN
            else:
                off = rnd.randrange(0, (size - n) // GRAIN + 1) * GRAIN
            child.write(off, data.take(n))
            mark(off, n, 1)
            done += n
        child.flush()
        layers.append(child)
        files.append(name)
        written["children"].append(done)
        log(f"  child {k + 1}: {human(done)} in writes of 256 KiB-4 MiB "
            f"({time.perf_counter() - t1:.1f} s)")
    for layer in layers:
        layer.close()
    os.rename(scratch, wl.chain_dir)
    wl.manifest = {
        "params": wl.params(), "files": files, "written": written,
        "nonzero_bytes": (len(cov) - cov.count(0) - cov.count(2)) * GRAIN,
        "zero_bytes_left": cov.count(2) * GRAIN,
        "file_bytes": {n: os.path.getsize(os.path.join(wl.chain_dir, n)) for n in files},
        "build_seconds": round(time.perf_counter() - t0, 2),
    }
    wl.save()


def load_or_build(root: str, fmt: str, size: int, log: Any) -> Workload:
    wl = Workload(fmt, size, os.path.join(root, f"{fmt}-{size // MiB}M"))
    os.makedirs(wl.folder, exist_ok=True)
    with contextlib.suppress(OSError, ValueError):
        with open(wl.manifest_path) as f:
            m = json.load(f)
        if m.get("params") == wl.params() and all(
                os.path.getsize(os.path.join(wl.chain_dir, n)) == s
                for n, s in m["file_bytes"].items()):
            wl.manifest = m
            log(f"workload: cached in {wl.chain_dir}")
            return wl
    log(f"workload: building {fmt} chain of {human(size)} in {wl.chain_dir}")
    build_workload(wl, log)
    return wl


# --- measuring ------------------------------------------------------------------------


class Runner:
    def __init__(self, work: str, log: Any) -> None:
        self.work = work
        self.log = log
        self.drop_ok: bool | None = None
        self.drop_error = ""
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = REPO + os.pathsep + self.env.get("PYTHONPATH", "")
        self.logfile = os.path.join(work, "commands.log")

    def drop_caches(self) -> None:
        os.sync()
        try:
            with open(DROP_CACHES, "w") as f:
                f.write("3\n")
            self.drop_ok = self.drop_ok is not False
        except OSError as e:
            if self.drop_ok is not False:
                self.log(f"WARNING: cannot drop the page cache ({e}); timings include "
                         "warm-cache reads")
            self.drop_ok = False
            self.drop_error = str(e)

    def run(self, name: str, argv: list[str], *, fsync: str | None = None,
            drop: bool = True) -> dict[str, Any]:
        """Run ``argv`` as a child: wall time here; CPU time and peak RSS of the command.

        Peak RSS comes from GNU time (``/usr/bin/time``) when installed, else from
        ``os.wait4``. The detour matters: Linux carries the forking process's RSS high-water
        mark across exec, so a child forked from this (large) process would report at
        least this process's RSS; GNU time is small and forks the command itself.
        """
        if drop:
            self.drop_caches()
        load_before = round(os.getloadavg()[0], 2)
        gnu_time = shutil.which("time", path="/usr/bin:/bin")
        stats = os.path.join(self.work, ".time")
        cmd = ([gnu_time, "-q", "-o", stats, "-f", "%U %S %M", *argv] if gnu_time
               else argv)
        with open(self.logfile, "a") as logf:
            logf.write(f"\n$ {' '.join(argv)}\n")
            logf.flush()
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                    env=self.env)
            _, status, ru = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            t_exit = time.perf_counter()
            if fsync and proc.returncode == 0:
                fd = os.open(fsync, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            t1 = time.perf_counter()
        if proc.returncode != 0:
            raise SystemExit(f"{name}: {' '.join(argv)} exited {proc.returncode}; "
                             f"see {self.logfile}")
        user, sys_, rss_kib = ru.ru_utime, ru.ru_stime, float(ru.ru_maxrss)
        if gnu_time:
            with open(stats) as f:
                u, s_, m = f.read().split()[-3:]
            user, sys_, rss_kib = float(u), float(s_), float(m)
        res = {"name": name, "argv": argv, "wall_s": round(t1 - t0, 3),
               "loadavg_1m_after": round(os.getloadavg()[0], 2),
               "fsync_tail_s": round(t1 - t_exit, 3), "user_s": round(user, 3),
               "sys_s": round(sys_, 3), "peak_rss_mib": round(rss_kib / 1024, 1),
               "rss_source": "gnu-time" if gnu_time else "wait4",
               "loadavg_1m_before": load_before}
        self.log(f"  {name:<28} {res['wall_s']:8.2f} s  cpu {user + sys_:7.2f} s"
                 f"  rss {res['peak_rss_mib']:6.1f} MiB")
        return res


def vhdmend(*args: str) -> list[str]:
    return [sys.executable, "-m", "vhdmend", *args, "-q"]


def stat_of(path: str) -> dict[str, int]:
    st = os.stat(path)
    return {"file_size": st.st_size, "allocated_bytes": st.st_blocks * 512}


def content_sha256(path: str, *, progress: Any = None) -> tuple[str, int]:
    """sha256 of what ``vhdlib.open(path)`` reads (whole chain), streamed."""
    import vhdlib
    h = hashlib.sha256()
    buf = bytearray(8 * MiB)
    with vhdlib.open(path) as disk:
        size = disk.virtual_size
        pos = 0
        while pos < size:
            n = min(len(buf), size - pos)
            mv = memoryview(buf)[:n]
            disk.readinto(pos, mv)
            h.update(mv)
            pos += n
    return h.hexdigest(), size


def copy_chain(src_dir: str, dst_dir: str) -> None:
    shutil.rmtree(dst_dir, ignore_errors=True)
    os.makedirs(dst_dir)
    for name in sorted(os.listdir(src_dir)):
        subprocess.run(["cp", "--sparse=always", os.path.join(src_dir, name),
                        os.path.join(dst_dir, name)], check=True)


def rm(*paths: str) -> None:
    for p in paths:
        if os.path.isdir(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)


def machine_info(folder: str) -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "kernel": platform.release(),
                            "python": platform.python_version()}
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(f.readline().split()[1]) / (1 << 20), 1)
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        info["fs"] = subprocess.run(["findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", "-T",
                                     folder], capture_output=True, text=True,
                                    check=True).stdout.strip()
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        info["qemu_img"] = subprocess.run(["qemu-img", "--version"], capture_output=True,
                                          text=True, check=True).stdout.splitlines()[0]
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        info["git"] = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True,
                                     check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "vhdlib"],
                               capture_output=True, text=True, check=True).stdout.strip()
        info["vhdlib_dirty"] = bool(dirty)
    return info


# --- the benchmark ----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="/tmp/vhdmend-bench",
                    help="workload cache and scratch folder (default /tmp/vhdmend-bench)")
    ap.add_argument("--size", default=None, help="virtual size (default 8G; --quick 1G)")
    ap.add_argument("--fmt", choices=("vhd", "vhdx"), default="vhd")
    ap.add_argument("--quick", action="store_true", help="1 GiB workload, for development")
    ap.add_argument("--verify", action="store_true",
                    help="also check that the remediate and manual outputs read like the "
                         "chain (sha256 of the content)")
    ap.add_argument("--profile", action="store_true",
                    help="after the timings, run remediate once more under cProfile (and "
                         "py-spy if installed) and print the hot spots")
    ap.add_argument("--only", default="a,b,c,d",
                    help="comma list of measurements to run (a remediate, b manual, "
                         "c qemu-img, d dd); default all")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run a (remediate) and d (dd) this many times, alternating; "
                         "the median is reported (default 1)")
    ap.add_argument("--keep", action="store_true", help="keep the outputs in DIR/work")
    ap.add_argument("--out", default=os.path.join(HERE, "out"), help="results folder")
    args = ap.parse_args(argv)
    size = parse_size(args.size or ("1G" if args.quick else "8G"))
    only = set(args.only.split(","))

    def log(msg: str) -> None:
        print(msg, flush=True)

    os.makedirs(args.dir, exist_ok=True)
    wl = load_or_build(args.dir, args.fmt, size, log)
    work = os.path.join(wl.folder, "work")
    rm(work)
    os.makedirs(work)
    runner = Runner(work, log)
    fmt = args.fmt
    ext = EXT[fmt][0]
    newest = wl.newest

    from vhdlib import ops
    probe = ops.prepare("remediate", newest, output=os.path.join(work, "probe" + ext),
                        type="fixed")
    data_bytes = int(probe.plan.details["data_bytes"])
    chain_file_bytes = sum(wl.manifest["file_bytes"].values())
    log(f"chain: {len(wl.paths)} files, {human(chain_file_bytes)} on disk, virtual "
        f"{human(size)}; unique data (remediate reads) {human(data_bytes)}, of which "
        f"non-zero {human(wl.manifest['nonzero_bytes'])}")
    results: dict[str, Any] = {}
    verify: dict[str, Any] = {}
    uid = "5bd3c1f0-0000-4000-8000-000000000001"
    ts = "1700000000"

    if args.verify:
        t = time.perf_counter()
        if "chain_sha256" not in wl.manifest:
            wl.manifest["chain_sha256"] = content_sha256(newest)[0]
            wl.save()
        verify["chain"] = wl.manifest["chain_sha256"]
        log(f"verify: chain content sha256 {verify['chain'][:16]}... "
            f"({time.perf_counter() - t:.1f} s)")

    log("timings (page cache dropped before each):")
    def run_a(rep: int) -> dict[str, Any]:
        out = os.path.join(work, "remediate" + ext)
        r = runner.run("a remediate -> fixed", vhdmend(
            "remediate", newest, "--output", out, "--type", "fixed", "--uuid", uid,
            "--timestamp", ts))
        r.update(stat_of(out))
        if args.verify and rep == 0:
            verify["remediate"] = content_sha256(out)[0]
        rm(out)
        return r

    def run_d(rep: int) -> dict[str, Any]:
        out = os.path.join(work, "dd.bin")
        r = runner.run("d dd unique data", [
            "dd", "if=/dev/zero", f"of={out}", "bs=8M", f"count={data_bytes}",
            "iflag=count_bytes", "conv=fsync", "status=none"])
        r.update(stat_of(out))
        rm(out)
        return r

    # a and d alternate (--repeat times): the figures that make the headline ratio are
    # taken under the same conditions; the median run of each is reported.
    runs: dict[str, list[dict[str, Any]]] = {"remediate": [], "dd": []}
    for rep in range(max(1, args.repeat)):
        if "a" in only:
            runs["remediate"].append(run_a(rep))
        if "d" in only:
            runs["dd"].append(run_d(rep))
    for key, lst in runs.items():
        if lst:
            results[key] = median_run(lst)

    merged_base = os.path.join(work, "merged-base" + ext)
    if "b" in only or "c" in only:
        manual = os.path.join(work, "manual")
        copy_chain(wl.chain_dir, manual)
        paths = [os.path.join(manual, n) for n in wl.manifest["files"]]
        import vhdlib
        with vhdlib.open(paths[-1]) as d:
            # The copy's children must resolve to the copy, never to the cached chain.
            assert all(os.path.dirname(os.path.abspath(p)) == manual for p in d.chain), d.chain
        steps = []
        for child in reversed(paths[1:]):
            steps.append(runner.run(f"b merge {os.path.basename(child)[:13]}",
                                    vhdmend("merge", child, "--delete")))
        # qemu-img reads the merged base (it cannot follow a differencing chain).
        subprocess.run(["cp", "--sparse=always", paths[0], merged_base], check=True)
        if "b" in only:
            steps.append(runner.run("b compact", vhdmend("compact", paths[0])))
            out = os.path.join(work, "manual-fixed" + ext)
            steps.append(runner.run("b convert -> fixed", vhdmend(
                "convert", paths[0], out, "--type", "fixed", "--uuid", uid,
                "--timestamp", ts)))
            results["manual"] = {
                "name": "b manual (3 merges + compact + convert)",
                "wall_s": round(sum(s["wall_s"] for s in steps), 3),
                "user_s": round(sum(s["user_s"] for s in steps), 3),
                "sys_s": round(sum(s["sys_s"] for s in steps), 3),
                "peak_rss_mib": max(s["peak_rss_mib"] for s in steps),
                "steps": steps, **stat_of(out),
                "compacted_base_bytes": stat_of(paths[0])["file_size"]}
            if args.verify:
                verify["manual"] = content_sha256(out)[0]
            rm(out)
        rm(manual)

    if "c" in only:
        qf = QEMU_FMT[fmt]
        variants = [("qemu_fixed_sparse", "c qemu-img fixed (sparse)", [],
                     "subformat=fixed"),
                    ("qemu_fixed_alloc", "c qemu-img fixed -S 0", ["-S", "0"],
                     "subformat=fixed,preallocation=falloc")]
        if fmt == "vhdx":
            variants.append(("qemu_dynamic", "c qemu-img dynamic", [], "subformat=dynamic"))
        for key, label, extra, opts in variants:
            out = os.path.join(work, key + ext)
            r = runner.run(label, ["qemu-img", "convert", "-f", qf, "-O", qf, *extra,
                                   "-o", opts, merged_base, out], fsync=out)
            r.update(stat_of(out))
            results[key] = r
            rm(out)
    rm(merged_base)

    # Keep the table in a, b, c, d order.
    if "dd" in results:
        results["dd"] = results.pop("dd")
    ratios = compute_ratios(results)
    report = {
        "timestamp": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]),
        "machine": machine_info(args.dir),
        "page_cache_dropped": runner.drop_ok, "drop_error": runner.drop_error,
        "workload": {"fmt": fmt, "virtual_size": size, "files": wl.manifest["files"],
                     "file_bytes": wl.manifest["file_bytes"],
                     "chain_file_bytes": chain_file_bytes,
                     "chain_allocated_bytes": sum(stat_of(p)["allocated_bytes"]
                                                  for p in wl.paths),
                     "data_bytes": data_bytes,
                     "nonzero_bytes": wl.manifest["nonzero_bytes"],
                     "written": wl.manifest["written"]},
        "results": results, "ratios": ratios, "targets": TARGETS,
    }
    if args.verify:
        report["verify"] = verify
        report["verify_ok"] = all(v == verify["chain"] for v in verify.values())
    print_table(report)
    if args.profile:
        report["profile"] = profile(newest, work, ext, log)
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(args.out, f"{stamp}-{fmt}-{size // MiB}M.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    log(f"results: {path}")
    if not args.keep:
        rm(work)
    return 1 if args.verify and not report["verify_ok"] else 0


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median wall time, with every run's wall time attached."""
    ordered = sorted(runs, key=lambda r: r["wall_s"])
    med = dict(ordered[(len(ordered) - 1) // 2])
    if len(runs) > 1:
        med["runs_wall_s"] = [r["wall_s"] for r in runs]
        med["runs_peak_rss_mib"] = [r["peak_rss_mib"] for r in runs]
        med["name"] += f" (median of {len(runs)})"
    return med


def compute_ratios(results: dict[str, Any]) -> dict[str, Any]:
    def wall(k: str) -> float | None:
        return results[k]["wall_s"] if k in results else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    rem = wall("remediate")
    out: dict[str, Any] = {
        "remediate_vs_dd": ratio(rem, wall("dd")),
        "qemu_alloc_vs_remediate": ratio(wall("qemu_fixed_alloc"), rem),
        "qemu_sparse_vs_remediate": ratio(wall("qemu_fixed_sparse"), rem),
        "manual_vs_remediate": ratio(wall("manual"), rem),
    }
    if "qemu_dynamic" in results:
        out["qemu_dynamic_vs_remediate"] = ratio(wall("qemu_dynamic"), rem)
    vh = [max(results[k].get("runs_peak_rss_mib", [results[k]["peak_rss_mib"]]))
          for k in ("remediate", "manual") if k in results]
    out["vhdmend_peak_rss_mib"] = max(vh) if vh else None
    out["meets"] = {
        "remediate_vs_dd": None if out["remediate_vs_dd"] is None
        else out["remediate_vs_dd"] <= TARGETS["remediate_vs_dd_max"],
        "qemu_alloc_vs_remediate": None if out["qemu_alloc_vs_remediate"] is None
        else out["qemu_alloc_vs_remediate"] >= TARGETS["qemu_alloc_vs_remediate_min"],
        "peak_rss": None if out["vhdmend_peak_rss_mib"] is None
        else out["vhdmend_peak_rss_mib"] <= TARGETS["peak_rss_mib_max"],
    }
    return out


def print_table(report: dict[str, Any]) -> None:
    res = report["results"]
    w = report["workload"]
    print()
    print(f"{w['fmt']} chain, virtual {human(w['virtual_size'])}, files "
          f"{human(w['chain_file_bytes'])} ({human(w['chain_allocated_bytes'])} allocated), "
          f"unique data {human(w['data_bytes'])} "
          f"(non-zero {human(w['nonzero_bytes'])})")
    if not report["page_cache_dropped"]:
        print(f"WARNING: page cache NOT dropped ({report['drop_error']})")
    print(f"{'measurement':<42} {'wall s':>8} {'cpu s':>8} {'rss MiB':>8} "
          f"{'out size':>11} {'out alloc':>11}")
    rows = []
    for k, r in res.items():
        rows.append((r["name"], r))
        if k == "manual":
            rows += [("   " + s["name"], s) for s in r["steps"]]
    for label, r in rows:
        size = human(r["file_size"]) if "file_size" in r else ""
        alloc = human(r["allocated_bytes"]) if "allocated_bytes" in r else ""
        print(f"{label:<42} {r['wall_s']:8.2f} {r['user_s'] + r['sys_s']:8.2f} "
              f"{r['peak_rss_mib']:8.1f} {size:>11} {alloc:>11}")
    ra = report["ratios"]
    print()

    def show(label: str, key: str, target: str) -> None:
        v = ra.get(key)
        meets = ra["meets"].get(key)
        mark = "" if meets is None else ("  ok" if meets else "  MISSED")
        print(f"{label:<44} {'-' if v is None else f'{v:.2f}x':>8}   {target}{mark}")

    show("remediate / dd of unique data", "remediate_vs_dd", "target <= 1.2")
    show("qemu-img allocated fixed / remediate", "qemu_alloc_vs_remediate", "target >= 3")
    show("qemu-img sparse fixed / remediate", "qemu_sparse_vs_remediate", "")
    if "qemu_dynamic_vs_remediate" in ra:
        show("qemu-img dynamic / remediate", "qemu_dynamic_vs_remediate", "")
    show("manual procedure / remediate", "manual_vs_remediate", "")
    rss = ra["vhdmend_peak_rss_mib"]
    ok = ra["meets"]["peak_rss"]
    print(f"{'vhdmend peak RSS':<44} {'-' if rss is None else f'{rss:.1f} MiB':>8}   "
          f"target <= 150 MiB{'' if ok is None else ('  ok' if ok else '  MISSED')}")
    if "verify" in report:
        print(f"verify: {'OK' if report['verify_ok'] else 'MISMATCH'} "
              + ", ".join(f"{k} {v[:12]}" for k, v in report["verify"].items()))


def profile(newest: str, work: str, ext: str, log: Any) -> dict[str, Any]:
    """Remediate under cProfile (and py-spy when installed); top functions by tottime."""
    import pstats
    out = os.path.join(work, "profiled" + ext)
    prof = os.path.join(work, "remediate.prof")
    log("profile: remediate under cProfile (page cache dropped)")
    with open(DROP_CACHES, "w") as f:
        os.sync()
        f.write("3\n")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cProfile", "-o", prof, "-m", "vhdmend",
                    "remediate", newest, "--output", out, "--type", "fixed", "-q"],
                   check=True, env={**os.environ, "PYTHONPATH": REPO})
    wall = time.perf_counter() - t0
    rm(out)
    st = pstats.Stats(prof)
    total = st.total_tt  # type: ignore[attr-defined]
    rows = []
    for (fn, line, name), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{os.path.relpath(fn, REPO) if fn.startswith(REPO) else fn}"
                     f":{line}({name})", "calls": nc, "tottime_s": round(tt, 3),
                     "cumtime_s": round(ct, 3), "share": round(tt / total, 3)})
    rows.sort(key=lambda r: -r["tottime_s"])
    log(f"  wall {wall:.1f} s, profiled {total:.1f} s; top by own time:")
    for r in rows[:15]:
        log(f"  {r['share'] * 100:5.1f}%  {r['tottime_s']:7.2f} s  {r['calls']:>9}  "
            f"{r['function']}")
    res: dict[str, Any] = {"wall_s": round(wall, 2), "total_s": round(total, 2),
                           "top": rows[:25]}
    spy = shutil.which("py-spy")
    if spy:
        svg = os.path.join(os.path.dirname(work), "remediate-pyspy.txt")
        with open(DROP_CACHES, "w") as f:
            os.sync()
            f.write("3\n")
        subprocess.run([spy, "record", "--idle", "-r", "200", "-f", "raw",
                        "-o", svg, "--", sys.executable, "-m", "vhdmend", "remediate",
                        newest, "--output", out, "--type", "fixed", "-q"],
                       check=False, env={**os.environ, "PYTHONPATH": REPO},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rm(out)
        if os.path.exists(svg):
            res["py_spy"] = summarize_pyspy(svg, log)
    return res


def summarize_pyspy(path: str, log: Any) -> list[dict[str, Any]]:
    """Leaf-function shares from py-spy's raw (collapsed stacks) output."""
    leaf: dict[str, int] = {}
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            if not stack:
                continue
            n = int(count)
            total += n
            # "function (file:line)" -> "function (file)": shares per function.
            name, _, where = stack.split(";")[-1].partition(" (")
            frame = f"{name} ({where.rsplit(':', 1)[0]})" if where else name
            leaf[frame] = leaf.get(frame, 0) + n
    if not total:
        return []
    rows = sorted(({"frame": k, "share": round(v / total, 3)} for k, v in leaf.items()),
                  key=lambda r: -r["share"])[:15]
    log(f"  py-spy ({total} samples, idle included), top leaf frames:")
    for r in rows:
        log(f"  {r['share'] * 100:5.1f}%  {r['frame']}")
    return rows


if __name__ == "__main__":
    sys.exit(main())

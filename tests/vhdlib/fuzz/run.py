"""Run fuzz cases through the CLI and record what happened.

Each case runs ``info --json``, ``map --json``, ``check`` and ``convert --format raw`` on
its newest file, each in its own process with a timeout: by default a child forked from
this process after ``vhdmend`` is imported (a fresh interpreter per command costs ~0.3 s,
which would make 10,000 cases take hours on a shared machine); ``--spawn`` runs
``python -m vhdmend`` instead. Recorded per command: exit code, an internal error (exit
70, or a traceback), a hang (killed at the timeout), whether any input file changed
(sha256 before and after), wall time and peak RSS.

    python -m tests.vhdlib.fuzz.run --seed 1 --cases 10000 --out fuzz.jsonl
    python -m tests.vhdlib.fuzz.run --seed 1 --case 4711 --keep /tmp/c   # reproduce one
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.vhdlib.fuzz import corpus
from tests.vhdlib.fuzz.mutate import Case, make_case

COMMANDS = ("info", "map", "check", "convert")
EXIT_INTERNAL = 70


@dataclass
class Result:
    command: str
    exit_code: int
    seconds: float
    rss_kib: int
    hang: bool = False
    modified: list[str] = field(default_factory=list)
    stderr: str = ""


def argv_for(command: str, case: Case, out_dir: Path) -> list[str]:
    top = str(case.folder / case.top)
    extra = ["--lenient"] if case.lenient else []
    if command == "info":
        return ["info", "--json", top, *extra]
    if command == "map":
        return ["map", "--json", top, *extra]
    if command == "check":
        return ["check", top]
    return ["convert", top, str(out_dir / "out.raw"), "--format", "raw", "-q", *extra]


def _hashes(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.iterdir()):
        if p.is_file():
            h = hashlib.sha256()
            with open(p, "rb") as f:
                while chunk := f.read(8 << 20):
                    h.update(chunk)
            out[p.name] = h.hexdigest()
    return out


def preload() -> None:
    """Import what the commands import, once, so that each forked command starts warm."""
    import vhdmend.cli
    import vhdmend.commands  # noqa: F401


def _stats(folder: Path) -> dict[str, tuple[int, int, int]]:
    return {p.name: (st.st_size, st.st_mtime_ns, st.st_ino) for p in folder.iterdir()
            if p.is_file() and (st := p.stat())}


def _forked(argv: list[str], out: Path, err: Path, timeout: float) -> tuple[int, float, int,
                                                                            bool]:
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the command, in the child
        code = 71
        try:
            fo = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            fe = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fo, 1)
            os.dup2(fe, 2)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            from vhdmend.cli import main
            code = main(argv)
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 71
        finally:
            os._exit(code)
    hang = False
    while True:
        wpid, status, usage = os.wait4(pid, os.WNOHANG)
        if wpid:
            break
        if time.monotonic() - start > timeout:
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            hang = True
            break
        time.sleep(0.002)
    code = os.waitstatus_to_exitcode(status)
    return code, time.monotonic() - start, usage.ru_maxrss, hang


def _spawned(argv: list[str], out: Path, err: Path, timeout: float) -> tuple[int, float, int,
                                                                             bool]:
    start = time.monotonic()
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "vhdmend", *argv], stdout=fo,
                                stderr=fe, stdin=subprocess.DEVNULL)
        hang = False
        while True:
            wpid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if wpid:
                break
            if time.monotonic() - start > timeout:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                hang = True
                break
            time.sleep(0.005)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.monotonic() - start, usage.ru_maxrss, hang


def run_case(seed: int, index: int, seeds: list[corpus.Seed], work: Path, *,
             timeout: float = 60.0, spawn: bool = False) -> tuple[Case, list[Result]]:
    """Build case ``(seed, index)`` under ``work`` and run every command on it."""
    folder = work / "case"
    out_dir = work / "out"
    for d in (folder, out_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    case = make_case(seed, index, seeds, folder)
    results = []
    runner = _spawned if spawn else _forked
    if not spawn:
        preload()
    # Contents are hashed before and after the four commands; size, mtime and inode
    # around each one say which command changed a file (hashing per command doubles a
    # case's cost).
    first = _hashes(folder)
    for command in COMMANDS:
        before = _stats(folder)
        argv = argv_for(command, case, out_dir)
        code, seconds, rss, hang = runner(argv, work / "stdout", work / "stderr", timeout)
        after = _stats(folder)
        modified = sorted(n for n in set(before) | set(after) if before.get(n) != after.get(n))
        stderr = (work / "stderr").read_text(errors="replace")
        internal = code in (EXIT_INTERNAL, 71) or "Traceback" in stderr
        results.append(Result(command, code, round(seconds, 3), rss, hang, modified,
                              stderr[-2000:] if internal or hang or modified else
                              stderr[-300:]))
        for p in out_dir.iterdir():
            p.unlink()
    last = _hashes(folder)
    changed = sorted(n for n in set(first) | set(last) if first.get(n) != last.get(n))
    if changed and not any(r.modified for r in results):
        for r in results:
            r.modified = changed
    return case, results


def bad(r: Result) -> bool:
    """An internal error, a hang or a changed input: what the fuzzer exists to find."""
    return r.exit_code in (EXIT_INTERNAL, 71) or "Traceback" in r.stderr or r.hang \
        or bool(r.modified)


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures per command: exit codes, internal errors, hangs, inputs modified, max time
    and RSS."""
    per: dict[str, dict[str, Any]] = {}
    for rec in records:
        for r in rec["results"]:
            s = per.setdefault(r["command"], {"runs": 0, "exit_codes": {}, "internal": 0,
                                              "hangs": 0, "modified": 0, "max_seconds": 0.0,
                                              "max_rss_mib": 0.0})
            s["runs"] += 1
            key = str(r["exit_code"])
            s["exit_codes"][key] = s["exit_codes"].get(key, 0) + 1
            s["internal"] += r["exit_code"] in (EXIT_INTERNAL, 71) or "Traceback" in r["stderr"]
            s["hangs"] += bool(r["hang"])
            s["modified"] += bool(r["modified"])
            s["max_seconds"] = max(s["max_seconds"], r["seconds"])
            s["max_rss_mib"] = max(s["max_rss_mib"], round(r["rss_kib"] / 1024, 1))
    return {"cases": len(records), "commands": per}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.vhdlib.fuzz.run",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", type=int, default=0, help="first case index")
    ap.add_argument("--cases", type=int, default=100, help="how many cases")
    ap.add_argument("--case", type=int, help="run only this case (reproduce it)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per command")
    ap.add_argument("--spawn", action="store_true", help="python -m vhdmend per command")
    ap.add_argument("--out", type=Path, help="append one JSON line per case here")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (slices of cases)")
    ap.add_argument("--summarize", type=Path, nargs="+", metavar="JSONL",
                    help="only print the figures of earlier runs' JSON lines (a case "
                         "recorded twice counts once)")
    ap.add_argument("--keep", type=Path, help="build the case here and keep it (with --case)")
    args = ap.parse_args(argv)
    if args.summarize:
        return _summarize_files(args.summarize)
    seeds = corpus.build()
    if args.jobs > 1 and args.case is None:
        return _parallel(args)
    print(f"corpus {corpus.digest(seeds)[:16]} ({len(seeds)} seeds)", file=sys.stderr)
    indices = [args.case] if args.case is not None else range(args.start,
                                                               args.start + args.cases)
    records: list[dict[str, Any]] = []
    found = 0
    with tempfile.TemporaryDirectory(prefix="vhdmend-fuzz-") as tmp:
        work = args.keep or Path(tmp)
        out = open(args.out, "a") if args.out else None  # noqa: SIM115 - optional
        try:
            for i in indices:
                case, results = run_case(args.seed, i, seeds, work, timeout=args.timeout,
                                         spawn=args.spawn)
                rec = {"seed": args.seed, "case": i, "source": case.source,
                       "top": case.top, "mutations": case.mutations,
                       "results": [asdict(r) for r in results]}
                records.append(rec)
                if out:
                    out.write(json.dumps(rec) + "\n")
                    out.flush()
                for r in results:
                    if bad(r):
                        found += 1
                        print(f"FOUND seed {args.seed} case {i} {r.command} exit "
                              f"{r.exit_code}{' HANG' if r.hang else ''}"
                              f"{' MODIFIED ' + str(r.modified) if r.modified else ''}: "
                              f"{case.source} {case.mutations}\n{r.stderr[-600:]}",
                              file=sys.stderr)
                if args.case is not None:
                    for r in results:
                        print(f"{r.command}: exit {r.exit_code} {r.seconds}s\n{r.stderr}")
        finally:
            if out:
                out.close()
    print(json.dumps(summarize(records), indent=1))
    return 1 if found else 0


def _summarize_files(paths: list[Path]) -> int:
    by_case: dict[tuple[int, int], dict[str, Any]] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            by_case[(rec["seed"], rec["case"])] = rec
    records = [by_case[k] for k in sorted(by_case)]
    found = [(rec["seed"], rec["case"], Result(**r).command) for rec in records
             for r in rec["results"] if bad(Result(**r))]
    summary = summarize(records)
    summary["findings"] = [f"seed {s} case {c} {cmd}" for s, c, cmd in found]
    print(json.dumps(summary, indent=1))
    return 1 if found else 0


def _parallel(args: argparse.Namespace) -> int:
    """Split the cases into ``--jobs`` slices, one child process each; sum their lines."""
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="vhdmend-fuzz-")) / "fuzz.jsonl"
    per = -(-args.cases // args.jobs)
    base = ["--seed", str(args.seed), "--timeout", str(args.timeout)]
    base += ["--spawn"] if args.spawn else []
    procs = []
    for j in range(args.jobs):
        start = args.start + j * per
        n = min(per, args.start + args.cases - start)
        if n <= 0:
            break
        cmd = [sys.executable, "-m", "tests.vhdlib.fuzz.run", *base, "--start", str(start),
               "--cases", str(n), "--out", f"{args.out}.{j}"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL))
    codes = [p.wait() for p in procs]
    records = []
    with open(args.out, "a") as out:
        for j in range(len(procs)):
            part = Path(f"{args.out}.{j}")
            for line in part.read_text().splitlines():
                records.append(json.loads(line))
                out.write(line + "\n")
            part.unlink()
    print(json.dumps(summarize(records), indent=1))
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())

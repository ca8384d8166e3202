"""The writing operations: ``merge``, ``compact``, ``convert``, ``remediate``, ``resume``.

Each builds a :mod:`vhdlib.ops` operation (plan first), prints the plan with ``--plan`` or
runs it with a progress bar and SIGINT cancellation (exit 130, originals valid).
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from typing import TYPE_CHECKING, Any

from vhdmend.commands.common import add_lenient, add_plan, add_retire, common_parent
from vhdmend.output import emit_json, note, print_mapping, print_plan, print_volumes
from vhdmend.progressbar import CancelOnSignal, ProgressReporter
from vhdmend.sizes import size_arg

if TYPE_CHECKING:  # vhdlib.ops is imported only when an operation runs
    from vhdlib.ops import Operation

NAMES = ("merge", "compact", "convert", "remediate", "resume")

TYPES = ("fixed", "dynamic")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parent = common_parent()

    p = sub.add_parser(
        "merge", parents=[parent], help="merge a differencing disk into an ancestor",
        description="Merge-VHD semantics: CHILD's data goes into its parent (or, with --into, "
                    "any ancestor, collapsing every level between in one pass), in place. "
                    "Merged children are then retired (archived or deleted).")
    p.add_argument("child", help="the differencing disk to merge (newest of what merges)")
    p.add_argument("--into", metavar="ANCESTOR", help="ancestor to merge into (default: parent)")
    p.add_argument("--force", action="store_true",
                   help="merge even when other differencing disks depend on a disk that changes")
    add_retire(p)
    add_lenient(p)
    add_plan(p)
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser(
        "compact", parents=[parent], help="drop empty blocks and shrink the file in place",
        description="Dynamic: every all-zero block goes and the file shrinks. Differencing: "
                    "only blocks with no present sector go (present zeros hide parent data).")
    p.add_argument("path", help="a dynamic or differencing disk")
    add_reclaim(p)
    add_lenient(p)
    add_plan(p)
    p.set_defaults(func=cmd_compact)

    p = sub.add_parser(
        "convert", parents=[parent], help="write a disk or chain as one new disk",
        description="Write SRC (a disk or a whole chain) as a new fixed or dynamic disk, or "
                    "raw. A fixed output is fully allocated but only data ranges are written.")
    p.add_argument("src", help="source disk (for a chain: the newest file)")
    p.add_argument("dst", help="the new file (must not exist)")
    p.add_argument("--type", choices=TYPES, default="fixed", help="output type (default fixed)")
    p.add_argument("--format", choices=("vhd", "vhdx", "raw"),
                   help="output format (default: from DST's suffix, else vhd)")
    add_output_options(p)
    add_reclaim(p)
    add_attribute_options(p, in_place=False)
    add_lenient(p)
    add_plan(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "remediate", parents=[parent], help="the whole cure: chain -> one new disk",
        description="The chain ending at NEWEST becomes one new disk, written once, zeros "
                    "skipped, space allocated, verified; then it takes the base's name and "
                    "the old chain moves to an archive folder beside it (or, with --output, "
                    "the result goes there and the chain stays as it was).")
    p.add_argument("newest", help="the newest file of the chain (the running checkpoint)")
    p.add_argument("--output", metavar="PATH", help="write the result here; leave the chain")
    p.add_argument("--type", choices=TYPES, default="fixed", help="result type (default fixed)")
    p.add_argument("--format", choices=("vhd", "vhdx"),
                   help="result format (default: --output's suffix, else the base's format)")
    p.add_argument("--force", action="store_true",
                   help="go ahead when other differencing disks depend on a disk of the chain "
                        "(they lose their parent; --output leaves the chain in place instead)")
    add_output_options(p)
    add_reclaim(p)
    add_attribute_options(p, in_place=True)
    add_retire(p)
    add_lenient(p)
    add_plan(p)
    p.set_defaults(func=cmd_remediate)

    p = sub.add_parser(
        "resume", parents=[parent], help="continue an interrupted operation",
        description="Continue the operation recorded in JOURNAL (<target>.vhdmend.json) after "
                    "a crash or kill; the result is bit-identical to an uninterrupted run. "
                    "Inputs that changed since are refused.")
    p.add_argument("journal", help="the operation's journal, <target>.vhdmend.json")
    add_plan(p)
    p.set_defaults(func=cmd_resume)


def add_output_options(p: argparse.ArgumentParser) -> None:
    """``--block-size``, ``--sparse``, and ``--uuid``/``--timestamp`` for a new disk."""
    p.add_argument("--block-size", type=size_arg,
                   help="block size of a dynamic output (default 2M)")
    p.add_argument("--sparse", action="store_true",
                   help="fixed output: do not allocate the data area")
    p.add_argument("--uuid", type=_uuid_arg,
                   help="the new disk's UUID (default random): for reproducible output")
    p.add_argument("--timestamp", type=int, metavar="UNIX_SECONDS",
                   help="the new disk's creation time (default now): for reproducible output")


def add_reclaim(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reclaim", choices=("zeros", "fs"), default="zeros",
                   help="zeros: drop all-zero blocks (default); fs: also drop blocks the "
                        "guest's NTFS/ext2/3/4 file systems mark wholly free (partitions "
                        "in doubt are kept whole; --plan says why)")


def add_attribute_options(p: argparse.ArgumentParser, *, in_place: bool) -> None:
    """``--attributes-from base`` and ``--drop-attributes`` (owner, mode, ACL, xattrs)."""
    p.add_argument("--attributes-from", choices=("base",),
                   help="give the new file the base disk's owner, group, mode, ACL and "
                        "xattrs (default: the process defaults" +
                        ("; in place they are always carried over)" if in_place else ")"))
    p.add_argument("--drop-attributes", action="store_true",
                   help="go ahead when an attribute cannot be carried over (the result "
                        "lists what was dropped) instead of refusing")


def _attribute_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"attributes_from": args.attributes_from, "drop_attributes": args.drop_attributes}


def _uuid_arg(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"invalid UUID {text!r}") from e


def _identity_options(args: argparse.Namespace) -> dict[str, Any]:
    """``uuid``/``timestamp`` only when given (the library picks them otherwise)."""
    return {k: v for k in ("uuid", "timestamp") if (v := getattr(args, k, None)) is not None}


def cmd_merge(args: argparse.Namespace) -> int:
    from vhdlib import ops
    op = ops.prepare("merge", args.child, into=args.into, force=args.force,
                     archive=args.archive, delete=args.delete, lenient=args.lenient)
    return execute(args, op)


def cmd_compact(args: argparse.Namespace) -> int:
    from vhdlib import ops
    op = ops.prepare("compact", args.path, lenient=args.lenient, reclaim=args.reclaim)
    return execute(args, op)


def cmd_convert(args: argparse.Namespace) -> int:
    from vhdlib import ops
    # DST positional: the library names it `output_path` (the contract says `output`).
    op = ops.prepare("convert", args.src, args.dst, type=args.type,
                     format=args.format, block_size=args.block_size, sparse=args.sparse,
                     lenient=args.lenient, reclaim=args.reclaim, **_identity_options(args),
                     **_attribute_options(args))
    return execute(args, op)


def cmd_remediate(args: argparse.Namespace) -> int:
    from vhdlib import ops
    op = ops.prepare("remediate", args.newest, output=args.output, type=args.type,
                     format=args.format, archive=args.archive, delete=args.delete,
                     block_size=args.block_size, sparse=args.sparse, lenient=args.lenient,
                     force=args.force, reclaim=args.reclaim, **_identity_options(args),
                     **_attribute_options(args))
    return execute(args, op)


def cmd_resume(args: argparse.Namespace) -> int:
    from vhdlib import ops
    op = ops.resume(args.journal)
    return execute(args, op)


def execute(args: argparse.Namespace, op: Operation) -> int:
    """Print the plan (``--plan``) or run ``op`` with progress and cancellation."""
    name = op.kind
    # What the inputs' open accepted (--lenient), as info shows it; also with --plan.
    for warning in op.plan.details.get("warnings") or []:
        print(f"warning: {warning}", file=sys.stderr)
    if args.plan:
        plan = op.plan.to_dict()
        if args.json:
            emit_json(plan)
        else:
            print_plan(plan)
            if plan["details"].get("reclaim"):
                print_volumes(plan["details"]["reclaim"])
        return 0
    data = run_with_progress(op, quiet=args.quiet or args.json)
    status = data.pop("status", "done")
    if args.json:
        emit_json({"operation": name, "status": status, "result": data})
    elif data and not args.quiet:
        steps = data.pop("next_steps", None)
        print_mapping(data)
        if steps:
            from vhdlib.hyperv.nextsteps import format_text
            print("\n" + format_text(steps), end="")
    note(f"{name}: {status}", quiet=args.quiet or args.json)
    return 0


def _run_options() -> dict[str, Any]:
    """Testing knob: ``VHDMEND_CHUNK_BYTES`` makes checkpoints frequent (crash tests).

    A resumed run is bit-identical whatever the chunk size, so this changes only how often
    the journal is written.
    """
    value = os.environ.get("VHDMEND_CHUNK_BYTES")
    return {"chunk_bytes": int(value)} if value else {}


def run_with_progress(op: Operation, *, quiet: bool) -> dict[str, Any]:
    """``op.run`` with a progress reporter on stderr and SIGINT/SIGTERM -> cancel."""
    reporter = ProgressReporter(quiet=quiet)
    with CancelOnSignal(quiet=quiet) as cancel:
        try:
            return op.run(progress=reporter, cancel=cancel, **_run_options())
        finally:
            reporter.close()

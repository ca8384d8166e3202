"""The writing operations: ``merge``, ``compact``, ``convert``, ``remediate``, ``resume``.

Each builds a :mod:`vhdlib.ops` operation (plan first), prints the plan with ``--plan`` or
runs it with a progress bar and SIGINT cancellation (exit 130, originals valid).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from vhdlib.ops.output import TYPES
from vhdmend.commands.common import add_plan, common_parent
from vhdmend.commands.declared import add_option, add_options, given
from vhdmend.output import emit_json, note, print_mapping, print_plan, print_volumes
from vhdmend.progressbar import CancelOnSignal, ProgressReporter

if TYPE_CHECKING:
    from vhdlib.ops import Operation

NAMES = ("merge", "compact", "convert", "remediate", "resume")

__all__ = ["NAMES", "TYPES", "execute", "register", "run_with_progress"]


#: Each operation's command: its help line and description (the arguments come from the
#: operation's declarations in vhdlib).
COMMANDS = {
    "merge": ("merge a differencing disk into an ancestor",
              "Merge-VHD semantics: CHILD's data goes into its parent (or, with --into, any "
              "ancestor, collapsing every level between in one pass), in place. Merged "
              "children are then retired (archived or deleted)."),
    "compact": ("drop empty blocks and shrink the file in place",
                "Dynamic: every all-zero block goes and the file shrinks. Differencing: only "
                "blocks with no present sector go (present zeros hide parent data)."),
    "convert": ("write a disk or chain as one new disk",
                "Write SRC (a disk or a whole chain) as a new fixed or dynamic disk, or raw. "
                "A fixed output is fully allocated but only data ranges are written."),
    "remediate": ("the whole cure: chain -> one new disk",
                  "The chain ending at NEWEST becomes one new disk, written once, zeros "
                  "skipped, space allocated, verified; then it takes the base's name and the "
                  "old chain moves to an archive folder beside it (or, with --output, the "
                  "result goes there and the chain stays as it was)."),
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from vhdlib.ops import OPERATIONS

    parent = common_parent()
    for kind, (summary, description) in COMMANDS.items():
        cls = OPERATIONS[kind]
        p = sub.add_parser(kind, parents=[parent], help=summary, description=description)
        add_option(p, cls.subject)
        add_options(p, cls.options)
        add_plan(p)
        p.set_defaults(func=cmd_operation, kind=kind)

    p = sub.add_parser(
        "resume", parents=[parent], help="continue an interrupted operation",
        description="Continue the operation recorded in JOURNAL (<target>.vhdmend.json) after "
                    "a crash or kill; the result is bit-identical to an uninterrupted run. "
                    "Inputs that changed since are refused.")
    p.add_argument("journal", help="the operation's journal, <target>.vhdmend.json")
    add_plan(p)
    p.set_defaults(func=cmd_resume)


def cmd_operation(args: argparse.Namespace) -> int:
    """Prepare the operation from the declared options the user gave, then execute it."""
    from vhdlib import ops
    cls = ops.OPERATIONS[args.kind]
    op = ops.prepare(args.kind, getattr(args, cls.subject.name), **given(args, cls.options))
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

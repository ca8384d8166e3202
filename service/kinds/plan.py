"""``plan``: the dry run of an operation (steps, bytes, exact space), nothing written."""

from __future__ import annotations

from typing import Any

from service import engine, paths
from service.kinds.kind import Context, JobKind
from vhdlib.ops import OPERATIONS, every_option
from vhdlib.ops.options import Option


def run(ctx: Context) -> dict[str, Any]:
    import vhdlib
    with vhdlib.open(ctx.path) as disk:
        paths.check_chain(ctx.root_real, disk.chain)
    options = dict(ctx.options)
    operation = str(options.pop("operation"))
    plan = engine.prepare(ctx.engine, operation, ctx.path, options).plan.to_dict()
    return {"plan": plan, "result": {"plan": plan}}


#: What plan takes: the operation to plan and any operation's options (the API checks
#: them against that operation's).
OPERATION = Option("operation", str, None, "the operation to plan", required=True,
                   choices=lambda: tuple(OPERATIONS))

KIND = JobKind("plan", "Plan an operation without running it",
               declared=(OPERATION, *every_option()), run=run)

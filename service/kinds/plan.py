"""``plan``: the dry run of an operation (steps, bytes, exact space), nothing written."""

from __future__ import annotations

from typing import Any

from service import engine, paths
from service.kinds.kind import Context, JobKind
from service.kinds.options import every_operations_options, names, path_options


def run(ctx: Context) -> dict[str, Any]:
    import vhdlib
    with vhdlib.open(ctx.path) as disk:
        paths.check_chain(ctx.root_real, disk.chain)
    options = dict(ctx.options)
    operation = str(options.pop("operation"))
    plan = engine.prepare(ctx.engine, operation, ctx.path, options).plan.to_dict()
    return {"plan": plan, "result": {"plan": plan}}


_ALL = every_operations_options()

KIND = JobKind("plan", "Plan an operation without running it",
               options=("operation", *names(_ALL)), path_options=path_options(_ALL), run=run)

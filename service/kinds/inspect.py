"""``inspect``: open a disk chain read-only and report what it is."""

from __future__ import annotations

from typing import Any

from service import paths
from service.kinds.kind import Context, JobKind
from vhdlib.ops.options import READ


def run(ctx: Context) -> dict[str, Any]:
    import vhdlib
    with vhdlib.open(ctx.path) as disk:
        paths.check_chain(ctx.root_real, disk.chain)
        info = disk.info()
    return {"result": jsonable(info)}


def jsonable(value: Any) -> Any:
    """Make vhdlib's results JSON-ready (UUIDs, enums, paths become strings)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(getattr(value, "value", value))


KIND = JobKind("inspect", "What a disk chain is: type, sizes, layers, problems",
               declared=READ, run=run)

"""Operations as chunked, resumable plans with an explicit, serializable checkpoint.

    op = ops.prepare("remediate", "disk_3.avhd", type="fixed")
    print(op.plan.to_dict())          # the dry run: steps, bytes, space per volume
    op.run(progress=print)            # chunk by chunk, journal after each
    ops.resume("base.vhd.vhdmend.json").run()   # after a kill -9: bit-identical
"""

from __future__ import annotations

from typing import Any

from vhdlib import journal
from vhdlib.errors import ImageError, UsageError
from vhdlib.ops import options as declared
from vhdlib.ops.compact import CompactOperation
from vhdlib.ops.convert import ConvertOperation
from vhdlib.ops.merge import MergeOperation
from vhdlib.ops.operation import Operation
from vhdlib.ops.options import Option
from vhdlib.ops.remediate import RemediateOperation
from vhdlib.plan import Plan, Step

OPERATIONS: dict[str, type[Operation]] = {
    "merge": MergeOperation,
    "compact": CompactOperation,
    "convert": ConvertOperation,
    "remediate": RemediateOperation,
}


def every_option() -> tuple[Option, ...]:
    """Every operation's declared options, each once (what planning any of them takes)."""
    return declared.merged(*(cls.options for cls in OPERATIONS.values()))


def prepare(kind: str, path: str, *args: Any, **options: Any) -> Operation:
    """Plan operation ``kind`` on ``path`` without writing anything.

    The options of each kind are its class's ``options`` declarations (checked here;
    ``None`` means not given, and the declared default applies). The option named by the
    class's ``second`` may also be given positionally (merge ``into``, convert and
    remediate ``output``).
    """
    cls = OPERATIONS.get(kind)
    if cls is None:
        raise UsageError(f"unknown operation {kind!r}; one of {sorted(OPERATIONS)}")
    if args:
        if len(args) > 1 or cls.second is None:
            raise UsageError(f"{kind}: too many positional arguments")
        if options.get(cls.second) is not None:
            raise UsageError(f"{kind}: {cls.second} given twice")
        options[cls.second] = args[0]
    declared.validate(kind, cls.options, options)
    values = {o.name: o.default for o in cls.options}
    values.update({k: v for k, v in options.items() if v is not None})
    op: Operation = cls.prepare(path, **values)  # type: ignore[attr-defined]
    op.update(plan=op.plan.to_dict())
    return op


def resume(journal_path: str, *, fence: int | None = None) -> Operation:
    """Rebuild the operation a journal describes; ``run()`` continues it.

    Inputs are checked against their recorded identity when the run continues
    (:class:`~vhdlib.errors.ChangedInputError` names what changed).
    """
    saved = journal.load(journal_path)
    cls = OPERATIONS.get(str(saved.get("operation")))
    if cls is None or not saved.get("plan"):
        raise ImageError(f"journal names an unknown operation {saved.get('operation')!r}",
                         path=journal_path)
    try:
        state = cls.state_type.from_dict(saved)
    except TypeError as e:  # a required key missing
        raise ImageError(f"journal lacks part of the operation's state: {e}",
                         path=journal_path) from e
    plan_d = saved["plan"]
    plan = Plan(plan_d["operation"], plan_d["target"], plan_d["inputs"], plan_d["outputs"],
                [Step(s["name"], s["description"], s["read_bytes"], s["write_bytes"],
                      s["irreversible"]) for s in plan_d["steps"]],
                plan_d["space"], plan_d["details"])
    op = cls(state, plan)
    op.resume_fence = fence
    return op


__all__ = ["OPERATIONS", "Operation", "every_option", "prepare", "resume"]

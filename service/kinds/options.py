"""The options of the job kinds: vhdlib's declarations (:mod:`vhdlib.ops.options`), read
here, never restated. An operation's kind takes ``OPERATIONS[name].options``, inspect
takes :data:`~vhdlib.ops.options.READ`, plan takes every operation's."""

from __future__ import annotations

from vhdlib.ops import OPERATIONS
from vhdlib.ops.options import READ, Option, merged

#: Path options that must name an existing file (the others name one to create).
MUST_EXIST = frozenset({"into"})


def declared(kind: str) -> tuple[Option, ...]:
    """The option declarations of job kind ``kind`` (inspect or an operation)."""
    return READ if kind == "inspect" else OPERATIONS[kind].options


def operations() -> tuple[str, ...]:
    """The operations vhdlib declares (one mutating kind each)."""
    return tuple(OPERATIONS)


def every_operations_options() -> tuple[Option, ...]:
    """What plan takes beside ``operation``: any operation's options, each once."""
    return merged(*(declared(op) for op in operations()))


def names(options: tuple[Option, ...]) -> tuple[str, ...]:
    return tuple(o.name for o in options)


def path_options(options: tuple[Option, ...]) -> dict[str, bool]:
    """Those of ``options`` that name files relative to the job's root -> must exist."""
    return {o.name: o.name in MUST_EXIST for o in options if o.form == "path"}

"""The option names of each operation, in one place until the operations declare them
(``vhdlib.ops``): swap :func:`operation_options` for a read of those declarations."""

from __future__ import annotations

#: Options naming files relative to the job's root -> whether the file must exist.
PATH_OPTIONS = {"output": False, "into": True, "archive": False}

_OPTIONS: dict[str, tuple[str, ...]] = {
    "merge": ("into", "force", "archive", "delete", "lenient"),
    "compact": ("lenient", "reclaim"),
    "convert": ("output", "type", "format", "block_size", "sparse", "lenient", "uuid",
                "timestamp", "reclaim", "attributes_from", "drop_attributes"),
    "remediate": ("output", "type", "format", "archive", "delete", "force", "block_size",
                  "sparse", "lenient", "uuid", "timestamp", "reclaim", "attributes_from",
                  "drop_attributes"),
}


def operation_options(operation: str) -> tuple[str, ...]:
    """The options operation ``operation`` takes."""
    return _OPTIONS[operation]


def path_options(names: tuple[str, ...]) -> dict[str, bool]:
    """Those of ``names`` that name files (-> must exist)."""
    return {n: PATH_OPTIONS[n] for n in names if n in PATH_OPTIONS}

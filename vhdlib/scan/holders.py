"""Who holds a disk file open right now (the in-use guard's view, where available).

vhdlib has no in-use guard yet, so this reports nobody; the scan calls it for every
chain layer so the guard plugs in here without touching the scanner.
"""

from __future__ import annotations

from typing import Any


def holders(path: str) -> list[Any]:
    """Processes (or hosts) holding ``path`` open; ``[]`` when unknown or nobody."""
    return []

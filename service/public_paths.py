"""Storage-host paths made relative to their root before they leave the worker (issue 8 D2).

HTTP and webhooks never carry an absolute path of a storage host: a path in the job's root
becomes relative to it (``vm1/disk.vhdx``), one in another root ``<root>:<relative>``, the
volume holding a root ``<root>:(volume)``, and anything else ``(outside the roots)``.
Applied to every plan, result and error a worker stores (the API and webhooks show those).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

#: An absolute POSIX path inside text (a message): a slash not preceded by a word character.
_ABSOLUTE = re.compile(r"(?<![\w.:/-])/[^\s'\",;()\[\]{}]*")
OUTSIDE = "(outside the roots)"


class Relativizer:
    """Rewrites the absolute paths in values for one job's root among the worker's roots."""

    def __init__(self, roots: Mapping[str, str], root: str | None) -> None:
        forms: list[tuple[str, str]] = []
        for name, path in roots.items():
            for form in {os.path.normpath(path), os.path.realpath(path)}:
                forms.append((form.rstrip("/") or "/", name))
        # Longest first: a root nested in another is matched as itself.
        self.forms = sorted(forms, key=lambda f: -len(f[0]))
        self.root = root

    def path(self, p: str) -> str:
        """One absolute path, rewritten."""
        norm = os.path.normpath(p)
        for form, name in self.forms:
            if norm == form or norm.startswith(form + "/"):
                rel = norm[len(form):].lstrip("/") or "."
                return rel if name == self.root else f"{name}:{rel}"
        # An ancestor of a root (its volume's mount point): the job's root first.
        for form, name in sorted(self.forms, key=lambda f: f[1] != self.root):
            if form.startswith(norm.rstrip("/") + "/") or norm == "/":
                return f"{name}:(volume)"
        return OUTSIDE

    def text(self, s: str) -> str:
        if s.startswith("/") and not any(c.isspace() for c in s):
            return self.path(s)
        return _ABSOLUTE.sub(lambda m: self.path(m.group(0)), s)

    def __call__(self, value: Any) -> Any:
        """``value`` (JSON-like) with every absolute path rewritten, keys included."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)) if isinstance(k, str) else k: self(v)
                    for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        return value

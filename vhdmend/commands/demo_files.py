"""The demo folders and the before/after size table shared by ``demo`` and ``demo --stack``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from vhdlib.errors import UsageError
from vhdmend.sizes import human_size


def sizes_of(paths: list[Path]) -> dict[str, Any]:
    """File size and allocated bytes of each file and in total."""
    files = []
    for path in paths:
        st = os.stat(path)
        files.append({"path": str(path), "file_size": st.st_size,
                      "allocated_bytes": st.st_blocks * 512})
    return {"files": files,
            "file_size": sum(f["file_size"] for f in files),
            "allocated_bytes": sum(f["allocated_bytes"] for f in files)}


def print_sizes(title: str, sizes: dict[str, Any]) -> None:
    """Print :func:`sizes_of` as a small table."""
    print(f"{title}:")
    for f in sizes["files"]:
        print(f"  {Path(f['path']).name:<52} file {human_size(f['file_size']):>10}   "
              f"allocated {human_size(f['allocated_bytes']):>10}")
    print(f"  {'total':<52} file {human_size(sizes['file_size']):>10}   "
          f"allocated {human_size(sizes['allocated_bytes']):>10}")


def demo_folder(path: str | None) -> Path:
    """``--dir`` (created, must be empty) or a new temporary folder."""
    if path:
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        if any(folder.iterdir()):
            raise UsageError("not empty; give a new or empty folder for the demo",
                             path=str(folder))
        return folder
    return Path(tempfile.mkdtemp(prefix="vhdmend-demo-"))

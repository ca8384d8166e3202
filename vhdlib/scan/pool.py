"""Examining a large tree's files in worker processes (small trees stay in-process).

Probing and measuring a disk file is a few small reads and some parsing: a thread pool
overlaps the reads on a cold cache, but the parsing holds the GIL, so past a few thousand
files the scan is CPU-bound on one core. Then chunks of paths go to a process pool (one
worker per CPU, each with its own threads for the reads); results come back as small
tuples, at most a few chunks in flight, so memory stays flat in the number of files.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import fields
from typing import Any

from vhdlib.scan import reader, walk
from vhdlib.scan.layers import LayerFigures

#: Files examined in-process before the worker processes start (a small tree never
#: pays for their start-up, about 0.2 s each).
PROCESS_AFTER = 1500
#: Paths per chunk sent to a worker.
CHUNK = 200
#: Threads inside each worker (its reads overlap; its parsing is one core's worth, and
#: more threads mostly add GIL hand-offs).
WORKER_THREADS = 8

Item = tuple[str, os.stat_result]
Examined = tuple["walk.Found | None", "LayerFigures | str | None"]

_FIELDS = tuple(f.name for f in fields(LayerFigures))
_pool: ThreadPoolExecutor | None = None


def examine(path: str, st: os.stat_result) -> Examined:
    """What the file at ``path`` is, and its figures when it is a disk (the scan's
    header-only reader, which falls back to the full path on anything unusual)."""
    return reader.examine(path, st)


def examine_all(items: list[Item]) -> list[Examined]:
    """:func:`examine` of each item, in order (one task for a thread: a batch of files,
    whose first reads overlap: :func:`~vhdlib.scan.reader.examine_all`)."""
    return reader.examine_all(items)


def _pack(found: walk.Found | None, fig: LayerFigures | str | None) -> tuple[Any, ...] | None:
    if found is None:
        return None
    packed_fig = fig if fig is None or isinstance(fig, str) else \
        tuple(getattr(fig, name) for name in _FIELDS)
    return found.path, found.kind, found.error, found.fmt, packed_fig


def _unpack(packed: tuple[Any, ...] | None) -> Examined:
    if packed is None:
        return None, None
    path, kind, error, fmt, fig = packed
    found = walk.Found(path, kind, error, fmt)
    if isinstance(fig, tuple):
        return found, LayerFigures(*fig)
    return found, fig


def examine_chunk(items: list[Item]) -> list[tuple[Any, ...] | None]:
    """Runs in a worker process: every item of the chunk, packed."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=WORKER_THREADS, thread_name_prefix="scanw")
    # A few slices per thread (one that ends early takes the next), results in order.
    step = -(-len(items) // (3 * WORKER_THREADS))
    slices = [items[i:i + step] for i in range(0, len(items), step)]
    return [_pack(*r) for done in _pool.map(examine_all, slices) for r in done]


def workers() -> int:
    """Worker processes for a large tree: one per CPU this process may run on (none
    inside a daemonic process, e.g. a Celery prefork child: it may not have children)."""
    if multiprocessing.current_process().daemon:
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class ProcessFeed:
    """Sends chunks of items to worker processes, started on first use; hands back the
    examined results in order, keeping at most ``2 * workers + 1`` chunks in flight."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._exe: ProcessPoolExecutor | None = None
        self._chunk: list[Item] = []
        self._window: list[Future[list[tuple[Any, ...] | None]]] = []

    def add(self, item: Item) -> list[Examined]:
        """Queue one item; returns the results of chunks that are done."""
        self._chunk.append(item)
        if len(self._chunk) >= CHUNK:
            self._submit()
        return self._drain(block=len(self._window) > 2 * self.processes)

    def finish(self) -> list[Examined]:
        if self._chunk:
            self._submit()
        out: list[Examined] = []
        while self._window:
            out.extend(self._drain(block=True))
        return out

    def close(self) -> None:
        if self._exe is not None:
            self._exe.shutdown(wait=True, cancel_futures=True)
            self._exe = None

    def _submit(self) -> None:
        if self._exe is None:
            # spawn: the caller runs threads, which a fork would copy half-way.
            self._exe = ProcessPoolExecutor(self.processes,
                                            mp_context=multiprocessing.get_context("spawn"))
        self._window.append(self._exe.submit(examine_chunk, self._chunk))
        self._chunk = []

    def _drain(self, *, block: bool) -> list[Examined]:
        out: list[Examined] = []
        while self._window and (block or self._window[0].done()):
            out.extend(_unpack(p) for p in self._window.pop(0).result())
            block = False
        return out


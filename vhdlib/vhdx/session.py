"""The log session of one writable VHDX open (MS-VHDX 2.2.2, 2.3).

The first change of an open renews FileWriteGuid and LogGuid (and, for a data change,
DataWriteGuid) in the headers; from then on BAT and bitmap pages reach the file only as
log entries; closing the session marks the log clean (LogGuid zero).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from vhdlib.errors import InternalError
from vhdlib.vhdx import structs as S
from vhdlib.vhdx.headers import HeaderPair
from vhdlib.vhdx.log import LogWriter


class LogSession:
    """Header GUID renewal and the log writer of one open."""

    def __init__(self, fd: int, headers: HeaderPair, new_guid: Callable[[], UUID]) -> None:
        self.fd = fd
        self.headers = headers
        self.new_guid = new_guid
        #: True once the headers carry our LogGuid (the first change happened).
        self.open = False
        #: True once DataWriteGuid was renewed (or must be kept: see keep_data_write_guid).
        self.data_changed = False
        self.writer: LogWriter | None = None

    def begin(self, *, data: bool) -> None:
        """Before a change: new FileWriteGuid and LogGuid once (and DataWriteGuid once for
        a data change)."""
        if not self.open:
            changes: dict[str, Any] = {"file_write_guid": self.new_guid(),
                                       "log_guid": self.new_guid()}
            if data and not self.data_changed:
                changes["data_write_guid"] = self.new_guid()
                self.data_changed = True
            self.headers.update(self.fd, **changes)
            h = self.headers.current
            self.writer = LogWriter(self.fd, h.log_offset, h.log_length, h.log_guid)
            self.open = True
        elif data and not self.data_changed:
            self.headers.update(self.fd, data_write_guid=self.new_guid())
            self.data_changed = True

    def commit(self, sectors: list[tuple[int, bytes]], file_size: int) -> None:
        """One log entry for ``sectors`` (written, then applied, by the writer)."""
        if self.writer is None:
            raise InternalError("metadata dirty without an open log session")
        self.writer.commit(sectors, file_size)

    def end(self) -> None:
        """Mark the log clean when this open changed anything."""
        if self.open:
            self.headers.update(self.fd, log_guid=S.ZERO_GUID)
            self.open = False

    def reset(self) -> None:
        """Forget the session (finalize rewrote the headers and zeroed the log)."""
        self.open = False
        self.writer = None
        self.data_changed = False

"""``--resume``: a state file recording the last whole batch the target committed.

The file holds the import's identity (input files with size and modification time, format,
measurement, column roles, target) and a position: the index of the file being read and the
position in it (rows for Parquet and CSV, bytes for line protocol) after the last committed batch.
It is replaced atomically (write, fsync, rename) after each commit, so a crash leaves either the
old or the new state. A re-run with ``--resume`` starts after that position; rows after it that
the target had also stored before the interruption are written again, which stores nothing twice
(a point is identified by series, timestamp and field: the later write wins with the same value).
"""

from __future__ import annotations

import json
import os

from rusts.importer.errors import ImportInputError


class ResumeState:
    def __init__(self, path: str, identity: dict) -> None:
        self.path = path
        self.identity = identity
        self.file_index = 0
        self.position = 0
        self.complete = False
        self.committed_rows = 0

    def load(self) -> "ResumeState":
        """Pick up a previous run's state (none: start at the beginning)."""
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return self
        except (OSError, ValueError) as e:
            raise ImportInputError(f"resume state {self.path} is unreadable: {e}; delete it to start over") from None
        if data.get("identity") != self.identity:
            raise ImportInputError(
                f"resume state {self.path} belongs to another import (different files, options or "
                "target, or a file changed since); delete it or pass another --state-file")
        self.file_index = int(data["file_index"])
        self.position = int(data["position"])
        self.complete = bool(data.get("complete"))
        self.committed_rows = int(data.get("committed_rows", 0))
        return self

    def save(self, file_index: int, position: int, committed_rows: int, complete: bool = False) -> None:
        self.file_index, self.position, self.complete = file_index, position, complete
        self.committed_rows = committed_rows
        tmp = self.path + ".tmp"
        body = json.dumps({"identity": self.identity, "file_index": file_index, "position": position,
                           "committed_rows": committed_rows, "complete": complete}, indent=1)
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

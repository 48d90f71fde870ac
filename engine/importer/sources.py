"""Input files, streamed: Parquet row groups, CSV blocks, line-protocol chunks.

Every source yields pieces of at most ``batch_size`` rows and never holds the whole file: Parquet
is read record batch by record batch (pyarrow), CSV block by block (pyarrow's streaming reader),
line protocol in chunks cut at line ends. A position (rows for Parquet and CSV, bytes for line
protocol) lets ``--resume`` continue where a previous run stopped.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from rusts.importer.errors import ImportInputError

FORMATS = ("parquet", "csv", "lp")


def expand(patterns: list[str]) -> list[str]:
    """The files named by ``patterns`` (globs expanded, sorted, in argument order)."""
    out: list[str] = []
    for p in patterns:
        if glob.has_magic(p):
            hits = sorted(h for h in glob.glob(p, recursive=True) if os.path.isfile(h))
            if not hits:
                raise ImportInputError(f"no file matches {p!r}")
            out.extend(hits)
        elif not os.path.exists(p):
            raise ImportInputError(f"file not found: {p}")
        elif not os.path.isfile(p):
            raise ImportInputError(f"not a file: {p}")
        else:
            out.append(p)
    return list(dict.fromkeys(out))


def file_identity(path: str) -> list:
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


class ParquetSource:
    """A Parquet file read in record batches (row groups are never loaded whole)."""

    kind = "parquet"

    def __init__(self, path: str) -> None:
        import pyarrow.parquet as pq

        self.path = path
        try:
            self.file = pq.ParquetFile(path, memory_map=False, buffer_size=1 << 20)
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
            raise ImportInputError(f"{path}: not a readable Parquet file: {e}") from None
        try:
            self.schema = self.file.schema_arrow
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise ImportInputError(f"{path}: unsupported Parquet schema: {e}") from None
        self.total_rows = self.file.metadata.num_rows

    def _reader(self, batch_size: int):
        """The file opened for reading its batches. When its row groups hold at least a batch
        each, string columns are read as dictionary arrays: the file's own dictionary pages are
        kept instead of materialising every value (half the read cost of the trips file), and
        the importer and the server use the dictionaries instead of hashing the strings again.
        (Dictionary batches end at row-group boundaries: with smaller row groups the batches
        would shrink, so those files are read as plain strings, in batches of ``batch_size``.)"""
        import pyarrow.parquet as pq

        md = self.file.metadata
        sizes = [md.row_group(i).num_rows for i in range(md.num_row_groups - 1)]
        strings = [f.name for f in self.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
        if not strings or min(sizes, default=batch_size) < batch_size:
            return self.file
        return pq.ParquetFile(self.path, memory_map=False, buffer_size=1 << 20, read_dictionary=strings)

    def describe(self) -> list[str]:
        md = self.file.metadata
        return [f"rows: {md.num_rows}", f"row groups: {md.num_row_groups}",
                f"created by: {md.created_by}"]

    def batches(self, batch_size: int, skip: int = 0) -> Iterator[tuple[pa.RecordBatch, int]]:
        """(batch, position after it); the first ``skip`` rows are not returned."""
        md = self.file.metadata
        groups, pos = [], 0
        for i in range(md.num_row_groups):
            n = md.row_group(i).num_rows
            if not groups and pos + n <= skip:  # whole row groups before the start are not read
                pos += n
                continue
            groups.append(i)
        if not groups:
            return
        drop = skip - pos
        try:
            for rb in self._reader(batch_size).iter_batches(batch_size=batch_size, row_groups=groups,
                                                            use_threads=True):
                if drop:
                    k = min(drop, rb.num_rows)
                    rb, drop, pos = rb.slice(k), drop - k, pos + k
                    if not rb.num_rows:
                        continue
                pos += rb.num_rows
                yield rb, pos
        except (pa.ArrowInvalid, OSError) as e:
            raise ImportInputError(f"{self.path}: cannot read row {pos + 1} onwards: {e}") from None


class CsvSource:
    """A CSV file with a header line, read with pyarrow's streaming reader (types are inferred
    from the first block; ISO 8601 columns become timestamps)."""

    kind = "csv"
    total_rows = None

    def __init__(self, path: str, delimiter: str = ",") -> None:
        self.path = path
        self.delimiter = delimiter
        reader = self._open()
        self.schema = reader.schema
        reader.close()

    def _open(self):
        import pyarrow.csv as pcsv

        try:
            return pcsv.open_csv(self.path, read_options=pcsv.ReadOptions(block_size=4 << 20),
                                 parse_options=pcsv.ParseOptions(delimiter=self.delimiter))
        except (pa.ArrowInvalid, OSError) as e:
            raise ImportInputError(f"{self.path}: not a readable CSV file: {e}") from None

    def describe(self) -> list[str]:
        return [f"size: {os.path.getsize(self.path)} bytes", "rows: counted while importing"]

    def batches(self, batch_size: int, skip: int = 0) -> Iterator[tuple[pa.RecordBatch, int]]:
        reader = self._open()
        pos = 0
        try:
            while True:
                try:
                    rb = reader.read_next_batch()
                except StopIteration:
                    break
                for off in range(0, rb.num_rows, batch_size):
                    piece = rb.slice(off, batch_size)
                    end = pos + piece.num_rows
                    if end <= skip:
                        pos = end
                        continue
                    if pos < skip:
                        piece = piece.slice(skip - pos)
                    pos = end
                    yield piece, pos
        except pa.ArrowInvalid as e:
            raise ImportInputError(f"{self.path}: after row {pos}: {e} (CSV column types are inferred "
                                   "from the first 4 MiB)") from None
        finally:
            reader.close()


class LineProtocolSource:
    """A line-protocol file, in chunks of ``batch_size`` lines cut at newlines (no per-line step).
    Its positions are byte offsets."""

    kind = "lp"
    schema = None
    total_rows = None
    READ = 8 << 20

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            with open(path, "rb") as fh:
                head = fh.read(4096)
        except OSError as e:
            raise ImportInputError(f"{path}: cannot read: {e}") from None
        if b"\0" in head or head.startswith(b"PAR1"):
            raise ImportInputError(f"{path}: not a line-protocol text file")
        self.size = os.path.getsize(path)

    def describe(self) -> list[str]:
        return [f"size: {self.size} bytes", "line protocol: measurement, tags and fields come from each line"]

    def chunks(self, batch_size: int, skip: int = 0) -> Iterator[tuple[bytes, int, int]]:
        """(chunk, lines in it, byte position after it), from byte ``skip`` on."""
        with open(self.path, "rb") as fh:
            fh.seek(skip)
            pos, buf = skip, b""
            while True:
                data = fh.read(self.READ)
                buf += data
                nl = np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == 10)
                start, used = 0, 0
                while len(nl) - used >= batch_size:
                    cut = int(nl[used + batch_size - 1]) + 1
                    yield buf[start:cut], batch_size, pos + cut
                    start, used = cut, used + batch_size
                pos += start
                buf = buf[start:]
                if not data:
                    if buf.strip():
                        n = len(nl) - used + (0 if buf.endswith(b"\n") else 1)
                        yield buf, n, pos + len(buf)
                    return


def open_source(kind: str, path: str, delimiter: str = ","):
    if kind == "parquet":
        return ParquetSource(path)
    if kind == "csv":
        return CsvSource(path, delimiter)
    if kind == "lp":
        return LineProtocolSource(path)
    raise ImportInputError(f"unknown format {kind!r} (expected one of {', '.join(FORMATS)})")

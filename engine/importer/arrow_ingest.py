"""The server side of ``POST /api/v1/write/arrow``: an Arrow IPC stream body -> a WriteBatch.

Query parameters: ``measurement`` (required), ``tags`` (comma-separated tag columns),
``timestamp_column`` (default ``timestamp``), ``timestamp_unit`` (of an integer timestamp column,
default ``ns``). The columns map exactly as in ``rusts-import`` (rusts.importer.mapping), so a
client may send any Arrow batch, or one ``rusts-import`` already normalised (then the conversions
are no-ops and the server only groups rows by series). docs/import.md describes the answers.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa

from rusts.errors import ProtocolError
from rusts.importer.mapping import make_plan, normalise, to_write_batch, value_count

INLINE_BYTES = 256 << 10


def decode(body: bytes, args: Mapping[str, str]):
    """(WriteBatch, values in it, rows dropped by reason) of a request."""
    measurement = args.get("measurement", "")
    if not measurement:
        raise ProtocolError("missing query parameter: measurement")
    tags = tuple(t for t in args.get("tags", "").split(",") if t)
    if not body:
        raise ProtocolError("empty body: expected an Arrow IPC stream")
    try:
        table = pa.ipc.open_stream(pa.py_buffer(body)).read_all()
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as e:
        raise ProtocolError(f"body is not an Arrow IPC stream: {e}") from None
    plan = make_plan(table.schema, measurement=measurement,
                     timestamp_column=args.get("timestamp_column", "timestamp"), tags=tags,
                     int_unit=args.get("timestamp_unit", "ns"))
    if table.num_rows == 0:
        from rusts.model import WriteBatch

        return WriteBatch.from_frames(()), 0, {}
    rb = table.combine_chunks().to_batches()[0] if table.num_rows else None
    norm = normalise(rb, plan)
    return to_write_batch(norm.batch, plan, norm.rows), value_count(norm.batch, plan), norm.rejected


async def write_arrow(db, body: bytes, args: Mapping[str, str]) -> tuple[dict, int]:
    """Decode and write; returns (JSON answer, HTTP status): 200 when every row with a timestamp
    and a value was written, 400 with per-row errors when the schema rejected some (the rest are
    written, as with ``/write``)."""
    db._check_overload()  # 503 + Retry-After while the memtable is over its hard limit, as /write
    if len(body) < INLINE_BYTES:
        batch, values, dropped = decode(body, args)
    else:
        from rusts.messages import run_cpu

        batch, values, dropped = await run_cpu(decode, body, args)
    sent = batch.point_count
    res = await db.write_batch(batch) if sent else None
    written = res.points if res is not None else 0
    if written != sent and sent:
        values = round(values * written / sent)
    out = {"points_written": written, "values_written": values,
           "rows_rejected": sum(dropped.values()) + (sent - written), "rejected_reasons": dict(dropped)}
    if res is not None and res.errors:
        errs = [{"row": e.line_number, "error_message": e.error_message} for e in res.errors]
        out["error"] = (f"partial write: {len(errs)} row(s) rejected, {written} point(s) written; "
                        f"row {errs[0]['row']}: {errs[0]['error_message']}")
        out["data"] = errs
        return out, 400
    return out, 200

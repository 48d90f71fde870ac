"""``rusts-import``: the command line (docs/import.md).

    rusts-import [-c rusts.yml] parquet|csv|lp FILE... [options]

Every failure the user can cause (a missing file, a column that does not fit, an unreachable
server, a refused batch, a locked data directory) is printed as one ``rusts-import: error: ...``
line with exit status 1; an interruption exits 130 after committing whole batches; argument
errors exit 2 (argparse).
"""

from __future__ import annotations

import argparse
import os
import sys

from rusts.errors import RustsError
from rusts.importer.errors import ImportInputError
from rusts.importer.progress import Progress, Stats, print_summary

EXIT_INTERRUPTED = 130


def _csv_list(values) -> tuple[str, ...]:
    out: list[str] = []
    for v in values or ():
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return tuple(dict.fromkeys(out))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rusts-import",
                                description="Import Parquet, CSV and line-protocol files into RusTs.")
    p.add_argument("-c", "--config", default=None,
                   help="rusts.yml to read storage settings (data_dir) from (default: ./rusts.yml if present)")
    sub = p.add_subparsers(dest="format", required=True, metavar="{parquet,csv,lp}")
    for kind, what in (("parquet", "Parquet files"), ("csv", "CSV files with a header line"),
                       ("lp", "line-protocol files")):
        s = sub.add_parser(kind, help=f"import {what}", description=f"Import {what} (globs allowed).")
        s.add_argument("files", nargs="+", metavar="FILE", help="input files or glob patterns")
        s.add_argument("-c", "--config", default=argparse.SUPPRESS, help="as before the format")
        s.add_argument("-m", "--measurement", default="imported", help="measurement of every point (default: imported)")
        s.add_argument("-s", "--server", default="http://localhost:8086", help="server URL for REST mode")
        s.add_argument("-t", "--timestamp-column", default="timestamp",
                       help="column holding the timestamps (default: timestamp, else time or ts)")
        s.add_argument("--timestamp-unit", default="ns", choices=("s", "ms", "us", "ns"),
                       help="unit of an integer timestamp column (default: ns)")
        s.add_argument("--tags", action="append", metavar="COLS", help="comma-separated tag columns")
        s.add_argument("--skip-column", action="append", metavar="COLS", help="columns to leave out")
        s.add_argument("-b", "--batch-size", type=int, default=10_000, help="rows per write batch (default: 10000)")
        s.add_argument("--direct", action="store_true", help="write into the data directory in-process")
        s.add_argument("--data-dir", help="data directory for --direct (default: from the config)")
        s.add_argument("--dedup-column", help="skip rows whose value of this column is already stored")
        s.add_argument("--schema-only", action="store_true", help="print the schema and the column mapping")
        s.add_argument("--dry-run", action="store_true", help="read and convert everything, write nothing")
        s.add_argument("--format", dest="wire", default="arrow", choices=("arrow", "lp"),
                       help="REST body: Arrow IPC to /api/v1/write/arrow (default) or line protocol to /write")
        s.add_argument("--token", default=os.environ.get("RUSTS_TOKEN"),
                       help="bearer token for a server with auth (default: $RUSTS_TOKEN)")
        s.add_argument("--concurrency", type=int, default=2, help="REST requests in flight (default: 2)")
        s.add_argument("--retries", type=int, default=8,
                       help="attempts per batch on a lost connection (default: 8)")
        s.add_argument("--max-wait", type=float, default=600.0,
                       help="seconds a batch may wait while the server answers 503 (default: 600)")
        s.add_argument("--resume", action="store_true",
                       help="record progress in --state-file and continue from it on a re-run")
        s.add_argument("--state-file", default=None, help="resume state (default: .rusts-import-state.json)")
        s.add_argument("--checkpoint-rows", type=int, default=1_000_000,
                       help="--direct --resume: flush and record progress every N rows (default: 1000000)")
        s.add_argument("--memtable-mb", type=int, default=64,
                       help="--direct: memtable size; the importer holds about 4x this (default: 64)")
        s.add_argument("--workers", type=int, default=None,
                       help="--direct: processes encoding segments in parallel (default: CPUs, at most 4)")
        s.add_argument("--delimiter", default=",", help="CSV field delimiter (default: ,)")
        s.add_argument("-q", "--quiet", action="store_true", help="no progress line")
        s.add_argument("--progress-interval", type=float, default=None,
                       help="seconds between progress lines (default: 0.2 on a terminal, else 5)")
        s.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    return p


def _load_config(path: str | None, data_dir: str | None):
    from rusts.config import load_config

    cfg = load_config(path if path is not None else ("rusts.yml" if os.path.exists("rusts.yml") else None))
    if data_dir:
        import attrs

        cfg = attrs.evolve(cfg, storage=attrs.evolve(cfg.storage, data_dir=data_dir, wal_dir=None))
    return cfg


def _schema_only(opts) -> int:
    from rusts.importer.sources import open_source

    for path in opts.files:
        src = open_source(opts.kind, path, opts.delimiter)
        print(f"\n{path} ({src.kind})")
        for line in src.describe():
            print(f"  {line}")
        if src.schema is None:
            continue
        from rusts.importer.mapping import make_plan

        plan, problem = None, None
        try:
            plan = make_plan(src.schema, measurement=opts.measurement, timestamp_column=opts.timestamp_column,
                             tags=opts.tags, skip=opts.skip, int_unit=opts.int_unit, strict=False)
        except ImportInputError as e:
            problem = str(e)
        print("-" * 78)
        print(f"{'Column':<30} {'Type':<28} {'Imported as':<18}")
        print("-" * 78)
        for f in src.schema:
            role = plan.role(f.name) if plan is not None else "?"
            print(f"{f.name:<30} {str(f.type):<28} {role:<18}")
        print("-" * 78)
        if plan is not None and plan.skipped:
            print(f"  skipped: {', '.join(plan.skipped)}")
        if problem:
            print(f"  problem: {problem}")
    return 0


def _dry_run(opts, stats: Stats, progress: Progress, target: str, as_json: bool) -> int:
    from rusts.importer.direct import prepare_direct
    from rusts.importer.pipeline import account, units

    for u in units(opts, prepare=prepare_direct):
        account(stats, u)
        batch, values = u.payload
        if batch is not None:
            from rusts.importer.direct import count_errors

            count_errors(stats, u, batch.errors)
            stats.points_written += batch.point_count
            stats.values_written += values
            stats.batches += 1
        progress.update()
    progress.done()
    print_summary(stats, title="Dry run complete (nothing written; points and values: what would be written)",
                  target=target, as_json=as_json, dry_run=True)
    return 0


def _check_inputs(opts) -> int | None:
    """Open every file and plan its columns before writing anything; the total rows (Parquet)."""
    from rusts.importer.sources import open_source

    total = 0
    for f in opts.files:
        src = open_source(opts.kind, f, opts.delimiter)
        if src.schema is not None:
            opts.plan(src.schema)
        total = None if src.total_rows is None or total is None else total + src.total_rows
    return total


def _state(args, opts, target: str):
    from rusts.importer.resume import ResumeState
    from rusts.importer.sources import file_identity

    if not args.resume:
        return None
    identity = {"format": opts.kind, "files": [file_identity(f) for f in opts.files],
                "measurement": opts.measurement, "timestamp_column": opts.timestamp_column,
                "tags": list(opts.tags), "skip": list(opts.skip), "int_unit": opts.int_unit,
                "target": target, "dedup_column": args.dedup_column}
    return ResumeState(args.state_file or ".rusts-import-state.json", identity).load()


def run(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from rusts.importer.pipeline import Options
    from rusts.importer.sources import expand

    if args.batch_size < 1:
        raise ImportInputError("--batch-size must be at least 1")
    if args.concurrency < 1:
        raise ImportInputError("--concurrency must be at least 1")
    if args.memtable_mb < 8:
        raise ImportInputError("--memtable-mb must be at least 8")
    if args.workers is not None and args.workers < 1:
        raise ImportInputError("--workers must be at least 1")
    files = tuple(expand(args.files))
    opts = Options(kind=args.format, files=files, measurement=args.measurement,
                   timestamp_column=args.timestamp_column, tags=_csv_list(args.tags),
                   skip=_csv_list(args.skip_column), batch_size=args.batch_size,
                   int_unit=args.timestamp_unit, delimiter=args.delimiter)
    if args.schema_only:
        return _schema_only(opts)
    if args.dedup_column and opts.kind == "lp":
        raise ImportInputError("--dedup-column needs a Parquet or CSV input (line protocol names its own columns)")
    if args.direct:
        cfg = _load_config(args.config, args.data_dir)
        target = os.path.abspath(cfg.storage.data_dir)
    else:
        cfg = None
        target = args.server.rstrip("/")
    total = _check_inputs(opts)
    stats = Stats()
    if args.dry_run:
        progress = Progress(stats, total, quiet=args.quiet, interval=args.progress_interval)
        return _dry_run(opts, stats, progress, target, args.json)
    state = _state(args, opts, target)
    if state is not None:
        if state.complete:
            print_summary(stats, title=f"Nothing to do: {state.path} records this import as complete",
                          target=target, as_json=args.json)
            return 0
        stats.resumed_rows = state.committed_rows
    progress = Progress(stats, total, quiet=args.quiet, interval=args.progress_interval)
    if args.direct:
        import trio

        from rusts.importer.direct import run_direct

        finished = trio.run(lambda: run_direct(
            opts, cfg, stats, progress, dedup_column=args.dedup_column, state=state,
            checkpoint_rows=args.checkpoint_rows, memtable_mb=args.memtable_mb, workers=args.workers))
    else:
        from rusts.importer.rest import RestTarget, run_rest

        rest = RestTarget(target, token=args.token, retries=args.retries, max_wait=args.max_wait)
        finished = run_rest(opts, rest, stats, progress, wire=args.wire, concurrency=args.concurrency,
                            dedup_column=args.dedup_column, state=state)
    progress.done()
    title = "Import complete" if finished else "Import interrupted (whole batches committed; --resume continues)"
    print_summary(stats, title=title, target=target, as_json=args.json, mode="direct" if args.direct else "rest")
    return 0 if finished else EXIT_INTERRUPTED


def _leaf_error(group: BaseExceptionGroup) -> BaseException:
    """The error to report from an exception group (trio nurseries wrap their children's)."""
    for e in group.exceptions:
        if isinstance(e, BaseExceptionGroup):
            e = _leaf_error(e)
        if isinstance(e, (RustsError, KeyboardInterrupt)):
            return e
    return group


def main(argv=None) -> int:
    try:
        try:
            return run(argv)
        except BaseExceptionGroup as g:
            raise _leaf_error(g) from None
    except RustsError as e:
        sys.stderr.write(f"\nrusts-import: error: {e}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\nrusts-import: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 1

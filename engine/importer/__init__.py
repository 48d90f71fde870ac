"""rusts-import: bulk import of Parquet, CSV and line-protocol files (docs/import.md).

Modules: cli (the command line), sources (streamed file readers), mapping (Arrow columns ->
columnar write batches), pipeline (read -> normalise -> dedup -> prepare), rest (client mode),
direct (in-process mode), arrow_ingest (the server's Arrow write route), lpformat (Arrow -> line
protocol), dedup, resume, progress.
"""


def main(argv=None) -> int:
    """Entry point of the ``rusts-import`` console script."""
    from rusts.importer.cli import main as _main

    return _main(argv)

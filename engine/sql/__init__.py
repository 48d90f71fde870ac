"""SQL for /sql and pgwire: sqlglot front end, the fast paths (vector, columnar) and the DuckDB general path."""

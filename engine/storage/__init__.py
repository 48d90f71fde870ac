"""On-disk state: WAL, segments, manifest, series index, schema, and the decoded-block cache."""

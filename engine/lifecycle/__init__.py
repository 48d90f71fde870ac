"""Data lifecycle: compaction, tiering, retention policies and deletes (tombstones)."""

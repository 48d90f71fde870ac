"""Data in memory: memtable tables and the recent (flushed, still cached) tables."""

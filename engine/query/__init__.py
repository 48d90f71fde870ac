"""The query model, the executor and the row sets it merges."""

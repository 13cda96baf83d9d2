"""Wire schemas (placeholder: being written by the core developer)."""

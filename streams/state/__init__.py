"""State for batch agents: Faust tables written in bulk (see :mod:`.table`)."""

from .table import BatchTable

__all__ = ["BatchTable"]

"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Checkpoints (online learners, equipment state, sentiment state) are written
while a worker runs and may be killed at any moment; a torn checkpoint would
be worse than an old one.

>>> import tempfile, pathlib
>>> target = pathlib.Path(tempfile.mkdtemp()) / "sub" / "state.bin"
>>> write_atomic(target, b"v1") == target and target.read_bytes()
b'v1'
>>> _ = write_atomic(target, b"v2", fsync=False); target.read_bytes()
b'v2'
>>> sorted(p.name for p in target.parent.iterdir())  # no temporary file left behind
['state.bin']
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | Path, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    ``fsync`` also makes the bytes durable before the rename (survives a power
    loss, not only a process crash); per-equipment files skip it for speed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path

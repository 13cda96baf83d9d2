"""Durable per-equipment state of the anomaly pipeline: one checkpoint file per equipment.

Why files under ``settings.state_dir`` and not a changelogged Faust table: an
equipment's state is ~65 kB (mostly its River trees) and costs ~10-30 ms to
serialize, so writing it with every batch (what makes a table changelog exact)
would cost more than scoring; and Faust's table recovery trusts ListOffsets
for the changelog's end, which the embedded broker (Tansu) answers wrongly
(the base offset of the last record batch), so recovery would silently stop
short of the newest entries. A checkpoint file is read back exactly.

How it stays right:

* **Periodic, bounded.** A timer writes each equipment whose state changed
  (frames or maintenance labels) once it has been dirty for
  ``interval_s``, oldest first, spending at most ``budget_s`` of the event
  loop per tick. After a crash an equipment resumes from its last checkpoint:
  its normal levels, River detector, calibration and alert state come back;
  the frames it saw after that checkpoint (at most about ``interval_s``) taught
  it nothing, which changes scores only marginally.
* **Rebalance.** When partitions are revoked every dirty equipment is written
  at once and every equipment is dropped from memory; whoever scores an
  equipment next (this worker or another sharing the state dir) restores it
  from its file on the first frame. So a worker never resumes from a stale
  in-memory copy after another worker had the partition.
* **Shutdown** writes every dirty equipment.
* Writes are atomic (temporary file + rename): a reader sees the old
  checkpoint or the new one.

Workers on different hosts need a shared ``LEPTON_HOME`` (a volume) for state to
follow a partition; without one, equipment that moves calibrates afresh.

>>> import tempfile
>>> store = CheckpointStore(Path(tempfile.mkdtemp()))
>>> store.write("pump/1", b"state")
>>> store.read("pump/1"), store.read("pump-2"), store.equipment()
(b'state', None, ['pump/1'])
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from pathlib import Path

from models.atomic import write_atomic

log = logging.getLogger(__name__)

SUFFIX = ".ckpt"


class CheckpointStore:
    """One file per equipment id in ``directory`` (names are URL-quoted ids)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path_of(self, equipment_id: str) -> Path:
        return self.directory / (urllib.parse.quote(equipment_id, safe="") + SUFFIX)

    def write(self, equipment_id: str, data: bytes) -> None:
        write_atomic(self.path_of(equipment_id), data, fsync=False)

    def read(self, equipment_id: str) -> bytes | None:
        try:
            return self.path_of(equipment_id).read_bytes()
        except FileNotFoundError:
            return None

    def equipment(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(urllib.parse.unquote(p.name[: -len(SUFFIX)]) for p in self.directory.glob("*" + SUFFIX)
                      if not p.name.startswith(".tmp-"))


class Checkpointer:
    """Decides which equipment to write when (see module doc); the pipeline supplies dump/restore.

    ``dump(eid) -> bytes`` serializes one equipment; ``touched() -> set`` returns
    the equipment changed since the last call.
    """

    def __init__(self, store: CheckpointStore, dump, touched, *, interval_s: float, budget_s: float) -> None:
        self.store = store
        self._dump = dump
        self._touched = touched
        self.interval_s = interval_s
        self.budget_s = budget_s
        self.dirty: dict[str, float] = {}  # equipment -> monotonic time it became dirty
        self.written = 0

    def _collect(self, now: float) -> None:
        for eid in self._touched():
            self.dirty.setdefault(eid, now)

    def due(self, now: float | None = None) -> list[str]:
        """Dirty equipment whose interval has passed, oldest first."""
        now = time.monotonic() if now is None else now
        self._collect(now)
        return sorted((e for e, t in self.dirty.items() if now - t >= self.interval_s), key=self.dirty.__getitem__)

    def tick(self, now: float | None = None) -> int:
        """Write due equipment until the time budget is spent; returns how many were written."""
        started = time.perf_counter()
        n = 0
        for eid in self.due(now):
            if n and time.perf_counter() - started >= self.budget_s:
                break
            n += self._write(eid)
        return n

    def flush(self) -> int:
        """Write every dirty equipment now (revocation, shutdown); returns how many were written."""
        self._collect(time.monotonic())
        return sum(self._write(eid) for eid in list(self.dirty))

    def _write(self, eid: str) -> bool:
        try:
            data = self._dump(eid)
        except KeyError:  # dropped since it was touched
            self.dirty.pop(eid, None)
            return False
        self.store.write(eid, data)
        self.dirty.pop(eid, None)
        self.written += 1
        return True


__all__ = ["CheckpointStore", "Checkpointer"]

"""Keep the garbage collector's full collections off the event path.

A full (generation 2) collection traverses every tracked object. A worker
imports numpy, pandas, Faust, onnxruntime and River and loads its models:
about 180,000 long-lived objects, so each full collection stopped the event
loop for 0.2-1.1 s on the development machine (measured with ``gc.callbacks``
in a fraud worker under a paced load), which alone puts p99 latency far above
target. None of those objects will ever be garbage, so once start-up is done
they are moved to the permanent generation (:func:`gc.freeze`): later
collections traverse only what the stream created since.

The youngest generation's threshold is raised too (``LEPTON_GC_YOUNG_THRESHOLD``,
100,000 instead of Python's 700): a batch keeps thousands of container objects
(records, parsed events, outputs) alive for its whole life, so at 700 they were
traversed and promoted again and again. In ``lepton bench`` runs alternating the two
(fraud, 100,000 events, 2 rounds), the worker's CPU per 1,000 events went from
0.031-0.033 s to 0.029 s (0.027 with the collector off).

>>> import gc
>>> freeze_long_lived() > 0 and gc.get_freeze_count() > 0
True
>>> gc.unfreeze()  # (a test process must not keep its garbage)
>>> before = gc.get_threshold()
>>> freeze_long_lived(young_threshold=100_000) > 0 and gc.get_threshold()[0]
100000
>>> gc.unfreeze()
>>> gc.set_threshold(*before)
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def freeze_long_lived(young_threshold: int = 0) -> int:
    """Collect once, then exempt every surviving object from later collections; returns how many.

    ``young_threshold`` (``LEPTON_GC_YOUNG_THRESHOLD``): see :func:`set_young_threshold`.
    """
    set_young_threshold(young_threshold)
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("gc: %d start-up objects frozen (full collections skip them)", frozen)
    return frozen


def set_young_threshold(young: int) -> None:
    """Collect the youngest generation after ``young`` net allocations (0: keep Python's default)."""
    if young > 0:
        gc.set_threshold(young, *gc.get_threshold()[1:])

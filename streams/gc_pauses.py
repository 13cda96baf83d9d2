"""Keep the garbage collector's full collections off the event path.

A full (generation 2) collection traverses every tracked object. A worker
imports numpy, pandas, Faust, onnxruntime and River and loads its models:
about 180,000 long-lived objects, so each full collection stopped the event
loop for 0.2-1.1 s on the development machine (measured with ``gc.callbacks``
in a fraud worker under a paced load), which alone puts p99 latency far above
target. None of those objects will ever be garbage, so once start-up is done
they are moved to the permanent generation (:func:`gc.freeze`): later
collections traverse only what the stream created since.

>>> import gc
>>> freeze_long_lived() > 0 and gc.get_freeze_count() > 0
True
>>> gc.unfreeze()  # (a test process must not keep its garbage)
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def freeze_long_lived() -> int:
    """Collect once, then exempt every surviving object from later collections; returns how many."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("gc: %d start-up objects frozen (full collections skip them)", frozen)
    return frozen

"""A real `lepton worker`, with two fault injections for the correctness tests.

HARNESS_SLEEP_PER_BATCH=S  each batch waits S seconds before emitting (keeps
                           batches in flight while a rebalance happens).
HARNESS_CRASH_AT_BATCH=K   the K-th batch emits half of its outputs, then the
                           process dies at once (os._exit): a crash mid-batch.
"""

import asyncio
import os

from streams.batching import Emitter
from streams.cli import main

SLEEP = float(os.environ.get("HARNESS_SLEEP_PER_BATCH", "0"))
CRASH_AT = int(os.environ.get("HARNESS_CRASH_AT_BATCH", "0"))
_original_enqueue = Emitter.enqueue
_batches = 0


async def _enqueue(self: Emitter, outputs: list, partition: int | None = None):
    global _batches
    _batches += 1
    if SLEEP:
        await asyncio.sleep(SLEEP)
    if CRASH_AT and _batches == CRASH_AT and len(outputs) > 1:
        await (await _original_enqueue(self, outputs[: len(outputs) // 2], partition))
        os._exit(137)
    return await _original_enqueue(self, outputs, partition)


Emitter.enqueue = _enqueue

if __name__ == "__main__":
    main(["worker"])

"""A real `lepton worker`, with two fault injections for the correctness tests.

HARNESS_SLEEP_PER_BATCH=S  each batch waits S seconds before emitting (keeps
                           batches in flight while a rebalance happens).
HARNESS_CRASH_AT_BATCH=K   the K-th batch emits half of its outputs, then the
                           process dies at once (os._exit): a crash mid-batch.
"""

import asyncio
import os

from streams import pipeline
from streams.cli import main

SLEEP = float(os.environ.get("HARNESS_SLEEP_PER_BATCH", "0"))
CRASH_AT = int(os.environ.get("HARNESS_CRASH_AT_BATCH", "0"))
_original_send = pipeline.BatchAgent._send
_batches = 0


async def _send(self: pipeline.BatchAgent, outputs: list) -> None:
    global _batches
    _batches += 1
    if SLEEP:
        await asyncio.sleep(SLEEP)
    if CRASH_AT and _batches == CRASH_AT and len(outputs) > 1:
        await self.emitter.send(outputs[: len(outputs) // 2])
        os._exit(137)
    await _original_send(self, outputs)


pipeline.BatchAgent._send = _send

if __name__ == "__main__":
    main(["worker"])

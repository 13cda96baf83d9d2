"""The benchmark's input: bulk prefill, and a paced load whose event times are send times.

Both use aiokafka's record-batch API (one batch per partition per tick), so the
load generator itself costs a few µs per event and leaves the CPU to the
variant under test. Events come from the pipeline's synthetic generator (a
pool, cycled) with a fresh ``id`` and ``ts``:

* prefill: ids ``<pipeline>-<seq>``, ``ts`` = when the event was built;
* paced load: ids ``lat-<seq>-<due time in µs>``, ``ts`` = the same due time (when the
  schedule says the event happened; the wait for its tick's send is part of its latency).
  Every output carries its input's id, so latency is computed from the id
  whatever else the output schema holds.

``python -m streams.bench.load --rate R --seconds S`` runs the paced load in
its own process (the harness's: see :func:`streams.bench.run_bench`) and
prints ``{"sent", "started", "seconds"}`` as JSON on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from typing import Any, Iterator

import orjson

POOL = 50_000  # distinct generated events, cycled (fresh ids and times each time)
TICK_S = 0.010  # one record batch per partition every 10 ms: at 2 ms the embedded broker took
# 0.3-0.4 of a core answering produce requests (measured), CPU it took from the variant under test
LAT_PREFIX = "lat-"


def latency_id_time(event_id: str) -> float | None:
    """The send time (seconds) a paced-load id carries; None for other ids.

    >>> latency_id_time("lat-12-1700000000250000")
    1700000000.25
    >>> latency_id_time("probe-1") is None
    True
    """
    if not event_id.startswith(LAT_PREFIX):
        return None
    try:
        return int(event_id.rsplit("-", 1)[1]) / 1e6
    except (ValueError, IndexError):
        return None


def event_pool(pipeline: str, n: int, seed: int = 42) -> list[tuple[bytes, dict[str, Any]]]:
    """``n`` generated events as (key, event without id/ts)."""
    from connectors.generators import make_generator
    from connectors.producer import KEY_FIELDS

    key_field = KEY_FIELDS[pipeline]
    kwargs: dict[str, Any] = {"rate_per_s": 10_000.0} if pipeline == "fraud" else {}
    pool = []
    for event, _ in itertools.islice(iter(make_generator(pipeline, seed=seed, **kwargs)), n):
        body = {k: v for k, v in event.items() if k not in ("id", "ts")}
        pool.append((str(event[key_field]).encode(), body))
    return pool


def encoded_pool(pipeline: str, n: int) -> list[tuple[bytes, bytes]]:
    """:func:`event_pool` with each body JSON-encoded once, minus its opening brace (see :func:`with_id`)."""
    return [(key, orjson.dumps(body)[1:]) for key, body in event_pool(pipeline, n)]


def with_id(event_id: str, ts: float, tail: bytes) -> bytes:
    """The JSON of an event: a fresh ``id`` and ``ts`` spliced before a pre-encoded body.

    A third of the cost of encoding the whole dict each time, which leaves the
    CPU to the variant under test.

    >>> import orjson
    >>> tail = orjson.dumps({"card": "c1", "amount": 2.5})[1:]
    >>> orjson.loads(with_id("lat-0-1", 1.25, tail))
    {'id': 'lat-0-1', 'ts': 1.25, 'card': 'c1', 'amount': 2.5}
    >>> orjson.loads(with_id("x", 0.5, b"}"))
    {'id': 'x', 'ts': 0.5}
    """
    head = b'{"id":%b,"ts":%r' % (orjson.dumps(event_id), ts)
    return head + (b"}" if tail == b"}" else b"," + tail)


class BulkSender:
    """aiokafka producer sending lists of (key, value) as one batch per partition."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._producer: Any = None
        self._partitions: list[int] = []
        self._cache: dict[bytes, int] = {}

    async def __aenter__(self) -> "BulkSender":
        from aiokafka import AIOKafkaProducer

        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks=1, linger_ms=0,
                                          max_batch_size=1 << 20, max_request_size=8 << 20,
                                          client_id="lepton-bench-load")
        await self._producer.start()
        self._partitions = sorted(await self._producer.partitions_for(self.topic))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._producer.stop()

    def _partition(self, key: bytes) -> int:
        p = self._cache.get(key)
        if p is None:
            from kafka.partitioner.default import murmur2

            p = self._cache[key] = self._partitions[(murmur2(key) & 0x7FFFFFFF) % len(self._partitions)]
        return p

    async def send(self, records: list[tuple[bytes, bytes]]) -> list[asyncio.Future]:
        """Enqueue ``records``; returns the delivery futures (await them for the acks)."""
        by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
        for key, value in records:
            by_partition.setdefault(self._partition(key), []).append((key, value))
        futures = []
        for partition, recs in by_partition.items():
            batch = self._producer.create_batch()
            for key, value in recs:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(await self._producer.send_batch(batch, self.topic, partition=partition))
                    batch = self._producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            futures.append(await self._producer.send_batch(batch, self.topic, partition=partition))
        return futures


def _cycle(pool: list[tuple[bytes, dict[str, Any]]]) -> Iterator[tuple[bytes, dict[str, Any]]]:
    return itertools.cycle(pool)


async def _prefill(bootstrap: str, topic: str, pipeline: str, n: int, progress: Any = None) -> int:
    pool = _cycle(encoded_pool(pipeline, min(n, POOL)))
    sent = 0
    async with BulkSender(bootstrap, topic) as sender:
        while sent < n:
            chunk = min(20_000, n - sent)
            now = time.time()
            records = [(key, with_id(f"{pipeline}-{sent + i}", now, tail))
                       for i, (key, tail) in zip(range(chunk), pool)]
            await asyncio.gather(*await sender.send(records))
            sent += chunk
            if progress is not None:
                progress(sent)
    return sent


def prefill(bootstrap: str, topic: str, pipeline: str, n: int, progress: Any = None) -> int:
    """Send ``n`` generated events to ``topic`` as fast as the broker takes them."""
    return asyncio.run(_prefill(bootstrap, topic, pipeline, n, progress))


async def _paced(bootstrap: str, topic: str, pipeline: str, rate: float, seconds: float,
                 tick_s: float = TICK_S) -> dict[str, Any]:
    total = int(rate * seconds)
    pool = _cycle(encoded_pool(pipeline, min(total, POOL)))
    acks: list[asyncio.Future] = []  # awaited at the end: waiting for them on the way would hold up the schedule
    sent = 0
    async with BulkSender(bootstrap, topic) as sender:
        started = time.time()
        t0 = time.monotonic()
        while sent < total:
            due = min(total, int((time.monotonic() - t0) * rate)) - sent
            if due > 0:
                # Each record is stamped with the moment it was due (the schedule), not the
                # moment its tick leaves: the wait for the tick (the producer's batching, as
                # with Kafka's linger.ms) is charged to the latency, never hidden from it.
                records = []
                for key, tail in itertools.islice(pool, due):
                    at = started + sent / rate
                    records.append((key, with_id(f"{LAT_PREFIX}{sent}-{int(at * 1e6)}", at, tail)))
                    sent += 1
                acks.extend(await sender.send(records))
            await asyncio.sleep(tick_s)
        elapsed = time.monotonic() - t0
        await asyncio.gather(*acks)
    return {"sent": sent, "started": started, "seconds": elapsed}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--pipeline", default="fraud")
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--tick-ms", type=float, default=TICK_S * 1000,
                        help="Send what is due every this many ms (one record batch per partition each time).")
    args = parser.parse_args(argv)
    result = asyncio.run(_paced(args.bootstrap, args.topic, args.pipeline, args.rate, args.seconds,
                                args.tick_ms / 1000.0))
    json.dump(result, sys.stdout)
    sys.stdout.flush()


if __name__ == "__main__":
    main()

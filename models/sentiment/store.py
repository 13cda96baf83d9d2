"""The texts kept so that a later correction (``{id, label}``) can be learned from.

A correction carries only the message id; the text and what the champion
said about it were seen earlier, when the message was scored. This store keeps
them, bounded two ways: entries expire ``ttl_s`` after their event time, and
beyond ``max_items`` the oldest go first. Insertion order is (nearly) event
time order, so expiry only ever looks at the front.

Plain Python with ``to_dict``/``from_dict``: a Faust table or a checkpoint can
hold it.

>>> store = TextStore(max_items=2, ttl_s=60.0)
>>> store.put("m1", 100.0, "the app is broken", 0)
>>> store.put("m2", 130.0, "thanks!", 2)
>>> store.put("m3", 150.0, "ok", 1)
>>> len(store), store.get("m1")             # over max_items: m1 is evicted
(2, None)
>>> store.expire(195.0)                     # m2 is older than 60 s
1
>>> store.pop("m3")
Kept(ts=150.0, text='ok', label=1)
>>> TextStore.from_dict(store.to_dict()).max_items
2
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, NamedTuple


class Kept(NamedTuple):
    ts: float
    text: str
    label: int  # the champion's class id when the message was scored


class TextStore:
    """id -> :class:`Kept`, bounded by age (``ttl_s``) and size (``max_items``)."""

    def __init__(self, max_items: int = 200_000, ttl_s: float = 7 * 86_400.0) -> None:
        if max_items < 1 or ttl_s <= 0:
            raise ValueError("max_items must be >= 1 and ttl_s > 0")
        self.max_items = max_items
        self.ttl_s = ttl_s
        self._items: OrderedDict[str, Kept] = OrderedDict()
        self.evicted = 0  # dropped for size before any correction came
        self.expired = 0  # dropped for age

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._items

    def put(self, message_id: str, ts: float, text: str, label: int) -> None:
        items = self._items
        if message_id in items:  # a re-delivered message: keep its place
            items[message_id] = Kept(ts, text, label)
            return
        items[message_id] = Kept(ts, text, label)
        if len(items) > self.max_items:
            items.popitem(last=False)
            self.evicted += 1

    def put_many(self, ids: list[str], ts: list[float], texts: list[str], labels: list[int]) -> None:
        """Add a scored batch (hot path: one call per batch)."""
        items = self._items
        items.update(zip(ids, map(Kept, ts, texts, labels)))
        over = len(items) - self.max_items
        if over > 0:
            for _ in range(over):
                items.popitem(last=False)
            self.evicted += over

    def get(self, message_id: str) -> Kept | None:
        return self._items.get(message_id)

    def pop(self, message_id: str) -> Kept | None:
        """Take a message out (a correction consumes it: each is learned once)."""
        return self._items.pop(message_id, None)

    def expire(self, now: float) -> int:
        """Drop entries older than ``now - ttl_s``; returns how many."""
        items = self._items
        limit = now - self.ttl_s
        n = 0
        while items:
            key, kept = next(iter(items.items()))
            if kept.ts >= limit:
                break
            del items[key]
            n += 1
        self.expired += n
        return n

    def items(self) -> list[tuple[str, Kept]]:
        """A copy of the entries, oldest first (cheap: the entries themselves are immutable)."""
        return list(self._items.items())

    def to_dict(self, items: list[tuple[str, Kept]] | None = None) -> dict[str, Any]:
        """JSON-friendly state; ``items`` (from :meth:`items`) serializes a copy taken earlier."""
        entries = self._items.items() if items is None else items
        return {"max_items": self.max_items, "ttl_s": self.ttl_s, "evicted": self.evicted, "expired": self.expired,
                "items": [[k, v.ts, v.text, v.label] for k, v in entries]}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> "TextStore":
        store = cls(state["max_items"], state["ttl_s"])
        store.evicted, store.expired = state.get("evicted", 0), state.get("expired", 0)
        for key, ts, text, label in state.get("items", []):
            store._items[key] = Kept(float(ts), text, int(label))
        return store

"""Per-channel mood over a sliding window, and when a channel escalates.

A channel *escalates* when its share of negative messages over the last
``window_s`` seconds (event time) rises well above **its own** baseline: an
airline's support channel may run at 60 % negative on a normal day, a
community forum at 15 %; one fixed threshold would either flood the first or
miss the second. So each channel learns a baseline (an exponential average
with a memory of ``baseline_messages`` messages) from the time buckets that
leave its window, and only while it is calm, so that an escalation never
becomes the new normal.

Raise when, over the window: at least ``min_messages`` messages, the baseline
has learned from ``warmup_messages``, the negative share is ``raise_margin``
above the baseline, and that rise is ``raise_z`` binomial standard errors
(a handful of messages cannot raise it by chance). Clear when the share has
fallen back to within ``clear_margin`` of the baseline (or the window is
empty), and not before ``min_hold_s``. Two margins and a hold: hysteresis, so
the alert does not flap around one threshold.

State is plain Python (``to_dict``/``from_dict``) so it can live in a Faust
table or a checkpoint; memory is bounded (``window_s / bucket_s`` counters and
``examples`` quotes per channel, ``max_channels`` channels).

>>> mood = ChannelMood(MoodConfig(window_s=60, bucket_s=10, min_messages=10, warmup_messages=20,
...                               min_hold_s=30))
>>> t = 0.0
>>> for i in range(120):  # two calm minutes: 1 message in 5 negative
...     t += 1.0
...     mood.add("support", t, i % 5 == 0, 0.9 if i % 5 == 0 else 0.1, f"m{i}", "meh")
>>> mood.check(t)
[]
>>> for i in range(40):  # then most messages are negative
...     t += 1.0
...     mood.add("support", t, i % 5 != 0, 0.95, f"n{i}", "this is unacceptable")
>>> [(e.state, e.channel) for e in mood.check(t)]
[('raised', 'support')]
>>> for i in range(90):  # calm again
...     t += 1.0
...     mood.add("support", t, i % 5 == 0, 0.1, f"c{i}", "ok thanks")
>>> [(e.state, e.channel) for e in mood.check(t)]
[('cleared', 'support')]
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class MoodConfig:
    window_s: float = 300.0
    bucket_s: float = 10.0
    min_messages: int = 20
    raise_margin: float = 0.20
    clear_margin: float = 0.08
    raise_z: float = 3.0
    baseline_messages: float = 500.0
    warmup_messages: int = 200
    prior_share: float = 0.3
    min_hold_s: float = 120.0
    examples: int = 3
    max_channels: int = 10_000


@dataclass
class Transition:
    """A channel that escalated (``state="raised"``) or calmed down (``"cleared"``)."""

    channel: str
    state: str
    ts: float
    alert_id: str
    negative_share: float
    baseline: float
    messages: int
    rate_per_s: float
    examples: list[dict[str, Any]] = field(default_factory=list)


class _Channel:
    __slots__ = ("buckets", "baseline", "base_n", "escalated", "raised_at", "alert_id", "last_ts", "worst")

    def __init__(self, prior: float) -> None:
        self.buckets: dict[int, list[int]] = {}  # bucket index -> [messages, negative]
        self.baseline = prior
        self.base_n = 0.0
        self.escalated = False
        self.raised_at = 0.0
        self.alert_id = ""
        self.last_ts = -math.inf
        self.worst: list[list[Any]] = []  # [p_negative, ts, id, text], most negative first


class ChannelMood:
    """Windowed negative share and message rate per channel; escalation raise/clear."""

    def __init__(self, config: MoodConfig | None = None) -> None:
        self.config = config or MoodConfig()
        self.channels: dict[str, _Channel] = {}
        self.now = -math.inf  # newest event time seen
        self._touched: set[str] = set()

    # --- hot path ----------------------------------------------------------------------------

    def add(self, channel: str, ts: float, negative: bool, p_negative: float, message_id: str, text: str) -> None:
        """Count one scored message (cheap: called for every message)."""
        state = self.channels.get(channel)
        if state is None:
            state = self._new(channel)
        bucket = int(ts // self.config.bucket_s)
        counts = state.buckets.get(bucket)
        if counts is None:
            counts = state.buckets[bucket] = [0, 0]
        counts[0] += 1
        if negative:
            counts[1] += 1
            worst = state.worst
            if len(worst) < self.config.examples or p_negative > worst[-1][0]:
                worst.append([p_negative, ts, message_id, text])
                worst.sort(key=lambda w: -w[0])
                del worst[self.config.examples:]
        if ts > state.last_ts:
            state.last_ts = ts
            if ts > self.now:
                self.now = ts
        self._touched.add(channel)

    def add_batch(self, channels: list[str], ts: list[float], negative: list[bool], p_negative: list[float],
                  ids: list[str], texts: list[str]) -> None:
        add = self.add
        for args in zip(channels, ts, negative, p_negative, ids, texts):
            add(*args)

    # --- per batch ---------------------------------------------------------------------------

    def check(self, now: float | None = None, escalated: Any = None) -> list[Transition]:
        """Raise or clear for the channels seen since the last check and the escalated ones.

        ``escalated``: which escalated channels to look at besides those seen
        (a predicate on the name; default all). A worker checks only the
        channels of the partition whose batch it is processing, so that a
        channel's alerts stay in its partition, in order.
        """
        now = self.now if now is None else max(now, self.now)
        names = self._touched | {c for c, s in self.channels.items()
                                 if s.escalated and (escalated is None or escalated(c))}
        self._touched = set()
        out = []
        for name in sorted(names):
            transition = self._check(name, self.channels[name], now)
            if transition is not None:
                out.append(transition)
        return out

    def _window(self, state: _Channel, now: float) -> tuple[int, int]:
        """Fold buckets that left the window into the baseline; return (messages, negative) in it."""
        cfg = self.config
        first = int((now - cfg.window_s) // cfg.bucket_s) + 1
        n = neg = 0
        for b in [b for b in state.buckets if b < first]:
            bn, bneg = state.buckets.pop(b)
            if not state.escalated and bn:
                w = min(1.0, bn / cfg.baseline_messages)
                state.baseline += w * (bneg / bn - state.baseline)
                state.base_n += bn
        for bn, bneg in state.buckets.values():
            n += bn
            neg += bneg
        start = first * cfg.bucket_s
        state.worst = [w for w in state.worst if w[1] >= start]
        return n, neg

    def _check(self, name: str, state: _Channel, now: float) -> Transition | None:
        cfg = self.config
        n, neg = self._window(state, now)
        share = neg / n if n else 0.0
        base = state.baseline
        rate = n / cfg.window_s
        if not state.escalated:
            if n < cfg.min_messages or state.base_n < cfg.warmup_messages:
                return None
            rise = share - base
            z = rise / math.sqrt(max(base * (1.0 - base), 0.01) / n)
            if rise < cfg.raise_margin or z < cfg.raise_z:
                return None
            state.escalated, state.raised_at = True, now
            state.alert_id = f"escalation:{name}:{int(now)}"
            examples = [{"id": i, "text": t[:280], "p_negative": round(p, 4), "ts": ts}
                        for p, ts, i, t in state.worst]
            return Transition(name, "raised", now, state.alert_id, share, base, n, rate, examples)
        if now - state.raised_at < cfg.min_hold_s or (n and share - base > cfg.clear_margin):
            return None
        state.escalated = False
        return Transition(name, "cleared", now, state.alert_id, share, base, n, rate)

    # --- reading and state -------------------------------------------------------------------

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Current mood of every channel (window share and rate, baseline, escalated?)."""
        out = {}
        for name, state in self.channels.items():
            n = sum(b[0] for b in state.buckets.values())
            neg = sum(b[1] for b in state.buckets.values())
            out[name] = {"messages": n, "negative_share": neg / n if n else None,
                         "rate_per_s": n / self.config.window_s, "baseline": state.baseline,
                         "escalated": state.escalated}
        return out

    @property
    def escalated(self) -> list[str]:
        return sorted(c for c, s in self.channels.items() if s.escalated)

    def _new(self, channel: str) -> _Channel:
        if len(self.channels) >= self.config.max_channels:
            calm = [(s.last_ts, c) for c, s in self.channels.items() if not s.escalated]
            if calm:
                del self.channels[min(calm)[1]]
        state = self.channels[channel] = _Channel(self.config.prior_share)
        return state

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "now": self.now if math.isfinite(self.now) else None,
            "channels": {
                name: {"buckets": [[b, n, neg] for b, (n, neg) in s.buckets.items()], "baseline": s.baseline,
                       "base_n": s.base_n, "escalated": s.escalated, "raised_at": s.raised_at,
                       "alert_id": s.alert_id, "last_ts": s.last_ts if math.isfinite(s.last_ts) else None,
                       "worst": [list(w) for w in s.worst]}
                for name, s in self.channels.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], config: MoodConfig | None = None) -> "ChannelMood":
        """Restore; ``config`` (e.g. from current settings) overrides the saved one."""
        mood = cls(config or MoodConfig(**data.get("config", {})))
        mood.now = data["now"] if data.get("now") is not None else -math.inf
        for name, d in data.get("channels", {}).items():
            s = _Channel(mood.config.prior_share)
            s.buckets = {int(b): [int(n), int(neg)] for b, n, neg in d["buckets"]}
            s.baseline, s.base_n = float(d["baseline"]), float(d["base_n"])
            s.escalated, s.raised_at, s.alert_id = bool(d["escalated"]), float(d["raised_at"]), d["alert_id"]
            s.last_ts = d["last_ts"] if d.get("last_ts") is not None else -math.inf
            s.worst = [list(w) for w in d.get("worst", [])]
            mood.channels[name] = s
        return mood

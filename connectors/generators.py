"""Synthetic input streams with ground truth, for demos, training and tests.

Each generator is deterministic for a seed (however it is consumed: iterated
or in batches) and yields ``(event, label)`` pairs; the label never appears in
the event. The worlds behind them are simple but have the structure a model can
learn, and that the pipelines' features look for:

* :class:`TransactionGenerator` follows the simulator of the *Fraud Detection
  Handbook* (Le Borgne et al.): customers with spending profiles buy at
  terminals near them; fraud comes from three scenarios (amount above 220;
  terminals compromised for 28 days; cards compromised for 14 days, a third of
  whose transactions are five times the usual amount, here half of them at a
  far-away terminal). About 0.9 % fraud, as in the handbook's data.
* :class:`ChatGenerator` composes messages from templates and a vocabulary
  (thousands of distinct texts), in channels that now and then turn angry.
* :class:`SensorGenerator` runs pumps with 8 correlated sensors that degrade
  (drift and spikes), fail, and get repaired; frames are anomalous while
  degrading or failed.

Event time: with ``rate_per_s`` the events are spaced evenly (with jitter) at
that rate from ``start_ts``, so a producer sending at the same rate keeps event
time on the wall clock. Without it, transactions keep the handbook's own pace
(about ``events_per_day`` a day, mostly around noon; ``start_ts`` is then the
midnight that starts the first day). Train and stream with the
same setting: the time scale shapes velocity features.

>>> gen = TransactionGenerator(seed=1, start_ts=1_700_000_000.0, rate_per_s=100.0)
>>> event, is_fraud = next(iter(gen))
>>> sorted(event)
['amount', 'card', 'country', 'id', 'merchant', 'ts']
>>> event["id"]
'tx-1-0'
"""

from __future__ import annotations

import itertools
import random
import time
from typing import Any, Iterator

import numpy as np
import pandas as pd

Pair = tuple[dict[str, Any], Any]

_DAY = 86_400.0
_CHUNK = 4096


def _now() -> float:
    return round(time.time(), 3)


# --- transactions ----------------------------------------------------------------------------

_COUNTRIES = ("FR", "DE", "BE", "NL", "ES", "IT", "PT", "AT", "CH")  # a 3x3 map over the 100x100 world


class TransactionGenerator:
    """Card payments with an ``is_fraud`` ground truth (the handbook's simulation, streamed).

    ``batch(n)`` returns the next ``n`` as a DataFrame (event columns + ``label``),
    at well over 100k rows/s; iterating yields ``(event, is_fraud)``. Both draw
    from the same stream.
    """

    terminal_days = 28  # scenario 2: how long a compromised terminal stays compromised
    card_days = 14  # scenario 3: same for a card

    def __init__(
        self,
        seed: int = 0,
        start_ts: float | None = None,
        rate_per_s: float | None = None,
        *,
        n_customers: int = 5000,
        n_terminals: int = 10000,
        radius: float = 5.0,
    ) -> None:
        if rate_per_s is not None and rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.seed = seed
        self.start_ts = float(start_ts) if start_ts is not None else _now()
        self.rate_per_s = rate_per_s
        self._rng = np.random.default_rng(seed)
        rng = self._rng
        # Customer profiles and terminals, as in the handbook.
        cxy = rng.uniform(0, 100, size=(n_customers, 2))
        self._mean = rng.uniform(5, 100, size=n_customers)
        self._std = self._mean / 2
        self._tx_per_day = rng.uniform(0, 4, size=n_customers)
        txy = rng.uniform(0, 100, size=(n_terminals, 2))
        self._offsets, self._counts, self._flat = self._terminals_near(cxy, txy, radius)
        self._tx_per_day[self._counts == 0] = 0.0  # nobody to pay at: no transactions
        self._cards = np.array([f"card-{i:06d}" for i in range(n_customers)], dtype=object)
        self._merchants = np.array([f"term-{i:06d}" for i in range(n_terminals)], dtype=object)
        zone = np.minimum((txy * 3 / 100).astype(int), 2)
        self._countries = np.array(_COUNTRIES, dtype=object)[zone[:, 0] * 3 + zone[:, 1]]
        # Compromised until (inclusive day index); warmed up as if running for weeks already.
        self._terminal_until = np.full(n_terminals, -1, dtype=np.int64)
        self._card_until = np.full(n_customers, -1, dtype=np.int64)
        for day in range(-self.terminal_days, 0):
            self._compromise(day)
        self._day = 0
        self._n = 0  # events emitted so far (ids, rate-mode timestamps)
        self._buf: dict[str, np.ndarray] = {}
        self._pos = 0

    @property
    def events_per_day(self) -> float:
        """Expected transactions per simulated day (about n_customers * 2)."""
        return float(self._tx_per_day.sum())

    @staticmethod
    def _terminals_near(cxy: np.ndarray, txy: np.ndarray, radius: float):
        """CSR lists (offsets, counts, flat) of the terminals within ``radius`` of each customer.

        Terminals are sorted by (x cell, y): each customer searches 3 cells' y ranges only.
        """
        span = 4 * (100 + radius)  # wider than any y range: keeps the cells apart in one key
        keys = np.floor(txy[:, 0] / radius) * span + txy[:, 1]
        order = np.argsort(keys)
        keys = keys[order]
        cust = np.repeat(np.arange(len(cxy)), 3)
        cells = (np.floor(cxy[:, 0] / radius)[:, None] + np.array([-1, 0, 1])).ravel()
        base = cells * span + cxy[cust, 1]
        lo = np.searchsorted(keys, base - radius)
        cnt = np.searchsorted(keys, base + radius) - lo
        cand_c = np.repeat(cust, cnt)
        cand_t = order[np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt) + np.repeat(lo, cnt)]
        near = ((txy[cand_t] - cxy[cand_c]) ** 2).sum(axis=1) < radius * radius
        rows, flat = cand_c[near], cand_t[near].astype(np.int64)  # rows ascend: CSR order
        counts = np.bincount(rows, minlength=len(cxy))
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        return offsets, counts, flat

    def _compromise(self, day: int) -> None:
        rng = self._rng
        k_terms = rng.poisson(2 * len(self._terminal_until) / 10_000)
        k_cards = rng.poisson(3 * len(self._card_until) / 5_000)
        terms = rng.choice(len(self._terminal_until), size=k_terms, replace=False)
        cards = rng.choice(len(self._card_until), size=k_cards, replace=False)
        self._terminal_until[terms] = day + self.terminal_days - 1
        if day >= -self.card_days:
            self._card_until[cards] = day + self.card_days - 1

    def _next_day(self) -> None:
        """Simulate one day: every customer's transactions, then the three fraud scenarios."""
        rng, day = self._rng, self._day
        self._compromise(day)
        n_tx = rng.poisson(self._tx_per_day)
        cust = np.repeat(np.arange(len(n_tx)), n_tx)
        n = len(cust)
        tod = rng.normal(_DAY / 2, 20_000, size=n)
        bad = (tod < 0) | (tod >= _DAY)
        while bad.any():
            tod[bad] = rng.normal(_DAY / 2, 20_000, size=int(bad.sum()))
            bad = (tod < 0) | (tod >= _DAY)
        amount = rng.normal(self._mean[cust], self._std[cust])
        neg = amount < 0
        amount[neg] = rng.uniform(0, 2 * self._mean[cust[neg]])
        term = self._flat[self._offsets[cust] + (rng.random(n) * self._counts[cust]).astype(np.int64)]
        # Scenario 3: a compromised card; a third of its payments inflated x5, half of those far away.
        stolen = (self._card_until[cust] >= day) & (rng.random(n) < 1 / 3)
        amount[stolen] *= 5
        far = stolen & (rng.random(n) < 0.5)
        term[far] = rng.integers(0, len(self._terminal_until), size=int(far.sum()))
        amount = np.round(amount, 2)
        fraud = (amount > 220) | (self._terminal_until[term] >= day) | stolen  # scenarios 1, 2, 3
        order = np.argsort(tod, kind="stable")
        self._buf = {
            "t": day * _DAY + tod[order],
            "u": rng.random(n)[order],  # rate-mode jitter, drawn here so chunking never changes it
            "cust": cust[order],
            "term": term[order],
            "amount": amount[order],
            "fraud": fraud[order],
        }
        self._pos = 0
        self._day += 1

    def _take(self, n: int) -> dict[str, np.ndarray]:
        parts = []
        while n > 0:
            if self._pos >= len(self._buf.get("t", ())):
                self._next_day()
                continue
            stop = min(self._pos + n, len(self._buf["t"]))
            parts.append({k: v[self._pos:stop] for k, v in self._buf.items()})
            n -= stop - self._pos
            self._pos = stop
        cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        first, count = self._n, len(cols["t"])
        self._n += count
        if self.rate_per_s is None:
            ts = self.start_ts + cols["t"]
        else:
            ts = self.start_ts + (np.arange(first, first + count) + cols["u"]) / self.rate_per_s
        return {
            "id": np.array([f"tx-{self.seed}-{i}" for i in range(first, first + count)], dtype=object),
            "ts": np.round(ts, 3),
            "card": self._cards[cols["cust"]],
            "merchant": self._merchants[cols["term"]],
            "amount": cols["amount"],
            "country": self._countries[cols["term"]],
            "label": cols["fraud"],
        }

    def batch(self, n: int) -> pd.DataFrame:
        """The next ``n`` transactions: id, ts, card, merchant, amount, country, label (is_fraud)."""
        return pd.DataFrame(self._take(n))

    def __iter__(self) -> Iterator[Pair]:
        while True:
            cols = self._take(_CHUNK)
            label = cols.pop("label").tolist()
            keys = list(cols)
            for values, y in zip(zip(*(cols[k].tolist() for k in keys)), label):
                yield dict(zip(keys, values)), y


# --- chat messages ---------------------------------------------------------------------------

_CHANNELS = ("support", "billing", "delivery", "returns", "mobile-app", "sales", "community", "vip")
_NAMES = ("alex", "sam", "jo", "maria", "li", "omar", "nina", "tom", "aisha", "ravi", "emma", "lucas",
          "yuki", "noah", "zoe", "ivan", "fatima", "leo", "mia", "kofi", "sara", "diego", "hana", "ben")
_V: dict[str, tuple[str, ...]] = {
    "greet": ("", "", "", "hi, ", "hello, ", "hey ", "good morning, ", "hi team, ", "ok so ", "um, "),
    "thing": ("my order", "the delivery", "the app", "my refund", "the invoice", "my account", "the package",
              "the checkout", "the update", "my subscription", "the replacement", "customer service",
              "the tracking page", "my payment", "the new version", "the courier", "the chat bot",
              "the return label", "my card", "the login"),
    "neg_pred": ("still hasn't arrived", "is completely broken", "keeps crashing", "was charged twice",
                 "is a total joke", "never works", "is useless", "got lost again", "is a nightmare",
                 "is late for the third time", "was cancelled without any notice", "is a scam",
                 "won't load", "has been stuck for days", "arrived damaged", "is so slow"),
    "pos_pred": ("arrived early", "works perfectly", "is brilliant", "was sorted out in minutes",
                 "is so much better now", "came right on time", "is great", "exceeded my expectations",
                 "was super easy", "is exactly what i needed", "got fixed fast", "is fantastic"),
    "pos_adj": ("good", "great", "helpful", "fast", "reliable", "acceptable", "clear", "easy"),
    "neg_adj": ("bad", "slow", "broken", "rude", "confusing", "late", "wrong", "awful"),
    "neg_feel": ("i'm furious", "so disappointed", "really annoyed", "absolutely fed up", "this is unacceptable",
                 "i'm done with you", "worst experience ever", "beyond frustrated", "i want my money back",
                 "zero stars"),
    "pos_feel": ("thank you so much", "love it", "really happy", "you guys rock", "amazing service",
                 "so pleased", "big thanks", "great job", "much appreciated", "well done"),
    "neg_more": ("nobody answers", "i've called five times", "no one cares", "been waiting 2 weeks",
                 "this is the last time", "fix it now", "i'm cancelling", "what a waste of time",
                 "i'll tell everyone", "how hard can it be"),
    "pos_more": ("will order again", "keep it up", "you made my day", "10/10", "highly recommend",
                 "the agent was lovely", "no complaints at all", "couldn't be happier", "see you next time"),
    "agent": ("anna", "the agent", "support", "the team", "your colleague", "mark", "the driver", "priya"),
    "action": ("change my delivery address", "update my card", "download the invoice", "cancel the order",
               "reset my password", "track the parcel", "switch to the yearly plan", "add a second user",
               "get a copy of my receipt", "change the email on my account", "return one item"),
    "info": ("when the sale ends", "what the opening hours are", "if you ship to canada",
             "which plan includes support", "where my nearest pickup point is", "how long a refund takes",
             "what the warranty covers", "if the app works offline"),
    "when": ("yesterday", "last week", "this morning", "on monday", "an hour ago", "today", "in march"),
    "neutral_stmt": ("i placed an order", "i sent an email", "i updated the app", "i moved house",
                     "i called the hotline", "i changed my plan", "i returned the parcel"),
    "neg_emoji": ("", "", "", " 😡", " 😤", " 👎", " 🙄", " 😠😠"),
    "pos_emoji": ("", "", "", " 😊", " 👍", " 🙏", " ❤️", " 🎉"),
    "tag": ("", "", "", "", " #fail", " #help", " #customerservice", " #thanks", " #update"),
}
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "negative": (
        "{greet}{thing} {neg_pred}{bang}{neg_emoji}",
        "{neg_feel}{bang} {thing} {neg_pred}{neg_emoji}",
        "{thing} {neg_pred} and {neg_more}{bang}",
        "{greet}{thing} is not {pos_adj} at all. {neg_more}{tag}",
        "{neg_feel}. {thing} {neg_pred} {when}{neg_emoji}",
        "why is {thing} always so {neg_adj}?{bang}{neg_emoji}",
        "{greet}{neutral_stmt} {when} and {thing} {neg_pred}. {neg_feel}{tag}",
        "seriously?? {thing} {neg_pred}. {neg_more}",
        "{agent} was {neg_adj} and {thing} {neg_pred}{neg_emoji}",
    ),
    "positive": (
        "{greet}{thing} {pos_pred}{bang}{pos_emoji}",
        "{pos_feel}! {agent} was {pos_adj} and {thing} {pos_pred}{pos_emoji}",
        "{thing} {pos_pred}, {pos_more}{pos_emoji}",
        "no problems with {thing}, {pos_more}{tag}",
        "{pos_feel}{bang} {agent} was so {pos_adj}{pos_emoji}",
        "{greet}{neutral_stmt} {when} and {thing} {pos_pred}. {pos_feel}",
        "just wanted to say {thing} {pos_pred}{bang} {pos_more}",
        "honestly {thing} is not {neg_adj} anymore, {pos_feel}{pos_emoji}",
    ),
    "neutral": (
        "{greet}how do i {action}?",
        "{greet}can someone tell me {info}?",
        "is there a way to {action}{q}",
        "{greet}{neutral_stmt} {when}, how do i {action}?",
        "quick question: {info}{q}",
        "order #{num}: i'd like to {action}",
        "{greet}{neutral_stmt} {when}. what happens with {thing} now?",
        "does anyone know {info}?{tag}",
        "{greet}i need to {action}, is that possible{q}",
        "ref {num} - {thing} {when}, please confirm",
    ),
}
_MOOD = {  # label probabilities (negative, neutral, positive)
    "calm": (0.25, 0.45, 0.30),
    "angry": (0.80, 0.15, 0.05),
}
LABELS = ("negative", "neutral", "positive")


class ChatGenerator:
    """Customer chat with a negative/neutral/positive label per message.

    Each channel turns angry now and then (about once per 1,500 of its messages,
    for 80-300 messages): that is what escalation alerts should catch.
    """

    def __init__(
        self,
        seed: int = 0,
        start_ts: float | None = None,
        rate_per_s: float = 10.0,
        *,
        channels: tuple[str, ...] = _CHANNELS,
        n_users: int = 2000,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.seed = seed
        self.start_ts = float(start_ts) if start_ts is not None else _now()
        self.rate_per_s = rate_per_s
        self.channels = channels
        self._rng = random.Random(seed)
        rng = self._rng
        self._users = [f"{rng.choice(_NAMES)}{rng.choice(('', '_', '.'))}{rng.randrange(1, 999)}"
                       for _ in range(n_users)]
        self._weights = list(itertools.accumulate(1 / (i + 1) ** 0.7 for i in range(len(channels))))
        self._angry_left = {c: 0 for c in channels}
        self._n = 0

    def angry(self, channel: str) -> bool:
        """Whether ``channel`` is in an angry spell now (ground truth for escalation)."""
        return self._angry_left[channel] > 0

    def _text(self, label: str) -> str:
        rng = self._rng
        template = rng.choice(_TEMPLATES[label])
        slots = {k: rng.choice(v) for k, v in _V.items()}
        slots["bang"] = rng.choice(("", "", ".", "!", "!!", "!!!")) if label != "neutral" else ""
        slots["q"] = rng.choice(("?", "?", "??", " ?"))
        slots["num"] = str(rng.randrange(10_000, 99_999))
        text = template.format(**slots).strip()
        style = rng.random()
        if style < 0.15:
            text = text.capitalize()
        elif style < 0.20 and label == "negative":
            text = text.upper()
        if rng.random() < 0.05 and len(text) > 8:  # a typo: two neighbouring letters swapped
            i = rng.randrange(1, len(text) - 2)
            text = text[:i] + text[i + 1] + text[i] + text[i + 2:]
        return text

    def __iter__(self) -> Iterator[Pair]:
        rng = self._rng
        while True:
            channel = rng.choices(self.channels, cum_weights=self._weights)[0]
            left = self._angry_left[channel]
            if left > 0:
                self._angry_left[channel] = left - 1
            elif rng.random() < 1 / 1500:
                self._angry_left[channel] = rng.randrange(80, 300)
            label = rng.choices(LABELS, weights=_MOOD["angry" if self.angry(channel) else "calm"])[0]
            n = self._n
            self._n += 1
            event = {
                "id": f"chat-{self.seed}-{n}",
                "ts": round(self.start_ts + (n + rng.random()) / self.rate_per_s, 3),
                "channel": channel,
                "user": rng.choice(self._users),
                "text": self._text(label),
            }
            yield event, label

    def batch(self, n: int) -> pd.DataFrame:
        """The next ``n`` messages: id, ts, channel, user, text, label."""
        return _frame(itertools.islice(self, n))


# --- sensor frames ---------------------------------------------------------------------------

# name: (baseline, noise sd, load coupling); values in the ranges of the SKAB pump test bed
_SENSORS: dict[str, tuple[float, float, float]] = {
    "accel1_rms": (0.026, 0.0015, 0.0010),
    "accel2_rms": (0.040, 0.0020, 0.0015),
    "current": (1.33, 0.04, 0.08),
    "pressure": (0.25, 0.03, 0.04),
    "temperature": (79.5, 0.25, 0.0),
    "thermocouple": (26.0, 0.15, 0.0),
    "voltage": (233.0, 1.5, -0.8),
    "flow_rate": (32.0, 0.4, 0.9),
}
# what full degradation (severity 1) adds, in units of the sensor's noise sd
_WEAR = {"accel1_rms": 8.0, "accel2_rms": 7.0, "current": 5.0, "pressure": -3.0,
         "temperature": 20.0, "thermocouple": 10.0, "voltage": 0.0, "flow_rate": -8.0}


class _Pump:
    """One piece of equipment: healthy → degrading → failed → repaired (healthy)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.load = 0.0
        self.heat = 0.0
        self._repair()

    def _repair(self) -> None:
        rng = self.rng
        self.base = {k: b * rng.uniform(0.95, 1.05) for k, (b, _, _) in _SENSORS.items()}
        self.state, self.left = "healthy", int(rng.expovariate(1 / 5000)) + 300
        self.total = self.left

    def _advance(self) -> None:
        self.left -= 1
        if self.left <= 0:
            if self.state == "healthy":
                self.state, self.left = "degrading", self.rng.randrange(200, 700)
            elif self.state == "degrading":
                self.state, self.left = "failed", self.rng.randrange(30, 120)
            else:
                self._repair()
            self.total = self.left

    def skip(self, frames: int) -> None:
        """Move along the life cycle without producing readings."""
        for _ in range(frames):
            self._advance()

    def step(self) -> tuple[dict[str, float], bool]:
        rng = self.rng
        self._advance()
        if self.state == "healthy":
            severity, p_spike = 0.0, 0.0
        elif self.state == "degrading":
            severity = 1.0 - self.left / self.total
            p_spike = 0.01 + 0.15 * severity
        else:
            severity, p_spike = 2.0, 0.3
        self.load = 0.98 * self.load + rng.gauss(0, 0.2)  # slowly varying operating point
        self.heat = 0.99 * self.heat + 0.01 * self.load
        readings = {}
        for name, (_, sd, coupling) in _SENSORS.items():
            value = self.base[name] + coupling * self.load + rng.gauss(0, sd)
            value += _WEAR[name] * sd * severity
            if name in ("temperature", "thermocouple"):
                value += 2.0 * sd * self.heat
            readings[name] = value
        if p_spike and rng.random() < p_spike:
            name = rng.choice(list(_SENSORS))
            readings[name] += rng.choice((-1, 1)) * rng.uniform(5, 10) * _SENSORS[name][1]
        return {k: round(v, 5) for k, v in readings.items()}, self.state != "healthy"


class SensorGenerator:
    """Frames of 8 sensors from ``n_equipment`` pumps, one per pump every ``period_s``.

    The label is True while a pump is degrading or failed (about 8 % of frames).
    """

    def __init__(
        self, seed: int = 0, start_ts: float | None = None, *, n_equipment: int = 20, period_s: float = 1.0
    ) -> None:
        if period_s <= 0 or n_equipment < 1:
            raise ValueError("period_s must be positive and n_equipment at least 1")
        self.seed = seed
        self.start_ts = float(start_ts) if start_ts is not None else _now()
        self.period_s = period_s
        self._rng = random.Random(seed)
        self.equipment = [f"pump-{i:03d}" for i in range(n_equipment)]
        self._pumps = [_Pump(self._rng) for _ in range(n_equipment)]
        for pump in self._pumps:  # start somewhere in the life cycle, not all fresh
            pump.skip(self._rng.randrange(0, 6000))
        self._n = 0

    @property
    def rate_per_s(self) -> float:
        return len(self._pumps) / self.period_s

    def __iter__(self) -> Iterator[Pair]:
        rng, slot = self._rng, self.period_s / len(self._pumps)
        for tick in itertools.count():
            for i, (name, pump) in enumerate(zip(self.equipment, self._pumps)):
                readings, anomalous = pump.step()
                n = self._n
                self._n += 1
                ts = self.start_ts + tick * self.period_s + (i + 0.9 * rng.random()) * slot
                yield {"id": f"sf-{self.seed}-{n}", "ts": round(ts, 3), "equipment_id": name,
                       "readings": readings}, anomalous

    def batch(self, n: int) -> pd.DataFrame:
        """The next ``n`` frames: id, ts, equipment_id, one column per sensor, label."""
        rows = []
        for event, label in itertools.islice(self, n):
            row = {k: v for k, v in event.items() if k != "readings"}
            row.update(event["readings"])
            row["label"] = label
            rows.append(row)
        return pd.DataFrame(rows)


def _frame(pairs: Iterator[Pair]) -> pd.DataFrame:
    rows = [{**event, "label": label} for event, label in pairs]
    return pd.DataFrame(rows)


# --- one entry point per pipeline ------------------------------------------------------------

GENERATORS: dict[str, type] = {
    "fraud": TransactionGenerator,
    "sentiment": ChatGenerator,
    "anomaly": SensorGenerator,
}


def make_generator(pipeline: str, seed: int = 0, start_ts: float | None = None, **kwargs: Any):
    """The generator of ``pipeline``'s input stream."""
    try:
        cls = GENERATORS[pipeline]
    except KeyError:
        raise ValueError(f"unknown pipeline {pipeline!r}; available: {sorted(GENERATORS)}") from None
    return cls(seed, start_ts, **kwargs)


def transactions(seed: int = 0, start_ts: float | None = None, rate_per_s: float | None = None) -> Iterator[dict]:
    """Card payments ``{id, ts, card, merchant, amount, country}`` (labels: TransactionGenerator)."""
    return (event for event, _ in TransactionGenerator(seed, start_ts, rate_per_s))


def chat_messages(seed: int = 0, start_ts: float | None = None, rate_per_s: float = 10.0) -> Iterator[dict]:
    """Chat messages ``{id, ts, channel, user, text}`` (labels: ChatGenerator)."""
    return (event for event, _ in ChatGenerator(seed, start_ts, rate_per_s))


def sensor_frames(seed: int = 0, start_ts: float | None = None, *, n_equipment: int = 20,
                  period_s: float = 1.0) -> Iterator[dict]:
    """Sensor frames ``{id, ts, equipment_id, readings}`` (labels: SensorGenerator)."""
    return (event for event, _ in SensorGenerator(seed, start_ts, n_equipment=n_equipment, period_s=period_s))

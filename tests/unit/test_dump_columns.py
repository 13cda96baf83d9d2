"""dump_columns writes each row exactly as ``dumps`` writes the row's dict."""

from __future__ import annotations

import math
import random

import pytest

from streams.records import dump_columns, dumps

TRICKY = ['","', '"', "\\", '\\"', "\\\\", ",", "}", '{"id":', "é", "😀", "\n", "\x00", "\x1f", "", " ", "null"]


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(TRICKY + ["a", "b", "7"]) for _ in range(rng.randrange(0, 6)))


def _number(rng: random.Random) -> object:
    return rng.choice([rng.random(), -0.0, 1e16, 1e-300, math.nan, rng.randrange(-10**12, 10**12), True, None,
                       round(rng.random(), 6)])


@pytest.mark.parametrize("seed", range(20))
def test_rows_equal_their_dicts_dumped(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randrange(1, 40)
    columns = {
        "id": [_text(rng) for _ in range(n)],
        "probability": [_number(rng) for _ in range(n)],
        "model_version": rng.randrange(100),  # one value for every row
        "decision": [rng.choice(["review", "approve"]) for _ in range(n)],
        "tag": rng.choice(["x", '"', None]),
        _text(rng) or "name": [rng.choice([1, "mixed", [1, 2], {"a": '"'}]) for _ in range(n)],  # mixed kinds
        "latency_ms": [_number(rng) for _ in range(n)],
    }
    rows = [{k: (v[i] if isinstance(v, list) else v) for k, v in columns.items()} for i in range(n)]
    assert dump_columns(columns) == [dumps(row) for row in rows]


def test_columns_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="different lengths"):
        dump_columns({"a": [1, 2], "b": [1]})


def test_no_rows() -> None:
    assert dump_columns({"id": [], "v": 3}) == []

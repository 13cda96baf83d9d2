"""Validation of the three input schemas: every bad input gets a reason, never an exception."""

from __future__ import annotations

import json
import math
import time

import pytest

from streams.records import LIMITS, InvalidRecord, Limits, parse_chat_message, parse_sensor_frame, parse_transaction

NOW = time.time()


def tx(**fields) -> bytes:
    base = {"id": "t1", "ts": NOW, "card": "c1", "merchant": "m1", "amount": 10.0}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def reason(parse, raw, limits=LIMITS) -> str:
    with pytest.raises(InvalidRecord) as info:
        parse(raw, limits)
    assert str(info.value), "every dead letter needs a readable message"
    return info.value.reason


def test_valid_transaction_parses_with_defaults() -> None:
    t = parse_transaction(tx(), LIMITS)
    assert (t.id, t.card, t.merchant, t.amount, t.country) == ("t1", "c1", "m1", 10.0, "")


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b"{oops", "malformed_json"),
        (b'"a string"', "not_an_object"),
        (None, "empty"),
        (tx(card=...), "missing_field"),
        (tx(amount="10"), "wrong_type"),
        (tx(amount=True), "wrong_type"),
        (tx(card={"a": 1}), "wrong_type"),
        (tx(amount=-1.0), "out_of_range"),
        (tx(amount=1e9), "out_of_range"),
        (tx(ts=NOW + 30 * 86400), "out_of_range"),
        (tx(ts=12.0), "out_of_range"),
        (tx(ts="yesterday"), "wrong_type"),
        (tx(card=""), "out_of_range"),
        (b'{"id": "t", "ts": 1, "card": "c", "merchant": "m", "amount": Infinity}', "malformed_json"),
        (tx(card="x" * 257), "out_of_range"),
        (tx(country="FRANCE123"), "wrong_type"),
        (tx(country=7), "wrong_type"),
        (tx(amount=1e308), "out_of_range"),
    ],
)
def test_bad_transactions_have_a_reason(raw, expected) -> None:
    assert reason(parse_transaction, raw) == expected


def test_the_common_case_shortcut_gives_what_the_full_checks_give() -> None:
    """Strings and floats take a shortcut; integers, a null country, numbers as ids take the full checks."""
    assert parse_transaction(tx(country="FR"), LIMITS) == parse_transaction(tx(country="FR", amount=10), LIMITS)
    assert parse_transaction(tx(id=5, country=None), LIMITS).id == "5"
    assert parse_transaction(tx(card="x" * 256, country=""), LIMITS).card == "x" * 256
    assert parse_transaction(tx(ts=int(NOW)), LIMITS).ts == float(int(NOW))


def test_oversized_payload_is_refused_before_parsing() -> None:
    small = Limits(max_payload_bytes=100)
    assert reason(parse_transaction, tx(note="x" * 200), small) == "oversized"


def test_event_time_accepts_iso_and_milliseconds() -> None:
    assert parse_transaction(tx(ts="2024-05-01T12:00:00Z"), LIMITS).ts == 1714564800.0
    assert parse_transaction(tx(ts=int(NOW * 1000)), LIMITS).ts == pytest.approx(NOW, abs=0.01)


def test_chat_message_text_rules() -> None:
    ok = {"id": "m1", "ts": NOW, "channel": "c", "user": "u", "text": "hello"}
    assert parse_chat_message(json.dumps(ok).encode(), LIMITS).text == "hello"
    assert reason(parse_chat_message, json.dumps({**ok, "text": "   "}).encode()) == "empty_text"
    assert reason(parse_chat_message, json.dumps({**ok, "text": 5}).encode()) == "wrong_type"
    long = json.dumps({**ok, "text": "x" * 50}).encode()
    assert reason(parse_chat_message, long, Limits(max_text_chars=10)) == "oversized"


def test_sensor_frame_missing_readings_become_nan_and_inf_is_refused() -> None:
    frame = {"id": "f1", "ts": NOW, "equipment_id": "pump-1", "readings": {"a": 1.0, "b": None}}
    parsed = parse_sensor_frame(json.dumps(frame).encode(), LIMITS)
    assert parsed.readings["a"] == 1.0 and math.isnan(parsed.readings["b"])
    assert reason(parse_sensor_frame, json.dumps({**frame, "readings": {}}).encode()) == "wrong_type"
    assert reason(parse_sensor_frame, json.dumps({**frame, "readings": {"a": "x"}}).encode()) == "wrong_type"
    assert reason(parse_sensor_frame, b'{"id":"f","ts":1.7e9,"equipment_id":"p","readings":{"a":1e999}}') in {
        "not_finite", "malformed_json"}

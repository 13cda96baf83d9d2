"""Dead letters keep what is needed to understand and replay the input."""

from __future__ import annotations

from types import SimpleNamespace

from streams import dead_letters


def test_round_trip_of_binary_and_text_payloads() -> None:
    for key, value in [(b"card-1", b'{"bad json'), (None, b"\xff\x00\xfe"), (b"\x80", None)]:
        record = SimpleNamespace(offset=42, key=key, value=value)
        letter = dead_letters.build("transactions", 3, record, "fraud", "malformed_json", "InvalidRecord", "why")
        assert letter["source_topic"] == "transactions" and letter["partition"] == 3 and letter["offset"] == 42
        assert dead_letters.original_payload(letter) == (key, value)
        assert dead_letters.key_of(letter) == b"transactions:3:42"


def test_non_utf8_payload_is_base64() -> None:
    letter = dead_letters.build("t", 0, SimpleNamespace(offset=1, key=None, value=b"\xff"), "fraud", "r", "E", "m")
    assert letter["payload_encoding"] == "base64" and letter["payload"] == "/w=="

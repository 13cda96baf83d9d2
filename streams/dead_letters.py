"""Dead letters: bad input, kept with everything needed to fix and replay it.

A dead letter is keyed by ``topic:partition:offset``, so a re-delivered input
produces the same key and downstream can deduplicate.

>>> rec = type("R", (), {"offset": 7, "key": b"c1", "value": b"\\xff{"})()
>>> letter = build("transactions", 0, rec, "fraud", "malformed_json", "InvalidRecord", "not JSON")
>>> letter["payload_encoding"], letter["offset"]
('base64', 7)
"""

from __future__ import annotations

import base64
import time
from typing import Any


def _text_or_base64(data: bytes | None) -> tuple[str | None, str]:
    if data is None:
        return None, "none"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


def build(
    topic: str, partition: int, record: Any, pipeline: str, reason: str, error_class: str, message: str
) -> dict[str, Any]:
    """The dead-letter document for one input record."""
    payload, encoding = _text_or_base64(record.value)
    key, key_encoding = _text_or_base64(record.key)
    return {
        "source_topic": topic,
        "partition": partition,
        "offset": record.offset,
        "pipeline": pipeline,
        "reason": reason,
        "error_class": error_class,
        "message": message,
        "payload": payload,
        "payload_encoding": encoding,
        "key": key,
        "key_encoding": key_encoding,
        "failed_at": time.time(),
    }


def key_of(letter: dict[str, Any]) -> bytes:
    return f"{letter['source_topic']}:{letter['partition']}:{letter['offset']}".encode()


def original_payload(letter: dict[str, Any]) -> tuple[bytes | None, bytes | None]:
    """(key, value) bytes of the input a dead letter was made from."""

    def decode(data: str | None, encoding: str) -> bytes | None:
        if data is None:
            return None
        return base64.b64decode(data) if encoding == "base64" else data.encode("utf-8")

    return decode(letter.get("key"), letter.get("key_encoding", "utf-8")), decode(
        letter.get("payload"), letter.get("payload_encoding", "utf-8")
    )


__all__ = ["build", "key_of", "original_payload"]

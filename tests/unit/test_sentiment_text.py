"""Text normalization and token ids: one code path for training and serving."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from models.sentiment.encoder import WordEncoder
from models.sentiment.text import normalize, normalize_batch, token_lists, tokens


def test_normalization_rules() -> None:
    assert normalize("@United   thanks!!!!") == "@user thanks!!"
    assert normalize("see https://t.co/AbC and www.example.com/x") == "see url and url"
    assert normalize("SOOOO goooood") == "soo good"
    assert normalize("ｆｕｌｌ width “quotes” don’t") == "full width \"quotes\" don't"
    assert normalize("#NotHappy flight 1234 at 12:30") == "nothappy flight 0 at 0"
    assert normalize("love it 👍🏽 ❤️") == "love it 👍 ❤"
    assert normalize("a &amp; b &lt;3") == "a & b ♥"
    assert tokens("Great :D <3 😡😡") == ["great", ":d", "♥", "😡", "😡"]


def test_batch_equals_one_by_one_and_messages_never_merge() -> None:
    texts = ["line one\nline two", "@a\r\nthanks", "x" * 5, "  spaced\t out  ", "ok"]
    batch = normalize_batch(texts)
    assert len(batch) == len(texts)
    assert batch == [normalize(t) for t in texts]
    assert token_lists(texts)[0] == ["line", "one", "line", "two"]


def test_encoder_pads_truncates_and_hashes_unknown_words_stably() -> None:
    enc = WordEncoder.build([["good", "flight"], ["good"]], min_count=1, n_oov=16, max_tokens=4)
    ids = enc.encode(["good flight", "", "one two three four five six", "good"])
    assert ids.shape == (4, 4) and ids.dtype == np.int64
    assert ids[0].tolist() == [1, 2, 0, 0]
    assert ids[1].tolist() == [0, 0, 0, 0]
    assert all(v >= enc.oov_base for v in ids[2])  # all unknown, truncated to 4
    # CRC-32, not Python's salted hash: another process gives the same ids
    code = ("from models.sentiment.encoder import WordEncoder; "
            "e = WordEncoder.build([['good', 'flight'], ['good']], min_count=1, n_oov=16, max_tokens=4); "
            "print(e.encode(['one two three four']).tolist())")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123"}, cwd=Path(__file__).parents[2])
    assert other.stdout.strip() == str([ids[2].tolist()])
    assert WordEncoder.from_json(enc.to_json()).encode(["good flight"]).tolist() == [[1, 2]]

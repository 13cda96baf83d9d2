"""Text normalization and word tokens: the one code path both training and serving call.

Chat is noisy in ways that carry no sentiment (who is addressed, which link,
how many letters were repeated, which unicode form an apostrophe took) and in
ways that do (emoji, emoticons, "!!", negations). :func:`normalize_batch`
removes the first kind and keeps the second, so that a model learns sentiment
rather than airline handles or URL shorteners:

* unicode NFKC (full-width letters, ligatures), curly quotes to ``'``,
  emoji skin tones and variation selectors dropped, common HTML entities decoded;
* lower case;
* ``@someone`` becomes ``@user``, links become ``url``, ``#tag`` becomes ``tag``;
* runs of 3+ identical characters shrink to 2 (``soooo`` -> ``soo``, ``!!!!`` -> ``!!``);
* digit runs become ``0`` (order numbers and times say nothing about mood).

:func:`tokens` then splits into words, emoticons, ``!``/``?`` runs and single
symbols (emoji). Plain punctuation is dropped.

Why batches: a micro-batch is joined into one string and each rule runs once
over it, which costs a few microseconds per message instead of tens (the
per-call overhead of Python's ``re`` dominates on short texts). A message is
never split or merged: line breaks inside a text become spaces first, and no
rule matches across the ``\\n`` that separates messages.

>>> normalize("@united I'm SOOOO angry!!!! http://t.co/x #NotHappy 😡🏻 &amp; <3")
"@user i'm soo angry!! url nothappy 😡 & ♥"
>>> tokens("@united I'm SOOOO angry!!!! :( order #12345 😡")
['@user', "i'm", 'soo', 'angry', '!!', ':(', 'order', '0', '😡']
>>> token_lists(["Great job :D", "meh..."])
[['great', 'job', ':d'], ['meh']]
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

VERSION = 1  # bump when the output of normalize/tokens changes: models record it
SEPARATOR = "\n"  # between messages of a batch; never inside a normalized message

_URL = re.compile(r"https?://\S+|www\.\S+")
_MENTION = re.compile(r"@\w+")
_REPEAT = re.compile(r"(.)\1\1+")
_DIGITS = re.compile(r"\d+(?:[.,:]\d+)*")
_DROP = re.compile("[\ufe0f\ufe0e\u200d\U0001f3fb-\U0001f3ff]")  # variation selectors, ZWJ, skin tones
_ODD_SPACE = re.compile(r"[^\S\n ]")  # tabs, returns, unicode spaces: rare, so this is cheap
_CHARS = (("\u2019", "'"), ("\u2018", "'"), ("\u02bc", "'"), ("\u201c", '"'), ("\u201d", '"'), ("#", " "))
_ENTITIES = (("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#39;", "'"))
TOKEN = re.compile(
    r"""\n                                     # the message separator (a batch only)
      |@user
      |[:;=8][\-o^']?[)(\]\[dpo/\\|*]+(?![a-z])   # emoticons (already lower case: :d, :p)
      |\w+(?:'\w+)*                            # words, with their apostrophes
      |[!?]+
      |[^\s\w.,;:"'()\[\]{}\-_/\\*&%$^`~|<>=+@]  # any other single symbol: emoji, hearts, stars
    """,
    re.VERBOSE,
)


def _normalize(big: str) -> str:
    """Every rule over one string of messages joined by :data:`SEPARATOR`."""
    if not big.isascii():
        if not unicodedata.is_normalized("NFKC", big):
            big = unicodedata.normalize("NFKC", big)
        big = _DROP.sub("", big)
    for char, repl in _CHARS:  # after NFKC: it can produce '#'; str.replace beats str.translate here
        if char in big:
            big = big.replace(char, repl)
    big = _ODD_SPACE.sub(" ", big)
    if "&" in big:
        for entity, char in _ENTITIES:
            big = big.replace(entity, char)
    big = big.lower().replace("<3", " ♥ ")
    if "http" in big or "www." in big:
        big = _URL.sub(" url ", big)
    if "@" in big:
        big = _MENTION.sub("@user", big)
    big = _REPEAT.sub(r"\1\1", big)
    big = _DIGITS.sub("0", big)
    while "  " in big:
        big = big.replace("  ", " ")
    return big


def normalize_joined(texts: Sequence[str]) -> str:
    """The normalized ``texts`` joined by :data:`SEPARATOR` (the hot-path form).

    ASCII messages and the others are normalized in two passes: one emoji makes
    Python store the whole joined string at 4 bytes a character, which slows
    every rule over every message of the batch.
    """
    texts = [t.replace("\n", " ") for t in texts]
    plain = [t.isascii() for t in texts]
    if all(plain) or not any(plain):
        return _normalize(SEPARATOR.join(texts))
    ascii_part = iter(_normalize(SEPARATOR.join(t for t, p in zip(texts, plain) if p)).split(SEPARATOR))
    other_part = iter(_normalize(SEPARATOR.join(t for t, p in zip(texts, plain) if not p)).split(SEPARATOR))
    return SEPARATOR.join([next(ascii_part) if p else next(other_part) for p in plain])


def normalize_batch(texts: Sequence[str]) -> list[str]:
    """The canonical form of each message (see the module doc)."""
    return [t.strip() for t in normalize_joined(texts).split(SEPARATOR)] if texts else []


def normalize(text: str) -> str:
    """The canonical form of one message: exactly what a batch would give it."""
    return normalize_batch([text])[0]


def token_lists(texts: Sequence[str]) -> list[list[str]]:
    """The tokens of each message (training, the online learner, tests)."""
    return [TOKEN.findall(t) for t in normalize_batch(texts)]


def tokens(text: str) -> list[str]:
    """Words, emoticons, ``!?`` runs and emoji of the normalized ``text``."""
    return TOKEN.findall(normalize(text))

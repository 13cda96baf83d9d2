"""Labelled text files and their agreed train/test splits.

Any CSV (or CSV.gz, Parquet) with ``text`` and ``label`` columns will do;
``ts`` (Unix seconds, milliseconds or ISO 8601), ``channel`` and ``id`` are
optional, other columns are kept so that a split can select on them
(``source=twitter-2016test``). Rows come out in time order when ``ts`` is
there, in file order otherwise.

Splits (the data sets' agreed protocol):

* ``test_where="COLUMN=VALUE"``: those rows are the test part, the rest is training;
* otherwise the first 80 % (in time) is training and the last 20 % is test.

>>> import pandas as pd
>>> frame = pd.DataFrame({"text": list("abcdefghij"), "label": ["pos", "negative", "Neutral", 1, -1] * 2})
>>> labels_to_ids(frame["label"]).tolist()
[2, 0, 1, 2, 0, 2, 0, 1, 2, 0]
>>> train, test = split(frame)
>>> int(train.sum()), int(test.sum())
(8, 2)
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from . import LABELS

TRAIN_FRACTION = 0.8
_ALIASES = {"negative": 0, "neg": 0, "-1": 0, "neutral": 1, "neu": 1, "0": 1, "positive": 2, "pos": 2, "1": 2}


class DataError(ValueError):
    """A file that cannot be used as labelled sentiment data; the message says why."""


def labels_to_ids(labels: Iterable) -> np.ndarray:
    """Class ids (0 negative, 1 neutral, 2 positive); -1 for a missing label.

    Accepts the class names, ``neg/neu/pos`` and ``-1/0/1``; raises on anything else.
    """
    out = []
    for value in labels:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            out.append(-1)
            continue
        key = str(value).strip().lower()
        if key.endswith(".0"):
            key = key[:-2]
        if key not in _ALIASES:
            raise DataError(f"unknown sentiment label {value!r}: use one of {', '.join(LABELS)}")
        out.append(_ALIASES[key])
    return np.asarray(out, dtype=np.int64)


def _timestamps(col: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(col):
        ts = col.to_numpy(dtype=np.float64)
        return np.where(ts > 1e11, ts / 1000.0, ts)
    stamps = pd.to_datetime(col, utc=True, format="mixed", errors="coerce")
    return ((stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64)


def read_labelled(path: str | Path, *, require_labels: bool = True) -> pd.DataFrame:
    """The file with ``text``, ``y`` (class id, -1 if unknown) and ``ts`` (NaN if absent), time-ordered."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        frame = pd.read_parquet(path)
    elif name.endswith((".csv", ".csv.gz", ".gz", ".txt")):
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"text": str})
    else:
        raise DataError(f"{path}: unsupported file type (use .csv, .csv.gz or .parquet)")
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in ("text", "label") if c not in frame.columns and (c == "text" or require_labels)]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; a sentiment file needs text and label "
                        f"(ts, channel optional). Found: {', '.join(frame.columns)}")
    frame = frame[frame["text"].notna() & (frame["text"].astype(str).str.strip() != "")].copy()
    frame["text"] = frame["text"].astype(str)
    frame["y"] = labels_to_ids(frame["label"]) if "label" in frame.columns else -1
    frame["ts"] = _timestamps(frame["ts"]) if "ts" in frame.columns else np.nan
    if "id" not in frame.columns:
        frame["id"] = [f"row-{i}" for i in range(len(frame))]
    frame["id"] = frame["id"].astype(str)
    if "channel" in frame.columns:
        frame["channel"] = frame["channel"].astype(str)
    if frame["ts"].notna().any():
        frame = frame.sort_values("ts", kind="stable", na_position="last")
    return frame.reset_index(drop=True)


def parse_where(test_where: str) -> tuple[str, str]:
    """``"COLUMN=VALUE"`` -> ``(column, value)``."""
    column, sep, value = test_where.partition("=")
    if not sep or not column.strip():
        raise DataError(f"--test-where must be COLUMN=VALUE, got {test_where!r}")
    return column.strip(), value.strip()


def split(frame: pd.DataFrame, test_where: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, test) of the agreed split (see the module doc)."""
    n = len(frame)
    if test_where:
        column, value = parse_where(test_where)
        if column not in frame.columns:
            raise DataError(f"--test-where: no column {column!r}; columns are {', '.join(map(str, frame.columns))}")
        test = (frame[column].astype(str) == value).to_numpy()
        if not test.any():
            raise DataError(f"--test-where {test_where}: no row matches")
        return ~test, test
    cut = int(n * TRAIN_FRACTION)
    test = np.zeros(n, dtype=bool)
    test[cut:] = True
    return ~test, test


def training_part(frame: pd.DataFrame, test_where: str | None = None) -> pd.DataFrame:
    """The rows a model may learn from: ``test_where`` excluded when the file has that column,
    else the first 80 % in time. Unlabelled rows are dropped."""
    where = test_where if test_where and parse_where(test_where)[0] in frame.columns else None
    train, _ = split(frame, where)
    part = frame[train]
    return part[part["y"] >= 0]

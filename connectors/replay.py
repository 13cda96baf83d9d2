"""Replay of recorded events from files (CSV, CSV.gz, Parquet) through pandas.

Files come in Lepton's own schema (the wire fields as columns, plus an
optional ``label``) or in a known public format, mapped here once so that
training, evaluation and ``lepton produce --source FILE`` see the same events:

* fraud: the *Fraud Detection Handbook* columns (TRANSACTION_ID, TX_DATETIME,
  CUSTOMER_ID, TERMINAL_ID, TX_AMOUNT, TX_FRAUD). TX_FRAUD_SCENARIO is ground
  truth about *how* a fraud was made and is never exposed.
* anomaly: SKAB runs (``;``-separated, ``datetime``, sensors, ``anomaly``);
  the equipment id is the run's folder and file name, e.g. ``valve1-3``.
  In Lepton's schema, every column besides id/ts/equipment_id/label is a sensor
  (or one ``readings`` column of JSON objects).

Rows come out in event-time order. Timestamps become Unix seconds (naive
date-times are taken as UTC).
"""

from __future__ import annotations

import heapq
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import orjson
import pandas as pd

HANDBOOK = {  # Fraud Detection Handbook column -> Lepton field
    "TRANSACTION_ID": "id",
    "TX_DATETIME": "ts",
    "CUSTOMER_ID": "card",
    "TERMINAL_ID": "merchant",
    "TX_AMOUNT": "amount",
    "TX_FRAUD": "label",
}
_FIELDS = {
    "fraud": ("id", "ts", "card", "merchant", "amount"),
    "sentiment": ("id", "ts", "channel", "user", "text"),
    "anomaly": ("id", "ts", "equipment_id"),
}
_OPTIONAL = {"fraud": ("country",), "sentiment": (), "anomaly": ()}
_LABEL_ALIASES = {
    "fraud": ("label", "is_fraud"),
    "sentiment": ("label",),
    "anomaly": ("label", "is_anomaly", "anomaly"),
}
_NOT_SENSORS = {"id", "ts", "equipment_id", "label", "is_anomaly", "anomaly", "changepoint"}


_SUFFIXES = (".parquet", ".pq", ".csv", ".csv.gz", ".gz", ".txt")


class ReplayError(ValueError):
    """A file that cannot be read as the pipeline's events."""


def _read(path: Path) -> pd.DataFrame:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return pd.read_parquet(path)
    if not name.endswith((".csv", ".csv.gz", ".gz", ".txt")):
        raise ReplayError(f"{path}: unsupported file type (use .csv, .csv.gz or .parquet)")
    header = pd.read_csv(path, nrows=0)
    sep = ";" if len(header.columns) == 1 and ";" in header.columns[0] else ","
    return pd.read_csv(path, sep=sep)


def _unix_seconds(col: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(col):
        ts = col.to_numpy(dtype=np.float64)
        return np.where(ts > 1e11, ts / 1000.0, ts)  # milliseconds
    stamps = pd.to_datetime(col, utc=True, format="mixed")
    return (stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)


def _require(df: pd.DataFrame, path: Path, pipeline: str, needed: tuple[str, ...], what: str) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        expected = {
            "fraud": "Lepton's schema (id, ts, card, merchant, amount[, country][, label]) or the Fraud Detection "
                     "Handbook's (TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID, TERMINAL_ID, TX_AMOUNT[, TX_FRAUD])",
            "sentiment": "Lepton's schema (id, ts, channel, user, text[, label])",
            "anomaly": "Lepton's schema (id, ts, equipment_id, one column per sensor[, label]) or a SKAB run "
                       "(datetime;<sensors>;anomaly;changepoint)",
        }[pipeline]
        raise ReplayError(
            f"{path}: not a {pipeline} file: missing column(s) {', '.join(missing)} of {what}. "
            f"Expected {expected}. Found: {', '.join(map(str, df.columns))}."
        )


def _bool_or_none(value: Any) -> bool | None:
    return None if pd.isna(value) else bool(value)


def read_frame(pipeline: str, path: str | Path) -> pd.DataFrame:
    """The file as a DataFrame in Lepton's schema (plus ``label`` if known), in event-time order.

    For anomaly files the sensors stay as columns (``readings`` is built by
    :func:`read_events`).
    """
    if pipeline not in _FIELDS:
        raise ValueError(f"unknown pipeline {pipeline!r}; available: {sorted(_FIELDS)}")
    path = Path(path)
    if not path.is_file():
        raise ReplayError(f"{path}: no such file")
    df = _read(path)
    df.columns = [str(c).strip() for c in df.columns]

    if pipeline == "fraud" and any(c in df.columns for c in HANDBOOK if c != "TX_FRAUD") and "id" not in df.columns:
        _require(df, path, pipeline, tuple(c for c in HANDBOOK if c != "TX_FRAUD"), "the Handbook format")
        df = df[[c for c in HANDBOOK if c in df.columns]].rename(columns=HANDBOOK)  # drops TX_FRAUD_SCENARIO
    elif pipeline == "anomaly" and "datetime" in df.columns and "id" not in df.columns:
        run = f"{path.parent.name}-{path.name.split('.')[0]}"
        df = df.drop(columns=[c for c in ("changepoint",) if c in df.columns]).rename(columns={"datetime": "ts"})
        df.insert(0, "equipment_id", run)
        df.insert(0, "id", [f"{run}-{i}" for i in range(len(df))])
    else:
        _require(df, path, pipeline, _FIELDS[pipeline], "Lepton's schema")
    label = next((c for c in _LABEL_ALIASES[pipeline] if c in df.columns), None)
    if label and label != "label":
        df = df.rename(columns={label: "label"})
    if pipeline == "anomaly":
        df = df.drop(columns=[c for c in df.columns if c in _NOT_SENSORS - set(_FIELDS["anomaly"]) - {"label"}])
    else:
        keep = [*_FIELDS[pipeline], *(c for c in _OPTIONAL[pipeline] if c in df.columns)]
        df = df[keep + (["label"] if "label" in df.columns else [])]

    df["ts"] = np.round(_unix_seconds(df["ts"]), 3)
    for col in ("id", "card", "merchant", "channel", "user", "equipment_id"):
        if col in df.columns:
            df[col] = df[col].astype(str)
    if "amount" in df.columns:
        df["amount"] = df["amount"].astype(np.float64)
    if "label" in df.columns:
        known = df["label"].notna()
        if pipeline in ("fraud", "anomaly"):
            df["label"] = df["label"].astype(bool) if known.all() else df["label"].map(_bool_or_none)
        elif not known.all():
            df["label"] = df["label"].astype(object).where(known, None)
    return df.sort_values("ts", kind="stable").reset_index(drop=True)


def read_events_from(pipeline: str, path: str | Path) -> Iterator[tuple[dict[str, Any], Any]]:
    """Like :func:`read_events`, for a file or a folder of them (searched recursively), merged in event time.

    A folder of SKAB runs becomes one stream of several equipment (``valve1-3``, ...).
    """
    path = Path(path)
    if not path.is_dir():
        return read_events(pipeline, path)
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(_SUFFIXES))
    if not files:
        raise ReplayError(f"{path}: no .csv, .csv.gz or .parquet files in it")
    return heapq.merge(*(read_events(pipeline, f) for f in files), key=lambda pair: pair[0]["ts"])


def read_events(pipeline: str, path: str | Path) -> Iterator[tuple[dict[str, Any], Any]]:
    """``(event, label)`` pairs from a file, in event-time order; label is None when unknown.

    Events carry only the wire fields of the pipeline's input (see module doc).
    """
    df = read_frame(pipeline, path)
    labels = df.pop("label").tolist() if "label" in df.columns else [None] * len(df)
    if pipeline == "anomaly":
        head = list(_FIELDS["anomaly"])
        if "readings" in df.columns:
            readings = [r if isinstance(r, dict) else orjson.loads(r) for r in df["readings"]]
        else:
            sensors = [c for c in df.columns if c not in head]
            if not sensors:
                raise ReplayError(f"{path}: an anomaly file needs at least one sensor column")
            values = df[sensors].to_numpy(dtype=np.float64)
            readings = [
                {k: (None if v != v else v) for k, v in zip(sensors, row)}  # NaN: a missing reading
                for row in values.tolist()
            ]
        columns = [df[c].tolist() for c in head]
        for values, r, y in zip(zip(*columns), readings, labels):
            event = dict(zip(head, values))
            event["readings"] = r
            yield event, y
        return
    keys = list(df.columns)
    if "country" in keys:
        df["country"] = df["country"].fillna("")
    for values, y in zip(zip(*(df[k].tolist() for k in keys)), labels):
        yield dict(zip(keys, values)), y

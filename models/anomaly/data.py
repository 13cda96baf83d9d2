"""Sensor data files → per-equipment series, and the benchmark protocol's training/test split.

Accepted: a CSV (``,`` or ``;``, optionally gzipped) or Parquet file, or a
folder of them (searched recursively), with

* a timestamp column: ``ts``, ``timestamp``, ``datetime``, ``time`` or ``date``
  (Unix seconds or milliseconds, or date-times; naive ones are UTC), or the one named;
* numeric sensor columns: every other numeric column;
* optionally a 0/1 label column: ``anomaly``, ``label`` or ``is_anomaly``
  (``changepoint``, ``id`` and the equipment column are never sensors);
* one piece of equipment per file, named ``<folder>-<file stem>`` (SKAB's
  ``valve1-3``), unless an equipment column is named (or ``equipment_id`` exists).

The protocol (SKAB's): per equipment, the first ``train_frames`` frames (or the
first ``train_fraction`` of them) are the training part, normal operation by
assumption; the rest is the test part. In a folder where some files are
labelled, a file without labels is normal-operation reference data (SKAB's
``anomaly-free`` run): it is training data as a whole and is never scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

TIME_COLUMNS = ("ts", "timestamp", "datetime", "time", "date")
LABEL_COLUMNS = ("anomaly", "label", "is_anomaly")
NOT_SENSORS = {"id", "equipment_id", "changepoint", *LABEL_COLUMNS}
SUFFIXES = (".csv", ".csv.gz", ".txt", ".parquet", ".pq")


class DataError(ValueError):
    """Data that cannot be read as sensor frames; the message says what was expected."""


@dataclass
class Series:
    """One equipment's frames in time order."""

    equipment_id: str
    ts: np.ndarray  # Unix seconds
    values: np.ndarray  # (frames, sensors), NaN = missing
    sensors: list[str]
    labels: np.ndarray | None  # bool per frame, None when the file has no labels
    source: str
    reference: bool = False  # normal-operation reference data: training only, never scored

    def __len__(self) -> int:
        return len(self.ts)

    def head(self, n: int) -> Series:
        return self.slice(0, n)

    def slice(self, start: int, stop: int | None) -> Series:
        labels = None if self.labels is None else self.labels[start:stop]
        return Series(self.equipment_id, self.ts[start:stop], self.values[start:stop], self.sensors, labels,
                      self.source, self.reference)


def files_in(data: str | Path) -> list[Path]:
    path = Path(data)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: no such file or directory")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(SUFFIXES))
    if not files:
        raise DataError(f"{path}: no CSV or Parquet files in it")
    return files


def _read(path: Path) -> pd.DataFrame:
    if path.name.lower().endswith((".parquet", ".pq")):
        return pd.read_parquet(path)
    header = pd.read_csv(path, nrows=0)
    sep = ";" if len(header.columns) == 1 and ";" in str(header.columns[0]) else ","
    return pd.read_csv(path, sep=sep)


def _seconds(col: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(col):
        ts = col.to_numpy(dtype=np.float64)
        return np.where(ts > 1e11, ts / 1000.0, ts)
    stamps = pd.to_datetime(col, utc=True, format="mixed")
    return ((stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64)


def read_file(path: Path, *, equipment_column: str | None = None, timestamp_column: str | None = None) -> list[Series]:
    """The series in one file (one, or one per value of the equipment column)."""
    df = _read(path)
    df.columns = [str(c).strip() for c in df.columns]
    lower = {c.lower(): c for c in df.columns}
    ts_col = timestamp_column or next((lower[c] for c in TIME_COLUMNS if c in lower), None)
    if ts_col is None or ts_col not in df.columns:
        raise DataError(f"{path}: no timestamp column (one of {', '.join(TIME_COLUMNS)}, or name it); "
                        f"found {', '.join(df.columns)}")
    eq_col = equipment_column or lower.get("equipment_id")
    if eq_col is not None and eq_col not in df.columns:
        raise DataError(f"{path}: no equipment column {eq_col!r}; found {', '.join(df.columns)}")
    label_col = next((lower[c] for c in LABEL_COLUMNS if c in lower), None)
    skip = {ts_col, eq_col, label_col} | {c for c in df.columns if c.lower() in NOT_SENSORS}
    sensors = [c for c in df.columns if c not in skip and pd.api.types.is_numeric_dtype(df[c])]
    if not sensors:
        raise DataError(f"{path}: no numeric sensor column besides {ts_col}")
    ts = _seconds(df[ts_col])
    values = df[sensors].to_numpy(dtype=np.float64)
    values[~np.isfinite(values)] = np.nan
    labels = None
    if label_col is not None and df[label_col].notna().any():
        labels = df[label_col].fillna(0).to_numpy(dtype=np.float64) > 0.5
    default_id = f"{path.parent.name}-{path.name.split('.')[0]}"
    keys = df[eq_col].astype(str).to_numpy() if eq_col else np.full(len(df), default_id, dtype=object)
    out = []
    for key in pd.unique(keys):
        rows = np.flatnonzero(keys == key)
        order = rows[np.argsort(ts[rows], kind="stable")]
        out.append(Series(str(key), ts[order], values[order], list(sensors),
                          None if labels is None else labels[order], str(path)))
    return out


def load_series(data: str | Path, *, equipment_column: str | None = None,
                timestamp_column: str | None = None) -> list[Series]:
    """Every equipment series in a file or folder (see module doc), reference runs marked."""
    series: list[Series] = []
    for path in files_in(data):
        series.extend(read_file(path, equipment_column=equipment_column, timestamp_column=timestamp_column))
    seen: dict[str, int] = {}
    for s in series:  # the same equipment in two files would mix two runs: keep them apart
        if s.equipment_id in seen:
            seen[s.equipment_id] += 1
            s.equipment_id = f"{s.equipment_id}#{seen[s.equipment_id]}"
        else:
            seen[s.equipment_id] = 0
    if any(s.labels is not None for s in series):
        for s in series:
            s.reference = s.labels is None
    return series


def train_size(n: int, train_frames: int | None = None, train_fraction: float | None = None) -> int:
    """Frames in the training part of a series of ``n`` (the protocol's first ``train_frames``, default 400).

    >>> train_size(1000), train_size(1000, train_fraction=0.25), train_size(300, train_frames=400)
    (400, 250, 300)
    """
    if train_fraction is not None:
        if not 0.0 < train_fraction < 1.0:
            raise ValueError("train_fraction must be within (0, 1)")
        return min(n, max(1, math.ceil(train_fraction * n)))
    return min(n, 400 if train_frames is None else int(train_frames))


def normal_prefix(s: Series) -> Series:
    """Frames before the first labelled anomaly (all of them without labels): normal operation."""
    if s.labels is None or not s.labels.any():
        return s
    return s.head(int(np.argmax(s.labels)))

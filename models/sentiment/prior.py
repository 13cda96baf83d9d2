"""Unsupervised class-prior adaptation on the live stream (Saerens, Latinne & Decaestecker, 2002).

Why: a classifier's probabilities carry the class mix it learned from. When the
traffic's mix differs (the airline test part is 25 % neutral, its training part
about 21 %, the validation part 19 %), every message is pulled towards the
training mix. Given the model's probabilities ``p(c|x)`` and the prior they are
calibrated to (``source``), EM re-estimates the traffic's prior ``q`` without any
label and re-weights each message's probabilities by ``q / source``:

    E: w_i(c) = p_i(c) q(c) / source(c), normalized over c
    M: q(c) = mean_i w_i(c)

Online and bounded: :class:`PriorAdapter` keeps the raw probabilities of the last
``window`` messages; each batch joins the window, EM runs over the window (warm
started from the previous estimate, a few dozen vector steps over at most
``window`` rows), and the batch is re-weighted with the new estimate. Below
``min_messages`` the batch passes unchanged.

The source prior is the mean probability the model gives its own training rows
(for a calibrated model, the training class mix; with class-weighted losses or
folded logit offsets, the mix the probabilities actually imply). It travels
beside the model (``prior.json`` in its version directory, :func:`write_source_prior`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

PRIOR_FILE = "prior.json"


def em_prior(probs: np.ndarray, source: np.ndarray, start: np.ndarray | None = None, *,
             iterations: int = 100, tol: float = 1e-6, floor: float = 1e-4) -> np.ndarray:
    """The class prior of the rows of ``probs`` (``(n, k)``, calibrated to ``source``) by EM."""
    probs = np.asarray(probs, dtype=np.float64)
    source = np.asarray(source, dtype=np.float64)
    q = source.copy() if start is None else np.asarray(start, dtype=np.float64).copy()
    if len(probs) == 0:
        return q
    for _ in range(iterations):
        w = probs * (q / source)
        w /= np.maximum(w.sum(1, keepdims=True), 1e-300)
        new = np.maximum(w.mean(0), floor)
        new /= new.sum()
        done = np.abs(new - q).max() < tol
        q = new
        if done:
            break
    return q


def reweight(probs: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``probs`` moved from the ``source`` prior to the ``target`` one (Bayes' rule, renormalized)."""
    w = np.asarray(probs, dtype=np.float64) * (np.asarray(target, np.float64) / np.asarray(source, np.float64))
    return (w / np.maximum(w.sum(1, keepdims=True), 1e-300)).astype(np.float32)


class PriorAdapter:
    """EM prior adaptation over a bounded window of the recent stream (see the module doc)."""

    def __init__(self, source: np.ndarray, window: int = 2000, min_messages: int = 200,
                 iterations: int = 100) -> None:
        source = np.asarray(source, dtype=np.float64)
        if source.ndim != 1 or np.any(source <= 0):
            raise ValueError(f"source prior must be positive: {source}")
        self.source = source / source.sum()
        self.window = int(window)
        self.min_messages = int(min_messages)
        self.iterations = iterations
        self._buf = np.zeros((self.window, len(source)), dtype=np.float64)
        self._n = 0  # messages seen (the buffer holds the last min(n, window))
        self.prior = self.source.copy()  # the current estimate of the stream's prior

    @property
    def seen(self) -> int:
        return self._n

    def _push(self, probs: np.ndarray) -> None:
        """Into the ring buffer, oldest rows overwritten first."""
        n = len(probs)
        k = min(n, self.window)
        self._buf[(self._n + np.arange(n - k, n)) % self.window] = probs[n - k:]
        self._n += n

    def adapt(self, probs: np.ndarray) -> np.ndarray:
        """The batch's probabilities re-weighted to the stream's prior (unchanged during warm-up)."""
        if len(probs) == 0:
            return probs
        self._push(np.asarray(probs, dtype=np.float64))
        if self._n < self.min_messages:
            return probs
        rows = self._buf[:min(self._n, self.window)]
        self.prior = em_prior(rows, self.source, self.prior, iterations=self.iterations)
        return reweight(probs, self.source, self.prior)


def read_source_prior(version_dir: Path) -> np.ndarray | None:
    """The source prior saved beside a registered model, or None."""
    path = Path(version_dir) / PRIOR_FILE
    try:
        spec = json.loads(path.read_text())
        prior = np.asarray(spec["source_prior"], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return prior if prior.ndim == 1 and np.all(prior > 0) else None


def write_source_prior(version_dir: Path, probs: np.ndarray, what: str) -> np.ndarray:
    """Save the mean of ``probs`` (the model's probabilities on its training rows) as its source prior."""
    prior = np.asarray(probs, dtype=np.float64).mean(0)
    prior = np.maximum(prior, 1e-4)
    prior /= prior.sum()
    tmp = Path(version_dir) / (PRIOR_FILE + ".tmp")
    tmp.write_text(json.dumps({"source_prior": [round(float(v), 6) for v in prior], "from": what,
                               "rows": int(len(probs))}))
    tmp.replace(Path(version_dir) / PRIOR_FILE)
    return prior


def main() -> None:
    """``python -m models.sentiment.prior --version N --airline A --semeval S``: write version N's source
    prior from its probabilities on the recipes' training rows (cached teacher scores when present)."""
    import argparse

    from models.registry import ModelRegistry
    from streams.settings import get_settings

    from .recipes import SEMEVAL_TEST
    from .train import load_training, teacher_probabilities

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--version", type=int, required=True)
    parser.add_argument("--airline", type=Path, required=True)
    parser.add_argument("--semeval", type=Path, required=True)
    args = parser.parse_args()
    settings = get_settings()
    frame, _ = load_training([args.airline, args.semeval], test_where=SEMEVAL_TEST, train_part_only=True)
    probs = teacher_probabilities(settings, args.version, frame["text"].tolist())
    directory = ModelRegistry(settings.models_dir).model_path("sentiment", args.version).parent
    prior = write_source_prior(directory, probs, "mean probability on the airline + SemEval training parts")
    print(f"v{args.version}: source prior {np.round(prior, 4).tolist()} -> {directory / PRIOR_FILE}")


if __name__ == "__main__":
    main()

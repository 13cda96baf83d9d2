"""Throughput of a whole fraud worker *with its labels*: ``lepton worker --pipelines fraud`` on a broker.

``lepton bench`` measures the worker on transactions alone, and
:mod:`streams.bench.fraud_process` the pipeline's own code in one process. This
is what a user's worker does when it catches up a backlog: Kafka in and out,
JSON, the batch runtime, the three state tables and their changelogs, and the
labels (``fraud-labels``, ``label_delay_days`` late in event time) joined,
applied and learnt by the River challenger as they come.

Each run fills both topics, as ``lepton produce fraud --source FILE
--label-delay-days D`` sends them (a file's transactions in time order, each
label once the event-time clock passes its transaction's time plus the delay;
without a file, the synthetic generator at the handbook's pace), on a fresh
embedded broker (it slows as it fills) unless ``LEPTON_KAFKA_BOOTSTRAP`` names
one; then it starts a fresh worker (fresh consumer group, tables and
online-model checkpoint; the registered model of ``LEPTON_HOME``) that reads
everything from the start, and stops it once its group has committed both
topics to their ends. Measured after the fact, as ``lepton bench`` does:

* the span from the first output record to the last record the worker wrote
  (scores, or the changelog tombstone of the last label it joined), from the
  records' producer timestamps: start-up and the group join are excluded;
* transactions per second over that span, and the worker's CPU seconds (from
  ``/proc``) over it per 1,000 transactions, labels included;
* labels joined / missing from the worker's own ``/metrics``.

    python -m streams.bench.fraud_worker [FILE] [--rows 400000] [--label-delay-days 7] [--runs 3] [--json OUT]
    python -m streams.bench.fraud_worker FILE --runs 4 --baseline-tree DIR   # old code (a git worktree) vs this

With ``--baseline-tree`` each run is a pair, the other checkout's worker and this one's (alternating which goes
first), and the result adds the pairs' ratios (:func:`order_balanced`: the order within a pair may move them;
give an even ``--runs``): the figure to judge a change by on a machine whose speed drifts by a third within an hour.

The machine is shared: the CPU figure moves less with other load than the
wall-clock rate, which also counts the broker on the other core.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import statistics
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..settings import Settings
from . import _CpuSampler, _free_port, _git_revision, _loadavg, _machine, _Session

POLL_S = 0.5  # how often the harness asks for the group's lag (a short-lived admin client each time)


@dataclass
class WorkerRun:
    run: int
    transactions: int
    labels_joined: int
    labels_missing: int
    seconds: float  # first output record to the last record the worker wrote
    transactions_per_s: float
    cpu_s_per_1k: float  # the worker's CPU over the span, per 1,000 transactions (labels included)
    transactions_per_cpu_s: float
    startup_s: float  # process start to its first output (not in the span)
    loadavg: float


def events_and_labels(source: str | None, rows: int) -> Iterator[tuple[dict[str, Any], Any]]:
    """``(transaction, is_fraud)`` pairs: a file replayed in time order, else the synthetic generator
    at the handbook's pace (about 10,000 transactions a simulated day)."""
    if source:
        from connectors.replay import read_events_from

        return itertools.islice(read_events_from("fraud", source), rows)
    from connectors.generators import TransactionGenerator

    # Ending about now: a worker refuses event times more than a day ahead of its clock.
    days = rows / TransactionGenerator(seed=0).events_per_day + 1
    start = (time.time() // 86_400.0 - days // 1 - 1) * 86_400.0
    return itertools.islice(iter(TransactionGenerator(seed=0, start_ts=start)), rows)


def fill(settings: Settings, bootstrap: str, source: str | None, rows: int,
         label_delay_days: float) -> tuple[int, int]:
    """Send the transactions and their labels (as ``lepton produce`` does); returns how many of each."""
    from connectors.producer import produce, unzip

    events, labels = unzip(events_and_labels(source, rows))
    produce(settings, bootstrap, "fraud", events, labels=labels, label_delay_s=label_delay_days * 86_400.0,
            progress=True)
    topics = settings.topics.pipeline("fraud")
    session = _bare_session(settings, bootstrap)
    return sum(session.end_offsets(topics.input).values()), sum(session.end_offsets(topics.feedback).values())


def _bare_session(settings: Settings, bootstrap: str, logs: Path | None = None) -> _Session:
    return _Session(settings, bootstrap, settings.topic_prefix, logs or Path(tempfile.gettempdir()), None,
                    echo=lambda msg: None, show_progress=False)


def _labels_counted(port: int) -> dict[str, int]:
    """``lepton_labels_total`` by outcome, from the worker's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("lepton_labels_total{") and 'pipeline="fraud"' in line:
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            counts[outcome] = int(float(line.rsplit(" ", 1)[1]))
    return counts


def _caught_up(session: _Session, group: str, topics: list[str], expected: int,
               output: str) -> Callable[[], tuple[bool, Any, str]]:
    """A probe for :meth:`_Session.wait_progress`: ``group`` has committed every partition of ``topics`` to
    its end, and ``expected`` outputs exist."""
    from connectors.admin import group_lag

    def probe() -> tuple[bool, Any, str]:
        lag = group_lag(session.bootstrap, group, topics, settings=session.settings)
        behind = sum(p.lag for t in topics for p in lag.get(t, {}).values()) if len(lag) == len(topics) else None
        outputs = sum(session.end_offsets(output).values())
        return behind == 0 and outputs >= expected, (behind, outputs), \
            f"{outputs:,}/{expected:,} outputs, {behind} records not committed"

    return probe


def _last_stamp(session: _Session, topic: str) -> float:
    """The latest producer timestamp (s) among the last record of each partition of ``topic``."""
    end = session.end_offsets(topic)
    stamps = [ts for ts, _ in session.read(topic, {p: e - 1 for p, e in end.items() if e}, end, values=False)]
    return max(stamps) / 1000.0 if stamps else float("-inf")


def run_once(settings: Settings, bootstrap: str, run: int, transactions: int, logs: Path,
             code: Path | None = None) -> WorkerRun:
    """One fresh worker (of the checkout ``code``, default this one) over both topics, from the start; see
    the module doc for what is measured."""
    session = _bare_session(settings, bootstrap, logs)
    topics = settings.topics.pipeline("fraud")
    app_id = f"benchw{run}-{int(time.time() * 1000)}"
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="lepton-benchw-") as home:
        # The registered models, a state directory of its own (the online model's checkpoint starts empty).
        (Path(home) / "models").symlink_to(settings.models_dir.resolve())
        launched = time.time()
        tag = f"fraud-worker-run{run}" + ("-baseline" if code is not None else "")  # (a pair's logs both kept)
        proc, log = session.start("lepton", "fraud", settings.topic_prefix, tag,
                                  {"LEPTON_APP_ID": app_id, "LEPTON_HOME": home, "LEPTON_METRICS_PORT": str(port)},
                                  code=code)
        sampler = _CpuSampler(proc.pid)
        sampler.start()
        try:
            session.wait_progress(proc, log, "the fraud worker", _caught_up(
                session, app_id, [topics.input, topics.feedback], transactions, topics.output), poll_s=POLL_S)
            counted = _labels_counted(port)
        finally:
            sampler.stop()
            session.stop(proc, wait=True)
    end = session.end_offsets(topics.output)
    first = min(ts for ts, _ in session.read(topics.output, {}, end, values=False)) / 1000.0
    changelog = f"{app_id}-fraud-scored-changelog"  # a joined label's tombstone goes here
    last = max(_last_stamp(session, topics.output), _last_stamp(session, changelog))
    span = max(last - first, 1e-3)
    cpu = sampler.at(last) - sampler.at(first)
    return WorkerRun(run, transactions, counted.get("joined", 0), counted.get("missing", 0), span,
                     transactions / span, cpu / transactions * 1000.0, transactions / cpu if cpu > 0 else float("nan"),
                     first - launched, _loadavg())


def run_bench(settings: Settings, source: str | None, rows: int, label_delay_days: float, runs: int,
              echo: Callable[[str], None] = print, baseline: Path | None = None) -> dict[str, Any]:
    """``runs`` times: fill fresh topics (on a fresh embedded broker, unless one is configured or running: a
    broker slows as it fills), run a fresh worker over them; the result (medians and every run) as a dict.

    ``baseline`` (a checkout of other code, e.g. ``git worktree add DIR <commit>``): each run is a pair,
    that code's worker and this one's on topics filled alike, in alternating order, so that a change is
    judged by ratios measured under the same load (``baseline``: its medians and the pairs' ratios).
    """
    from ..kafka_session import starts_embedded_broker

    fresh = starts_embedded_broker(settings)  # (decided once: a pair's first broker is not for its second)
    stamp = f"{settings.topic_prefix}benchw{time.strftime('%Y%m%d-%H%M%S')}"
    settings = settings.model_copy(update={"home": settings.home.resolve()})
    logs = settings.home / "bench" / stamp
    logs.mkdir(parents=True, exist_ok=True)
    variants: list[tuple[str, Path | None]] = [("this", None)] + ([("baseline", baseline)] if baseline else [])
    results: dict[str, list[WorkerRun]] = {name: [] for name, _ in variants}
    sent = []
    for run in range(runs):
        with contextlib.ExitStack() as brokers:
            # A pair's topics are both filled first (a broker each), so its two workers run back to back: a
            # fill between them (half a minute) let the machine's load change between the two measurements.
            filled = []
            for name, code in (variants if run % 2 == 0 else variants[::-1]):
                run_settings = settings.model_copy(update={"topic_prefix": f"{stamp}-{run}{name[0]}."})
                bootstrap = brokers.enter_context(_broker(run_settings, fresh, logs / f"broker-run{run}{name[0]}.log"))
                started = time.time()
                transactions, labels = fill(run_settings, bootstrap, source, rows, label_delay_days)
                sent.append((transactions, labels))
                echo(f"filled {transactions:,} transactions and {labels:,} labels ({label_delay_days:g} days late) "
                     f"in {time.time() - started:.0f} s")
                filled.append((name, code, run_settings, bootstrap, transactions))
            for name, code, run_settings, bootstrap, transactions in filled:
                results[name].append(run_once(run_settings, bootstrap, run, transactions, logs, code))
                r = results[name][-1]
                echo(f"  run {run + 1}/{runs}{f' ({name})' if baseline else ''}: {r.transactions_per_s:,.0f} "
                     f"transactions/s, {r.cpu_s_per_1k:.4f} CPU s per 1,000 ({r.transactions_per_cpu_s:,.0f} per "
                     f"CPU second), {r.labels_joined:,} labels joined, {r.labels_missing:,} missing, {r.seconds:.1f} "
                     f"s, load {r.loadavg:.1f}")
    result = {
        "source": source or "synthetic",
        "transactions": sent[0][0],
        "labels_sent": sent[0][1],
        "label_delay_days": label_delay_days,
        **_medians(results["this"]),
        "runs": [asdict(r) for r in results["this"]],
        "machine": _machine(),
        "revision": _git_revision(),
    }
    if baseline:
        pairs = list(zip(results["this"], results["baseline"]))
        rate = [a.transactions_per_s / b.transactions_per_s for a, b in pairs]  # > 1: this code is faster
        cpu = [b.cpu_s_per_1k / a.cpu_s_per_1k for a, b in pairs]
        result["baseline"] = {
            "code": str(baseline),
            **_medians(results["baseline"]),
            "speedup_rate": order_balanced(rate),
            "speedup_cpu": order_balanced(cpu),
            "pair_rate_ratios": rate,  # pair i: this code ran first when i is even
            "runs": [asdict(r) for r in results["baseline"]],
        }
        echo(f"against {baseline}: {result['baseline']['speedup_rate']:.3f}x the transactions/s, "
             f"{result['baseline']['speedup_cpu']:.3f}x less CPU per transaction ({runs} pairs, the two orders "
             f"weighed alike; pairs {', '.join(f'{r:.2f}' for r in rate)})"
             + ("" if runs % 2 == 0 else "; an even --runs gives each order as many pairs"))
    return result


def order_balanced(ratios: list[float]) -> float:
    """The pairs' ratio, the order inside a pair cancelled out: the geometric mean of the geometric means of
    the pairs run in each order (pair ``i``: this code first when ``i`` is even).

    Which worker of a pair runs first may move the ratio (two three-pair runs each gave ~1.4, ~1.03, ~1.4,
    the 1.03 with the old code first: a median took the order that ran twice). So each order counts half,
    however many pairs ran in it.

    >>> round(order_balanced([1.44, 1.0, 1.44]), 3), order_balanced([1.21])
    (1.2, 1.21)
    """
    orders = [ratios[0::2], ratios[1::2]]
    means = [math.exp(statistics.fmean(map(math.log, order))) for order in orders if order]
    return math.exp(statistics.fmean(map(math.log, means)))


@contextlib.contextmanager
def _broker(settings: Settings, fresh: bool, log: Path) -> Iterator[str]:
    """A fresh embedded broker of its own (the broker slows as it fills), else the one configured or running."""
    if not fresh:
        from ..kafka_session import kafka

        with kafka(settings, create_topics=False) as bootstrap:
            yield bootstrap
        return
    from connectors.broker import EmbeddedBroker

    with EmbeddedBroker(settings, log_path=log) as broker:  # (unpublished: a pair's other broker is its own)
        yield broker.bootstrap


def _medians(runs: list[WorkerRun]) -> dict[str, float]:
    return {
        "transactions_per_s": statistics.median(r.transactions_per_s for r in runs),
        "cpu_s_per_1k": statistics.median(r.cpu_s_per_1k for r in runs),
        "transactions_per_cpu_s": statistics.median(r.transactions_per_cpu_s for r in runs),
    }


def main(argv: list[str] | None = None) -> None:
    from ..settings import get_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", default=None, help="transactions in the handbook's columns (default: "
                        "synthetic)")
    parser.add_argument("--rows", type=int, default=400_000, help="transactions replayed")
    parser.add_argument("--label-delay-days", type=float, default=7.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="write the result here too")
    parser.add_argument("--baseline-tree", type=Path, default=None, metavar="DIR",
                        help="also run the worker of the code in DIR (a git worktree of another commit), each run "
                             "a pair in alternating order; reports the pairs' ratios")
    args = parser.parse_args(argv)
    if args.baseline_tree is not None and not (args.baseline_tree / "streams" / "cli.py").is_file():
        parser.error(f"--baseline-tree {args.baseline_tree}: not a checkout of this project (no streams/cli.py); "
                     f"make one with `git worktree add {args.baseline_tree} <commit>`")
    result = run_bench(get_settings(), args.file, args.rows, args.label_delay_days, args.runs,
                       baseline=args.baseline_tree)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    summary = {k: v for k, v in result.items() if k != "runs"}
    if "baseline" in summary:
        summary["baseline"] = {k: v for k, v in summary["baseline"].items() if k != "runs"}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

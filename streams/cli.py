"""The ``lepton`` command.

Every command reads :class:`~streams.settings.Settings` (environment,
``LEPTON_*``) and lets flags override it. Commands that need Kafka use the
cluster named by ``LEPTON_KAFKA_BOOTSTRAP``, or else the embedded broker: the
one another ``lepton`` process already runs (``lepton demo``/``worker``), or a
new one owned by this command and stopped when it exits.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from .settings import Settings
from .topics import PIPELINES

ALL_PIPELINES = sorted(PIPELINES)


def _settings(**overrides: Any) -> Settings:
    base = Settings()
    clean = {k: v for k, v in overrides.items() if v is not None}
    return base.model_copy(update=clean) if clean else base


def _fail(message: str, fix: str | None = None) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    if fix:
        click.echo(f"  fix: {fix}", err=True)
    sys.exit(2)


class _Lepton(click.Group):
    """Turns the errors a user can act on into a message and a fix, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from connectors.kafka_config import BrokerUnreachable
        from connectors.replay import ReplayError
        from models.registry import RegistryError

        try:
            return super().invoke(ctx)
        except BrokerUnreachable as exc:
            _fail(str(exc), "`lepton status` checks the connection; unset LEPTON_KAFKA_BOOTSTRAP for the embedded broker")
        except RegistryError as exc:
            _fail(str(exc), "`lepton models list` shows what is registered; `lepton train PIPELINE` adds a model")
        except (ReplayError, FileNotFoundError) as exc:
            _fail(str(exc), "check the file's path and columns (see README, 'Data files')")


@click.group(cls=_Lepton, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--home", type=click.Path(path_type=Path), help="Models and state (LEPTON_HOME, default .lepton).")
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING (LEPTON_LOG_LEVEL).")
@click.pass_context
def main(ctx: click.Context, home: Path | None, log_level: str | None) -> None:
    """Lepton Streams: real-time ML pipelines on Kafka (fraud, sentiment, anomaly)."""
    if home is not None:
        os.environ["LEPTON_HOME"] = str(home)
    if log_level is not None:
        os.environ["LEPTON_LOG_LEVEL"] = log_level
    settings = Settings()
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("kafka", "aiokafka"):  # client chatter; their warnings still show
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    ctx.obj = settings


# --- worker ------------------------------------------------------------------------

@main.command()
@click.option("--pipelines", "-p", default=None, help="Comma-separated (default: LEPTON_PIPELINES).")
@click.option("--metrics-port", type=int, default=None, help="Port of /metrics, /healthz, /ready.")
@click.option("--max-batch", type=int, default=None, help="Most records per micro-batch.")
@click.option("--max-wait-ms", type=int, default=None, help="Longest fetch wait (bounds latency).")
@click.pass_obj
def worker(settings: Settings, pipelines: str | None, metrics_port: int | None, max_batch: int | None,
           max_wait_ms: int | None) -> None:
    """Run the Faust worker for the chosen pipelines."""
    from .worker import run_worker

    chosen = pipelines.split(",") if pipelines else None
    settings = settings.model_copy(update={k: v for k, v in {
        "pipelines": chosen, "metrics_port": metrics_port, "max_batch": max_batch, "max_wait_ms": max_wait_ms,
    }.items() if v is not None})
    run_worker(settings)


# --- produce -----------------------------------------------------------------------

@main.command()
@click.argument("pipeline", type=click.Choice(ALL_PIPELINES))
@click.option("--source", default="synthetic", show_default=True,
              help="'synthetic' or a CSV/Parquet file (anomaly: also a folder of them, e.g. SKAB's runs).")
@click.option("--rate", type=float, default=None, help="Events per second (default: as fast as possible).")
@click.option("--count", type=int, default=None, help="Stop after N events (synthetic default: 10,000).")
@click.option("--label-delay-days", type=float, default=0.0, show_default=True,
              help="Send labels this long after their event, in event time.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--label-fraction", type=click.FloatRange(0.0, 1.0), default=None,
              help="Share of events whose label is sent (sentiment corrections: default 0.1; others: 1).")
@click.pass_obj
def produce(settings: Settings, pipeline: str, source: str, rate: float | None, count: int | None,
            label_delay_days: float, seed: int, label_fraction: float | None) -> None:
    """Send events to PIPELINE's input topic: synthetic or replayed from a file."""
    from connectors.producer import produce as send, unzip
    from connectors import replay

    from .kafka_session import kafka

    if source == "synthetic":
        from connectors.generators import make_generator

        # Event time follows the wall clock at the sending rate (a nominal
        # 10k/s when unthrottled), so live latency and windows mean something.
        count = 10_000 if count is None else count
        kwargs = {"rate_per_s": rate or 10_000.0} if pipeline != "anomaly" else _sensor_timing(rate, count)
        if pipeline == "sentiment":
            kwargs = _chat_timing(rate, count)
        stream = iter(make_generator(pipeline, seed=seed, **kwargs))
    else:
        path = Path(source)
        if not path.exists():
            _fail(f"no such file: {path}", "pass --source synthetic, or the path of a CSV/Parquet file")
        if path.is_dir() and pipeline != "anomaly":
            _fail(f"{path} is a folder", "pass one CSV/Parquet file (folders are read for anomaly only)")
        stream = replay.read_events_from(pipeline, path)
    if label_fraction is None:
        label_fraction = 0.1 if pipeline == "sentiment" else 1.0  # people correct a few messages, not all
    if label_fraction < 1.0:
        stream = _some_labels(stream, label_fraction, seed)
    events, labels = unzip(stream)
    with kafka(settings) as bootstrap:
        n = send(settings, bootstrap, pipeline, events, rate=rate, count=count, progress=True,
                 labels=labels, label_delay_s=label_delay_days * 86_400.0)
    click.echo(f"sent {n} events to {settings.topics.pipeline(pipeline).input}")


def _some_labels(pairs: Any, fraction: float, seed: int) -> Any:
    """``(event, label)`` pairs with all but ``fraction`` of the labels dropped (None: not sent)."""
    import random

    rng = random.Random(seed)
    return ((event, label if rng.random() < fraction else None) for event, label in pairs)


def _chat_timing(rate: float | None, count: int, chat_rate: float = 10.0) -> dict[str, float]:
    """Synthetic chat: event time follows the wall clock at ``rate``; unthrottled, ``count`` messages at a
    chat-like 10/s that end now, so channels' angry spells (80-300 messages) last minutes, as the mood
    window expects, instead of milliseconds."""
    import time

    if rate:
        return {"rate_per_s": rate}
    return {"rate_per_s": chat_rate, "start_ts": time.time() - count / chat_rate}


def _sensor_timing(rate: float | None, count: int) -> dict[str, float]:
    """Synthetic sensor frames (20 pumps): event time follows the wall clock at ``rate``; unthrottled, it ends now."""
    import time

    pumps = 20
    if rate:
        return {"period_s": pumps / rate}
    return {"start_ts": time.time() - count / pumps}


# --- train -------------------------------------------------------------------------

@main.command()
@click.argument("pipeline", type=click.Choice(ALL_PIPELINES))
@click.option("--data", type=click.Path(exists=True, path_type=Path), multiple=True,
              help="Training file, or folder of files (anomaly); default: the synthetic generator.")
@click.option("--epochs", type=int, default=None, help="Training epochs.")
@click.option("--no-promote", is_flag=True, help="Register without making it the champion.")
@click.option("--model", "sentiment_model", type=click.Choice(["fast", "accurate"]), default=None,
              help="sentiment: which model (default fast; accurate needs the `accurate` extra).")
@click.option("--teacher", type=int, default=None, help="sentiment, fast: distil this registered version into it.")
@click.option("--test-where", default=None,
              help="sentiment: with --train-part-only, the COLUMN=VALUE rows are a file's test part.")
@click.option("--train-part-only", is_flag=True,
              help="sentiment: learn from each file's training part only (the agreed splits), so that "
                   "`lepton evaluate sentiment --version N` is fair.")
@click.option("--stream-rate", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="fraud: for synthetic traffic sent at this many transactions/s (`lepton produce fraud --rate`), "
                   "whose simulated days pass in seconds: the model scales event time to match (the demo: 500).")
@click.option("--stream-label-delay-s", type=click.FloatRange(min=0.0), default=30.0, show_default=True,
              help="fraud, with --stream-rate: how late labels arrive, in seconds.")
@click.pass_obj
def train(settings: Settings, pipeline: str, data: tuple[Path, ...], epochs: int | None, no_promote: bool,
          sentiment_model: str | None, teacher: int | None, test_where: str | None, train_part_only: bool,
          stream_rate: float | None, stream_label_delay_s: float) -> None:
    """Train in torch, export ONNX, register a new version."""
    from models.train import train_pipeline

    options: dict[str, Any] = {}
    if stream_rate is not None:
        if pipeline != "fraud":
            _fail("--stream-rate is for `lepton train fraud`")
        options = {"stream_rate": stream_rate, "stream_label_delay_s": stream_label_delay_s}
    if pipeline == "sentiment":
        options = {"model": sentiment_model or "fast", "teacher": teacher, "test_where": test_where,
                   "train_part_only": train_part_only}
    elif sentiment_model or teacher is not None or test_where or train_part_only:
        _fail("--model, --teacher, --test-where and --train-part-only are for `lepton train sentiment`")
    if len(data) > 1 and pipeline != "sentiment":
        _fail(f"`lepton train {pipeline}` reads one --data file", "pass --data once")
    files: Any = (list(data) if len(data) > 1 else data[0]) if data else None
    meta = train_pipeline(settings, pipeline, data=files, epochs=epochs, promote=not no_promote, progress=True,
                          **options)
    metrics = ", ".join(f"{k}={v:.3f}" for k, v in meta.metrics.items())
    click.echo(f"registered {pipeline} v{meta.version} (threshold {meta.threshold:.3f}; {metrics})")


# --- evaluate ----------------------------------------------------------------------

@main.group()
def evaluate() -> None:
    """Stream a labelled file through a pipeline's own code and report its quality."""


# --- evaluate fraud (issue 3) ---

@evaluate.command("fraud")
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Labelled transactions, CSV/CSV.gz/Parquet: the handbook's columns (TX_DATETIME, CUSTOMER_ID, "
                   "TERMINAL_ID, TX_AMOUNT, TX_FRAUD) or Lepton's (ts, card, merchant, amount, label).")
@click.option("--test-start", required=True, help="First test day (UTC date, e.g. 2018-08-08).")
@click.option("--test-end", required=True, help="Last test day, inclusive.")
@click.option("--label-delay-days", type=click.IntRange(0, 60), default=7, show_default=True,
              help="Labels arrive this long after their transaction; the model learns only labels known "
                   "before the test period.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (average_precision, auc_roc, card_precision_at_100, ...) on the last line.")
@click.option("--scores-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write every test-period transaction with its scores (CSV, or Parquet by extension).")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("reports") / "fraud", show_default=True,
              help="Folder for metrics.json and the plots (precision-recall, score distribution, alerts per day).")
@click.option("--epochs", type=int, default=None, help="Training epochs (default: the chosen 12).")
@click.option("--seed", type=int, default=0, show_default=True)
def evaluate_fraud_cmd(data: Path, test_start: str, test_end: str, label_delay_days: int, as_json: bool,
                       scores_out: Path | None, report_dir: Path, epochs: int | None, seed: int) -> None:
    """Stream the file in time order through the worker's feature, scoring and online-learning code, train on
    the labels known before the test period, report AUC ROC, average precision and card precision@100."""
    import json

    from models.fraud.evaluate import evaluate_fraud

    try:
        out = evaluate_fraud(data, test_start, test_end, label_delay_days=label_delay_days, scores_out=scores_out,
                             report_dir=report_dir, epochs=epochs, seed=seed, progress=True)
    except (ValueError, KeyError) as exc:
        _fail(str(exc), "see `lepton evaluate fraud --help` for the columns it reads and the test period")
    t = out["test"]
    click.echo(f"fraud, test {t['start']}..{t['end']} ({t['filtered_transactions']:,} transactions, "
               f"{t['filtered_frauds']} frauds after the handbook's filtering), label delay {label_delay_days} d")
    for name, m in out["models"].items():
        mark = " (served)" if name == out["served"] else ""
        click.echo(f"  {name:<7} AP {m['average_precision']:.3f}  AUC ROC {m['auc_roc']:.3f}  "
                   f"CP@100 {m['card_precision_at_100']:.3f}{mark}")
    click.echo(f"report: {report_dir}/metrics.json" + (f"; scores: {scores_out}" if scores_out else ""))
    if as_json:
        click.echo(json.dumps(out, default=float))

# --- evaluate sentiment (issue 4) ---

@evaluate.command("sentiment")
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path),
              help="Labelled CSV/CSV.gz/Parquet: text, label (negative|neutral|positive or -1/0/1); ts, channel optional.")
@click.option("--test-where", default=None, help="COLUMN=VALUE: those rows are the test part (default: the last 20 % in time).")
@click.option("--test", "test_file", type=click.Path(exists=True, path_type=Path), default=None,
              help="Train on all of --data, score every row of this file (e.g. your own chat).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (accuracy, macro_f1, macro_recall, ...) last.")
@click.option("--predictions-out", type=click.Path(path_type=Path), default=None,
              help="Write every test row's label, prediction and probabilities to this CSV.")
@click.option("--report", "report_dir", type=click.Path(path_type=Path), default=Path("reports") / "sentiment",
              show_default=True, help="Folder for metrics.json, confusion.png and report.html.")
@click.option("--model", type=click.Choice(["fast", "accurate"]), default="fast", show_default=True,
              help="Model to train on the training part (accurate: the `accurate` extra, ~45 min on a CPU).")
@click.option("--version", type=int, default=None, help="Score with this registered version instead of training one.")
@click.option("--blend-with", type=int, default=None, help="With --version: average in this second version.")
@click.option("--blend", type=float, default=0.5, show_default=True, help="Weight of --blend-with.")
@click.option("--also-train", "also_train", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Another labelled file whose training part is added (repeatable).")
@click.option("--also-train-test-where", default=None,
              help="COLUMN=VALUE excluded from --also-train files (default: --test-where).")
@click.option("--epochs", type=int, default=None, help="Training epochs.")
@click.pass_obj
def evaluate_sentiment_cmd(settings: Settings, data: Path, test_where: str | None, test_file: Path | None,
                           as_json: bool, predictions_out: Path | None, report_dir: Path, model: str,
                           version: int | None, blend_with: int | None, blend: float, also_train: tuple[Path, ...],
                           also_train_test_where: str | None, epochs: int | None) -> None:
    """Train on the agreed training part, stream the test part through the worker's code, report."""
    from models.sentiment.data import DataError
    from models.sentiment.evaluate import evaluate_command

    if test_where and test_file:
        _fail("--test-where and --test exclude each other", "pass one of them")
    if blend_with is not None and version is None:
        _fail("--blend-with needs --version", "`lepton models list --pipeline sentiment` shows the versions")
    try:
        evaluate_command(data, test_where=test_where, test=test_file, predictions_out=predictions_out,
                         report_dir=report_dir, model=model, extra_train=also_train, version=version,
                         epochs=epochs, blend_with=blend_with, blend=blend, json_out=as_json, settings=settings,
                         echo=click.echo, extra_test_where=also_train_test_where)
    except (DataError, ValueError) as exc:
        _fail(str(exc), "a sentiment file needs `text` and `label` columns; see `lepton evaluate sentiment --help`")
    except ImportError as exc:
        _fail(f"the accurate model needs the `accurate` extra ({exc})", "pip install -e '.[accurate]'")

# --- evaluate anomaly (issue 5) ---

@evaluate.command("anomaly")
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path),
              help="A CSV/Parquet file or a folder of them (e.g. SKAB): timestamp, sensor columns, optional 0/1 anomaly.")
@click.option("--json", "as_json", is_flag=True, help="Also print one JSON object (f1, far, mar, alerts, ...) on the last line.")
@click.option("--scores-out", type=click.Path(path_type=Path), default=None,
              help="Write every frame's timestamp, score in [0, 1] and flag to this CSV.")
@click.option("--train-frames", type=int, default=None, help="Training part: each run's first N frames (default 400, SKAB's).")
@click.option("--train-fraction", type=float, default=None, help="Training part: each run's first fraction (instead of N).")
@click.option("--report", "report_dir", type=click.Path(path_type=Path), default=Path("reports") / "anomaly",
              show_default=True, help="Folder for metrics.json, overview.png and one plot per run.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the autoencoder and the River trees.")
@click.pass_obj
def evaluate_anomaly_cmd(settings: Settings, data: Path, as_json: bool, scores_out: Path | None,
                         train_frames: int | None, train_fraction: float | None, report_dir: Path, seed: int) -> None:
    """Train on each run's training part, stream every frame through the worker's code, score the test parts."""
    from models.anomaly.data import DataError
    from models.anomaly.evaluate import evaluate_command

    if train_frames is not None and train_fraction is not None:
        _fail("--train-frames and --train-fraction exclude each other", "pass one of them")
    try:
        evaluate_command(data, as_json, scores_out, train_frames, train_fraction, report_dir=report_dir, seed=seed)
    except (DataError, ValueError) as exc:
        _fail(str(exc), "see `lepton evaluate anomaly --help` for the file layout it reads")


# --- models ------------------------------------------------------------------------

@main.group()
def models() -> None:
    """The model registry: list, promote, rollback."""


def _registry(settings: Settings) -> Any:
    from models.registry import ModelRegistry

    return ModelRegistry(settings.models_dir)


@models.command("list")
@click.option("--pipeline", type=click.Choice(ALL_PIPELINES), default=None)
@click.pass_obj
def models_list(settings: Settings, pipeline: str | None) -> None:
    """Every registered version; * marks the champion."""
    registry = _registry(settings)
    names = [pipeline] if pipeline else registry.pipelines()
    if not names:
        click.echo(f"no models in {settings.models_dir}: run `lepton train fraud`")
    for name in names:
        champion = registry.champion(name)
        for meta in registry.versions(name):
            mark = "*" if champion and champion.version == meta.version else " "
            shown = ", ".join(f"{k}={v:.3f}" for k, v in sorted(meta.metrics.items())[:4])
            click.echo(f"{mark} {name:<10} v{meta.version:<4} {meta.created[:19]}  threshold={meta.threshold:.3f}  {shown}")


@models.command("promote")
@click.argument("pipeline", type=click.Choice(ALL_PIPELINES))
@click.argument("version", type=int)
@click.pass_obj
def models_promote(settings: Settings, pipeline: str, version: int) -> None:
    """Make VERSION the champion; running workers swap it in."""
    from models.registry import RegistryError

    try:
        meta = _registry(settings).promote(pipeline, version)
    except RegistryError as exc:
        _fail(str(exc), f"`lepton models list --pipeline {pipeline}` shows the versions")
    _announce(settings, pipeline, meta.version)
    click.echo(f"{pipeline}: v{meta.version} is the champion")


@models.command("rollback")
@click.argument("pipeline", type=click.Choice(ALL_PIPELINES))
@click.pass_obj
def models_rollback(settings: Settings, pipeline: str) -> None:
    """Go back to the previous champion."""
    from models.registry import RegistryError

    try:
        meta = _registry(settings).rollback(pipeline)
    except RegistryError as exc:
        _fail(str(exc))
    _announce(settings, pipeline, meta.version)
    click.echo(f"{pipeline}: rolled back to v{meta.version}")


def _announce(settings: Settings, pipeline: str, version: int) -> None:
    """Tell running workers at once (they also poll the registry every second)."""
    from .kafka_session import announce_model

    try:
        announce_model(settings, pipeline, version)
    except Exception as exc:  # no broker running is fine: workers poll the registry
        logging.getLogger(__name__).debug("model-updates not sent: %s", exc)


# --- dead letters ------------------------------------------------------------------

@main.command("replay-dead-letters")
@click.option("--pipeline", type=click.Choice(ALL_PIPELINES), default=None, help="Only this pipeline's.")
@click.option("--reason", default=None, help="Only this reason (e.g. processing_error).")
@click.option("--limit", type=int, default=None, help="At most N letters.")
@click.option("--dry-run", is_flag=True, help="Show what would be sent.")
@click.pass_obj
def replay_dead_letters(settings: Settings, pipeline: str | None, reason: str | None, limit: int | None,
                        dry_run: bool) -> None:
    """Send chosen dead letters back to their source topic (after a fix)."""
    from connectors.dead_letter_replay import replay

    from .kafka_session import kafka

    with kafka(settings) as bootstrap:
        n = replay(settings, bootstrap, pipeline=pipeline, reason=reason, limit=limit, dry_run=dry_run)
    click.echo(f"{'would send' if dry_run else 'sent'} {n} dead letters back")


# --- status ------------------------------------------------------------------------

@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def status(settings: Settings, as_json: bool) -> None:
    """Topics, lag, model versions and worker health."""
    from .status import collect, render

    report = collect(settings)
    click.echo(json.dumps(report, indent=2) if as_json else render(report))


# --- bench -------------------------------------------------------------------------

@main.command()
@click.option("--events", type=int, default=200_000, show_default=True, help="Events per pipeline's input topic.")
@click.option("--runs", type=int, default=3, show_default=True, help="Alternating runs per variant.")
@click.option("--variants", default="lepton,faust,quix", show_default=True,
              help="Fraud variants: lepton, faust (plain agent), quix (Quix Streams; needs the bench extra).")
@click.option("--pipelines", default=None, help="Comma-separated (default: fraud plus the other pipelines that exist).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="Write the result as JSON.")
@click.option("--plot", "plot_out", type=click.Path(path_type=Path), default=None, help="Write a PNG chart.")
@click.option("--latency-seconds", type=float, default=20.0, show_default=True,
              help="Length of each paced latency run (0: skip latency).")
@click.option("--quix-python", default=None, help="Python with quixstreams, if not this one (LEPTON_BENCH_QUIX_PYTHON).")
@click.pass_obj
def bench(settings: Settings, events: int, runs: int, variants: str, pipelines: str | None, json_out: Path | None,
          plot_out: Path | None, latency_seconds: float, quix_python: str | None) -> None:
    """Throughput, latency and CPU of Lepton against a plain Faust agent and Quix Streams."""
    from .bench import run_bench

    run_bench(settings, events=events, runs=runs, variants=variants.split(","),
              pipelines=pipelines.split(",") if pipelines else None, json_out=json_out, plot_out=plot_out,
              latency_seconds=latency_seconds, quix_python=quix_python,
              command=" ".join(["lepton", *sys.argv[1:]]))


# --- demo --------------------------------------------------------------------------

@main.command()
@click.option("--duration", type=float, default=None, help="Stop after N seconds (default: until Ctrl-C).")
@click.option("--rate", type=float, default=500.0, show_default=True, help="Transactions per second.")
@click.option("--chat-rate", type=float, default=100.0, show_default=True, help="Chat messages per second.")
@click.option("--sensor-rate", type=float, default=400.0, show_default=True,
              help="Sensor frames per second (20 pumps: 400/s is 20 frames a second each).")
@click.option("--pipelines", "-p", default=None, help="Comma-separated (default: fraud,sentiment,anomaly).")
@click.pass_obj
def demo(settings: Settings, duration: float | None, rate: float, chat_rate: float, sensor_rate: float,
         pipelines: str | None) -> None:
    """Everything on the embedded default: broker, models, generators, worker, live view."""
    from .demo import DEMO_PIPELINES, run_demo

    chosen = [p.strip() for p in pipelines.split(",") if p.strip()] if pipelines else DEMO_PIPELINES
    unknown = sorted(set(chosen) - set(DEMO_PIPELINES))
    if unknown:
        _fail(f"unknown pipeline(s) {unknown}", f"choose among {','.join(DEMO_PIPELINES)}")
    run_demo(settings, duration=duration, rate=rate, chat_rate=chat_rate, sensor_rate=sensor_rate, pipelines=chosen)


if __name__ == "__main__":  # pragma: no cover
    main()

"""``lepton bench``: the same fraud workload done several ways, in one run.

Variants (each a worker process of its own, under a fresh consumer group):

* ``lepton``: ``lepton worker --pipelines fraud``, as shipped (batch path, the fraud
  pipeline's features, ONNX, whatever else it does: alerts, metrics, online learning);
* ``faust``: a plain Faust agent, ``async for`` and one ONNX call and one
  ``await topic.send()`` per event (:mod:`streams.bench.plain_faust`);
* ``quix``: a Quix Streams app, ``app.dataframe(topic).apply(score).to_topic(out)``
  (:mod:`streams.bench.quix_app`; needs ``quixstreams``, the ``bench`` extra:
  ``pip install -e '.[bench]'`` puts it in this interpreter, which is used by
  default; ``--quix-python`` / ``LEPTON_BENCH_QUIX_PYTHON`` names another one;
  without either it is skipped with the reason).

Throughput. The input topic is filled once with N synthetic transactions; the
variants alternate, ``runs`` times each, every run reading all N from the
start; medians are reported. A run is measured after the fact from the
output topic and from samples of the worker's /proc CPU time, so the harness
reads nothing while the variant works:

* events/s from the first to the last output record (their producer
  timestamps): process start-up and the consumer-group join are excluded;
* CPU seconds per 1,000 events over the same span.

Latency. Each variant gets a paced load
(:mod:`streams.bench.load`, event ``ts`` = the time the schedule says it happened;
one record batch per partition every 10 ms, and the wait for it counts as latency) at 50 % of the slowest
variant's median throughput; Lepton also at 50 % of its own. Latency is the
output record's timestamp minus its input's due time (carried in the id);
the first seconds are warm-up and not counted. Each paced load runs ``runs``
times (medians reported), each time with a fresh worker, fresh topics and, on the
embedded broker, a fresh broker (it slows as it accumulates records); each segment
records the worker's CPU use, the load average and how much latency grew through it: on a shared machine these
say whether the rate really was below saturation at that moment.

Other pipelines (sentiment, anomaly): when ``streams.app.PIPELINE_FACTORIES``
has them, their Lepton throughput is measured the same way (``--pipelines``).

The machine is shared and noisy: the ratios between variants measured in the
same run are the figures to trust, not the absolute numbers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..settings import Settings

ROOT = Path(__file__).resolve().parents[2]
FRAUD_VARIANTS = ("lepton", "faust", "quix")
OTHER_PIPELINES = ("sentiment", "anomaly")
LABELS = {"lepton": "Lepton", "faust": "plain Faust", "quix": "Quix Streams"}
QUIX_PYTHON_ENV = "LEPTON_BENCH_QUIX_PYTHON"
TARGETS = {"ratio_vs_faust": 15.0, "ratio_vs_quix": 4.0, "latency_p99_ms": 250.0}
WARMUP_S = 3.0  # the first seconds of a paced load (at most a quarter) are not counted in its latency
STALL_S = 90.0  # a run with no new output for this long has failed
SAMPLE_S = 0.05  # CPU sampling period


class BenchError(RuntimeError):
    """A variant failed or stalled; the message says which and shows its log's tail."""


@dataclass
class RunResult:
    pipeline: str
    variant: str
    run: int
    events: int
    seconds: float
    events_per_s: float
    cpu_s_per_1k: float
    startup_s: float  # process start to its first output (not part of events/s)


@dataclass
class LatencyResult:
    variant: str
    basis: str
    target_rate_per_s: float
    achieved_rate_per_s: float
    events: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    # Context, because the machine is shared: the worker's CPU use during the segment (cores),
    # the 1-minute load average at its start and end, and how much the median latency grew
    # from the first to the last quarter of the counted events (a large value: the worker
    # fell behind, i.e. the rate was not below saturation at that moment).
    worker_cpu_cores: float = float("nan")
    loadavg_start: float = float("nan")
    loadavg_end: float = float("nan")
    backlog_growth_ms: float = float("nan")


# --- variants --------------------------------------------------------------------------------

def _python_has(python: str, module: str) -> bool:
    check = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    try:
        return subprocess.run([python, "-c", check], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def quix_interpreter(quix_python: str | None = None) -> tuple[str | None, str | None]:
    """(python to run the Quix variant with, None) or (None, why it cannot run)."""
    explicit = quix_python or os.environ.get(QUIX_PYTHON_ENV)
    if explicit:
        if _python_has(explicit, "quixstreams"):
            return explicit, None
        return None, f"{explicit} cannot import quixstreams"
    if importlib.util.find_spec("quixstreams") is not None:
        return sys.executable, None
    return None, ("quixstreams is not installed in this environment: install the `bench` extra "
                  f"(pip install -e '.[bench]'), or point --quix-python / {QUIX_PYTHON_ENV} at a Python that has it")


def variant_command(variant: str, pipeline: str, quix_python: str | None = None) -> list[str]:
    if variant == "lepton":
        return [sys.executable, "-m", "streams.cli", "worker", "--pipelines", pipeline]
    if variant == "faust":
        return [sys.executable, "-m", "streams.bench.plain_faust"]
    if variant == "quix":
        python, why = quix_interpreter(quix_python)
        if python is None:
            raise BenchError(why)
        return [python, "-m", "streams.bench.quix_app"]
    raise ValueError(f"unknown variant {variant!r}; available: {list(FRAUD_VARIANTS)}")


# --- helpers ---------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _CpuSampler(threading.Thread):
    """Samples (wall clock, CPU seconds) of a process; ``at(t)`` interpolates."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            cpu = _cpu_seconds(self.pid)
            if cpu is None:
                return
            self.samples.append((time.time(), cpu))
            self._stop_event.wait(SAMPLE_S)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)

    def at(self, t: float) -> float:
        import numpy as np

        if not self.samples:
            return float("nan")
        ts, cpu = zip(*self.samples)
        return float(np.interp(t, ts, cpu))


def _loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def _growth(latencies: list[float]) -> float:
    """Median of the last quarter minus median of the first quarter (ms), in send order.

    >>> _growth([10.0] * 8 + [50.0] * 8)
    40.0
    """
    import numpy as np

    if len(latencies) < 8:
        return float("nan")
    q = len(latencies) // 4
    return float(np.median(latencies[-q:]) - np.median(latencies[:q]))


def _percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} cores{f' ({model})' if model else ''}{mem}, {platform.system()} {platform.machine()}, " \
           f"Python {platform.python_version()}"


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


# --- one benchmark session -------------------------------------------------------------------

@dataclass
class _Session:
    settings: Settings
    bootstrap: str
    prefix: str
    logs: Path
    quix_python: str | None
    echo: Callable[[str], None]
    procs: list[subprocess.Popen] = field(default_factory=list)

    show_progress: bool = True
    tick_ms: float = 10.0  # paced load: one send (a record batch per partition) every tick
    embedded: bool = False  # the session's broker is an embedded one it started

    @contextlib.contextmanager
    def fresh_broker(self) -> Iterator[None]:
        """A new embedded broker for one paced segment (on an embedded session), then the session's again.

        The embedded broker slows as it accumulates records: under the same paced load, a
        bare consumer on one topic went from p99 101 to 320 ms over five 20 s segments, and
        fresh topics and workers on one broker still from 169-265 to 527 ms over six. A
        Kafka cluster does not (it finds offsets through its index), so each latency segment
        gets a broker of its own: what is measured is the variant, not the broker's history.
        """
        if not self.embedded:
            yield
            return
        from connectors.broker import EmbeddedBroker

        outer = self.bootstrap
        with EmbeddedBroker(self.settings) as broker:
            self.bootstrap = broker.bootstrap
            try:
                yield
            finally:
                self.bootstrap = outer

    @contextlib.contextmanager
    def progress(self, what: str, total: int) -> Iterator[Callable[[int], None]]:
        """A transient progress bar of outputs (on stderr) while a variant works."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn(f"    {what}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=Console(stderr=True), transient=True, disable=not self.show_progress) as bar:
            task = bar.add_task(what, total=total)
            yield lambda n: bar.update(task, completed=min(n, total))

    # topics -------------------------------------------------------------------------------
    def topics(self, prefix: str):
        return self.settings.model_copy(update={"topic_prefix": prefix}).topics

    def create_topics(self, prefix: str, pipelines: list[str]) -> None:
        """The topics the variants use (a Lepton worker creates the others it wants)."""
        from connectors.admin import ensure_topics

        topics = self.topics(prefix)
        names = [topics.alerts, topics.dead_letters, topics.model_updates]
        for p in pipelines:
            t = topics.pipeline(p)
            names += [t.input, t.output, t.feedback]
        ensure_topics(self.bootstrap, names, self.settings.partitions, settings=self.settings)

    def end_offsets(self, topic: str) -> dict[int, int]:
        from connectors.admin import topic_offsets

        return topic_offsets(self.bootstrap, [topic], settings=self.settings).get(topic, {})

    def read(self, topic: str, start: dict[int, int], end: dict[int, int], values: bool):
        """Records of ``topic`` in [start, end) per partition: (timestamp ms, value or None)."""
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                 fetch_max_bytes=64 << 20, max_partition_fetch_bytes=32 << 20,
                                 client_id="lepton-bench-reader")
        try:
            todo = {TopicPartition(topic, p): e for p, e in end.items() if e > start.get(p, 0)}
            consumer.assign(list(todo))
            for tp in todo:
                consumer.seek(tp, start.get(tp.partition, 0))
            out: list[tuple[int, bytes | None]] = []
            deadline = time.monotonic() + 120
            while todo and time.monotonic() < deadline:
                for tp, records in consumer.poll(timeout_ms=1000, max_records=200_000).items():
                    stop = todo.get(tp)
                    if stop is None:
                        continue
                    for r in records:
                        if r.offset < stop:
                            out.append((r.timestamp, r.value if values else None))
                    if records and records[-1].offset + 1 >= stop:
                        del todo[tp]
                        consumer.pause(tp)
            if todo:
                raise BenchError(f"could not read {topic} to its end offsets {end}")
            return out
        finally:
            consumer.close()

    # processes ----------------------------------------------------------------------------
    def start(self, variant: str, pipeline: str, prefix: str, tag: str,
              env_extra: dict[str, str] | None = None, code: Path | None = None) -> tuple[subprocess.Popen, Path]:
        """Start a variant's process; ``code``: the checkout whose code it runs (default: this one)."""
        root = Path(code).resolve() if code is not None else ROOT
        env = dict(
            os.environ,
            LEPTON_KAFKA_BOOTSTRAP=self.bootstrap,
            LEPTON_TOPIC_PREFIX=prefix,
            LEPTON_APP_ID=f"bench-{tag}-{int(time.time() * 1000)}",
            LEPTON_METRICS_PORT=str(_free_port()),
            LEPTON_HOME=str(self.settings.home.resolve()),
            LEPTON_PARTITIONS=str(self.settings.partitions),
            LEPTON_SESSION_TIMEOUT_S=str(self.settings.session_timeout_s),
            LEPTON_HEARTBEAT_INTERVAL_S=str(self.settings.heartbeat_interval_s),
            LEPTON_LOG_LEVEL="WARNING",
            PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
        )
        env.update(env_extra or {})
        log = self.logs / f"{tag}.log"
        cmd = variant_command(variant, pipeline, self.quix_python)
        proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
        self.procs.append(proc)
        return proc, log

    def stop(self, proc: subprocess.Popen, wait: bool = False) -> None:
        """SIGTERM; the process shuts down in the background (``stop_all`` waits for all)."""
        if proc.poll() is None:
            proc.terminate()

        def reap() -> None:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

        if wait:
            reap()
            if proc in self.procs:
                self.procs.remove(proc)
        else:
            threading.Thread(target=reap, daemon=True).start()

    def stop_all(self) -> None:
        for proc in list(self.procs):
            self.stop(proc, wait=True)

    @staticmethod
    def tail(log: Path, n: int = 3000) -> str:
        try:
            return log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def wait_outputs(self, proc: subprocess.Popen, log: Path, topic: str, start: dict[int, int], expected: int,
                     what: str, stall_s: float = STALL_S, poll_s: float = 1.0) -> dict[int, int]:
        """Poll the output topic's end offsets until ``expected`` new records; return the end offsets.

        Rarely: each poll is a short-lived client, and the timing comes from the records, not from here.
        """
        end: dict[int, int] = {}
        with self.progress(what, expected) as update:
            def outputs() -> tuple[bool, int, str]:
                end.update(self.end_offsets(topic))
                count = sum(e - start.get(p, 0) for p, e in end.items())
                update(count)
                return count >= expected, count, f"{count:,}/{expected:,} outputs"

            self.wait_progress(proc, log, what, outputs, stall_s, poll_s)
        return end

    def wait_progress(self, proc: subprocess.Popen, log: Path, what: str, probe: Callable[[], tuple[bool, Any, str]],
                      stall_s: float = STALL_S, poll_s: float = 1.0) -> None:
        """Call ``probe`` (→ done, a progress value, a description) until done; fail when the process
        exits or the progress value stays the same for ``stall_s``."""
        seen, last_change = None, time.monotonic()
        while True:
            done, progress, state = probe()
            if done:
                return
            if progress != seen:
                seen, last_change = progress, time.monotonic()
            if proc.poll() is not None:
                raise BenchError(f"{what}: the process exited ({proc.returncode}) at {state}; log {log}:\n"
                                 f"{self.tail(log)}")
            if time.monotonic() - last_change > stall_s:
                raise BenchError(f"{what}: no progress for {stall_s:.0f}s at {state}; log {log}:\n{self.tail(log)}")
            time.sleep(poll_s)

    # throughput ---------------------------------------------------------------------------
    def throughput(self, pipeline: str, variant: str, run: int, expected: int) -> RunResult:
        out_topic = self.topics(self.prefix).pipeline(pipeline).output
        start = self.end_offsets(out_topic)
        tag = f"{pipeline}-{variant}-run{run}"
        launched = time.time()
        proc, log = self.start(variant, pipeline, self.prefix, tag)
        sampler = _CpuSampler(proc.pid)
        sampler.start()
        try:
            end = self.wait_outputs(proc, log, out_topic, start, expected, f"{variant} ({pipeline}, run {run + 1})")
            time.sleep(2 * SAMPLE_S)
        finally:
            sampler.stop()
            self.stop(proc)
        stamps = [ts for ts, _ in self.read(out_topic, start, end, values=False)]
        first, last = min(stamps) / 1000.0, max(stamps) / 1000.0
        span = max(last - first, 1e-3)
        cpu = sampler.at(last) - sampler.at(first)
        n = len(stamps)
        return RunResult(pipeline, variant, run, n, span, n / span, cpu / n * 1000.0, first - launched)

    # latency ------------------------------------------------------------------------------
    def latency(self, variant: str, segments: list[tuple[float, str]], seconds: float, k: int,
                report: Callable[[LatencyResult], None] = lambda r: None) -> list[LatencyResult]:
        """A paced load per (rate, basis), one after the other, each with a fresh worker, topics and
        (embedded) broker: see :meth:`fresh_broker`."""
        results = []
        for i, (rate, basis) in enumerate(segments):
            prefix = f"{self.prefix}lat{k}-{i}-{variant}."
            with self.fresh_broker():
                results.append(self._paced_segment(variant, rate, basis, seconds, prefix, i, report))
        return results

    def _paced_segment(self, variant: str, rate: float, basis: str, seconds: float, prefix: str, i: int,
                       report: Callable[[LatencyResult], None]) -> LatencyResult:
        """One paced load on fresh topics, read by a fresh worker of ``variant``."""
        self.create_topics(prefix, ["fraud"])
        topics = self.topics(prefix).pipeline("fraud")
        proc, log = self.start(variant, "fraud", prefix, f"fraud-{variant}-latency{i}")
        try:
            self._await_first_answer(variant, proc, log, topics)
            time.sleep(0.2)
            start = self.end_offsets(topics.output)
            load_start, cpu_start, t_start = _loadavg(), _cpu_seconds(proc.pid), time.time()
            load = subprocess.run(
                [sys.executable, "-m", "streams.bench.load", "--bootstrap", self.bootstrap, "--topic",
                 topics.input, "--pipeline", "fraud", "--rate", str(rate), "--seconds", str(seconds),
                 "--tick-ms", str(self.tick_ms)],
                cwd=ROOT, capture_output=True, text=True, timeout=seconds * 3 + 120,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
            if load.returncode != 0:
                raise BenchError(f"the load generator failed:\n{load.stderr[-3000:]}")
            sent = json.loads(load.stdout)
            end = self.wait_outputs(proc, log, topics.output, start, sent["sent"], f"{variant} (latency)", 60)
            cpu_end, t_end = _cpu_seconds(proc.pid), time.time()
            result = self._latencies(variant, basis, rate, sent, topics.output, start, end, seconds)
            if cpu_start is not None and cpu_end is not None:
                result.worker_cpu_cores = (cpu_end - cpu_start) / max(t_end - t_start, 1e-3)
            result.loadavg_start, result.loadavg_end = load_start, _loadavg()
            report(result)
            return result
        finally:
            self.stop(proc)

    def _await_first_answer(self, variant: str, proc: subprocess.Popen, log: Path, topics: Any) -> None:
        """Probe until the variant answers: its start-up and group join are not latency."""
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=0)
        probes, deadline = 0, time.monotonic() + 180
        try:
            while not sum(self.end_offsets(topics.output).values()):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"{variant} (latency): never answered a probe; log {log}:\n{self.tail(log)}")
                event = {"id": f"probe-{probes}", "ts": time.time(), "card": "card-probe",
                         "merchant": "term-probe", "amount": 10.0, "country": "FR"}
                producer.send(topics.input, key=b"card-probe", value=json.dumps(event).encode())
                producer.flush()
                probes += 1
                time.sleep(0.5)
        finally:
            producer.close()

    def floor(self, rate: float, seconds: float, k: int) -> LatencyResult:
        """The latency floor of this machine at ``rate``: the same paced load, read by a bare consumer.

        No worker, no processing, no output: an aiokafka consumer with the worker's fetch
        settings notes when each record arrives. What it measures (load generator, broker,
        fetch) is part of every variant's latency, so it tells how much of it is the
        environment rather than the variant.
        """
        import asyncio

        import orjson
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from .load import latency_id_time

        prefix = f"{self.prefix}floor{k}."
        self.create_topics(prefix, ["fraud"])
        topic = self.topics(prefix).pipeline("fraud").input
        load_start = _loadavg()

        async def measure() -> tuple[dict[str, Any], list[tuple[float, float]]]:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                        fetch_max_wait_ms=self.settings.max_wait_ms,
                                        max_partition_fetch_bytes=self.settings.fetch_max_bytes,
                                        client_id="lepton-bench-floor")
            await consumer.start()
            try:
                consumer.assign([TopicPartition(topic, q) for q in range(self.settings.partitions)])
                await consumer.seek_to_beginning()
                load = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "streams.bench.load", "--bootstrap", self.bootstrap, "--topic", topic,
                    "--pipeline", "fraud", "--rate", str(rate), "--seconds", str(seconds), "--tick-ms",
                    str(self.tick_ms), cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                    env={**os.environ, "PYTHONPATH": str(ROOT)})
                done = asyncio.ensure_future(load.communicate())
                seen: list[tuple[float, float]] = []
                count, idle_since = 0, None
                while True:
                    batches = await consumer.getmany(timeout_ms=200)
                    now = time.time() * 1000.0
                    for records in batches.values():
                        count += len(records)
                        for r in records:
                            sent_at = latency_id_time(str(orjson.loads(r.value)["id"]))
                            if sent_at is not None:
                                seen.append((sent_at, now - sent_at * 1000.0))
                    if done.done():
                        out, err = done.result()
                        if load.returncode != 0:
                            raise BenchError(f"the load generator failed:\n{err.decode(errors='replace')[-3000:]}")
                        sent = json.loads(out)
                        if count >= sent["sent"]:
                            return sent, seen
                        idle_since = idle_since or time.monotonic()
                        if batches:
                            idle_since = time.monotonic()
                        if time.monotonic() - idle_since > 30:
                            raise BenchError(f"floor: {count:,} of {sent['sent']:,} records read")
            finally:
                await consumer.stop()

        sent, seen = asyncio.run(measure())
        cutoff = sent["started"] + min(WARMUP_S, 0.25 * seconds)
        seen.sort()
        lat = [ms for at, ms in seen if at >= cutoff]
        return LatencyResult("floor", "broker and client alone at 50% of Lepton's max", rate,
                             sent["sent"] / sent["seconds"], len(lat), _percentile(lat, 50), _percentile(lat, 99),
                             max(lat) if lat else float("nan"), loadavg_start=load_start, loadavg_end=_loadavg(),
                             backlog_growth_ms=_growth(lat))

    def _latencies(self, variant: str, basis: str, rate: float, sent: dict[str, Any], topic: str,
                   start: dict[int, int], end: dict[int, int], seconds: float) -> LatencyResult:
        import orjson

        from .load import latency_id_time

        cutoff = sent["started"] + min(WARMUP_S, 0.25 * seconds)
        pairs = []
        for ts_ms, value in self.read(topic, start, end, values=True):
            try:
                sent_at = latency_id_time(str(orjson.loads(value)["id"]))
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
            if sent_at is not None and sent_at >= cutoff:
                pairs.append((sent_at, ts_ms - sent_at * 1000.0))
        pairs.sort()
        lat = [ms for _, ms in pairs]
        return LatencyResult(variant, basis, rate, sent["sent"] / sent["seconds"], len(lat),
                             _percentile(lat, 50), _percentile(lat, 99), max(lat) if lat else float("nan"),
                             backlog_growth_ms=_growth(lat))


# --- models ----------------------------------------------------------------------------------

def _ensure_model(settings: Settings, pipeline: str, echo: Callable[[str], None]) -> str | None:
    """None when ``pipeline`` has a champion (trained here if needed), else why not."""
    from models.registry import ModelRegistry
    from models.train import train_pipeline

    if ModelRegistry(settings.models_dir).champion(pipeline) is not None:
        return None
    echo(f"no {pipeline} model in {settings.models_dir}: training one on synthetic data (once)")
    try:
        train_pipeline(settings, pipeline, progress=True)
    except Exception as exc:  # a trainer that fails must not cost the other pipelines' figures
        return (f"no {pipeline} model, and training one failed ({type(exc).__name__}: {exc}); "
                f"run `lepton train {pipeline}` and look at its error")
    return None


def _available_pipelines(requested: list[str]) -> tuple[list[str], dict[str, str]]:
    from ..app import PIPELINE_FACTORIES

    chosen, skipped = [], {}
    for p in requested:
        if p in PIPELINE_FACTORIES:
            chosen.append(p)
        else:
            skipped[p] = f"no '{p}' pipeline in streams.app.PIPELINE_FACTORIES yet"
    return chosen, skipped


def baseline_features(settings: Settings) -> str:
    """Which features the baselines compute for the registered fraud model (see :mod:`.scoring`)."""
    from models.registry import ModelRegistry

    from .scoring import featurizer_for

    meta = ModelRegistry(settings.models_dir).champion("fraud")
    return featurizer_for(meta.features, meta.extra)[1] if meta is not None else "unknown"


# --- the benchmark ---------------------------------------------------------------------------

def run_bench(
    settings: Settings,
    *,
    events: int,
    runs: int,
    variants: list[str] | None = None,
    pipelines: list[str] | None = None,
    json_out: Path | None = None,
    plot_out: Path | None = None,
    latency_seconds: float = 20.0,
    quix_python: str | None = None,
    command: str | None = None,
    echo: Callable[[str], None] | None = None,
    progress: bool = True,
    latency_variants: list[str] | None = None,
) -> dict[str, Any]:
    """Run the benchmark; print a table; return (and optionally write) the result.

    ``variants``: fraud variants (default all three; one that cannot run here is
    skipped, with the reason in ``skipped``). ``pipelines``: default fraud plus
    the other pipelines that exist. ``latency_seconds`` = 0 skips latency;
    ``latency_variants`` limits it to some variants (default: all measured).
    """
    import logging

    echo = echo or (lambda msg: print(msg, file=sys.stderr, flush=True))
    chatty = [logging.getLogger(name) for name in ("kafka", "connectors.admin", "aiokafka")]
    levels = [logger.level for logger in chatty]
    for logger in chatty:  # the harness's own short-lived clients
        logger.setLevel(logging.CRITICAL)
    try:
        return _run(settings, events, runs, variants, pipelines, json_out, plot_out, latency_seconds, quix_python,
                    command, echo, progress, latency_variants)
    finally:
        for logger, level in zip(chatty, levels):
            logger.setLevel(level)


def _run(settings: Settings, events: int, runs: int, variants: list[str] | None, pipelines: list[str] | None,
         json_out: Path | None, plot_out: Path | None, latency_seconds: float, quix_python: str | None,
         command: str | None, echo: Callable[[str], None], progress: bool,
         latency_variants: list[str] | None) -> dict[str, Any]:
    from ..kafka_session import kafka, starts_embedded_broker
    from .load import prefill

    variants = list(variants or FRAUD_VARIANTS)
    unknown = set(variants) - set(FRAUD_VARIANTS)
    if unknown:
        raise ValueError(f"unknown variant(s) {sorted(unknown)}; available: {list(FRAUD_VARIANTS)}")
    if settings.kafka_security_protocol != "PLAINTEXT":
        raise ValueError("lepton bench runs on the embedded broker or a plaintext cluster")
    settings = settings.model_copy(update={"home": settings.home.resolve()})
    skipped: dict[str, str] = {}
    if "quix" in variants:
        python, why = quix_interpreter(quix_python)
        if python is None:
            skipped["quix"] = why
            variants.remove("quix")
            echo(f"skipping quix: {why}")
        else:
            quix_python = python
    requested = pipelines if pipelines is not None else ["fraud", *OTHER_PIPELINES]
    chosen, not_there = _available_pipelines(requested)
    skipped.update(not_there if pipelines is not None else {})
    for p in list(chosen):
        why = _ensure_model(settings, p, echo)
        if why:
            skipped[p] = why
            chosen.remove(p)
    workloads = [(p, v) for p in chosen for v in (variants if p == "fraud" else ["lepton"])]
    if not workloads:
        raise ValueError(f"nothing to measure: {skipped}")

    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    load_start = _loadavg()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = settings.home / "bench" / stamp
    logs.mkdir(parents=True, exist_ok=True)
    results: list[RunResult] = []
    latencies: list[LatencyResult] = []
    embedded = starts_embedded_broker(settings)
    with kafka(settings, create_topics=False) as bootstrap:
        session = _Session(settings, bootstrap, f"{settings.topic_prefix}bench{stamp}.", logs, quix_python, echo,
                           show_progress=progress, embedded=embedded)
        try:
            session.create_topics(session.prefix, chosen)
            for p in chosen:
                topic = session.topics(session.prefix).pipeline(p).input
                t0 = time.monotonic()
                prefill(bootstrap, topic, p, events)
                echo(f"prefilled {topic} with {events:,} events in {time.monotonic() - t0:.1f}s")
            for run in range(runs):
                for p, v in workloads:
                    r = session.throughput(p, v, run, events)
                    results.append(r)
                    echo(f"  run {run + 1}/{runs} {p:<9} {v:<7} {r.events_per_s:>10,.0f} events/s  "
                         f"{r.cpu_s_per_1k:6.3f} CPU s/1k events  (first output {r.startup_s:.1f}s after start)")
            medians = {v: statistics.median(r.events_per_s for r in results if r.pipeline == "fraud" and r.variant == v)
                       for p, v in workloads if p == "fraud"}
            if latency_seconds > 0 and medians:
                slowest = min(medians.values())
                plan = {v: [(0.5 * slowest, "50% of the slowest variant's max")] for v in medians
                        if latency_variants is None or v in latency_variants}
                if "lepton" in plan:
                    plan["lepton"].append((0.5 * medians["lepton"], "50% of Lepton's max"))
                # Each paced load ``runs`` times (its bases alternating), medians reported: one
                # segment's p99 says more about the machine's other load at that moment.
                plan = {v: segments * runs for v, segments in plan.items()}

                def report(lr: LatencyResult) -> None:
                    echo(f"  latency {lr.variant:<7} at {lr.achieved_rate_per_s:>8,.0f} events/s ({lr.basis}): "
                         f"p50 {lr.p50_ms:,.1f} ms  p99 {lr.p99_ms:,.1f} ms  ({lr.events:,} events counted)")

                for k, (v, segments) in enumerate(plan.items()):
                    latencies += session.latency(v, segments, latency_seconds, k, report)
                if "lepton" in medians:
                    for k in range(runs):
                        with session.fresh_broker():  # as each variant's segment has
                            lr = session.floor(0.5 * medians["lepton"], latency_seconds, k)
                        echo(f"  latency floor (load generator, broker and a bare consumer) at "
                             f"{lr.achieved_rate_per_s:,.0f} events/s: p50 {lr.p50_ms:,.1f} ms  p99 {lr.p99_ms:,.1f} ms")
                        latencies.append(lr)
        finally:
            session.stop_all()

    summary = _summarize(settings, events, runs, workloads, results, latencies, skipped)
    summary.update(started=started, command=command, revision=_git_revision(), logs=str(logs),
                   latency_seconds=latency_seconds, warmup_s=WARMUP_S,
                   loadavg={"start": load_start, "end": _loadavg()})
    print_table(summary)
    if json_out is not None:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(_finite(summary), indent=2))
    if plot_out is not None:
        from .chart import plot

        plot(summary, Path(plot_out))
    return summary


def _finite(value: Any) -> Any:
    """``value`` with NaN/inf floats as None (strict JSON has no NaN).

    >>> _finite({"a": [1.0, float("nan")], "b": {"c": float("inf")}})
    {'a': [1.0, None], 'b': {'c': None}}
    """
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _median_latency(segments: list[LatencyResult]) -> dict[str, float] | None:
    """Medians over the repeated segments of one (variant, basis): rate, p50, p99.

    >>> r = [LatencyResult("lepton", "b", 100, rate, 1, p50, p99, p99) for rate, p50, p99 in
    ...      ((99, 10, 40), (100, 12, 300), (98, 11, 50))]
    >>> _median_latency(r)
    {'rate': 99, 'p50': 11, 'p99': 50}
    >>> _median_latency([]) is None
    True
    """
    if not segments:
        return None
    return {"rate": statistics.median(s.achieved_rate_per_s for s in segments),
            "p50": statistics.median(s.p50_ms for s in segments),
            "p99": statistics.median(s.p99_ms for s in segments)}


def _summarize(settings: Settings, events: int, runs: int, workloads: list[tuple[str, str]],
               results: list[RunResult], latencies: list[LatencyResult], skipped: dict[str, str]) -> dict[str, Any]:
    features = baseline_features(settings) if any(v != "lepton" for _, v in workloads) else None
    summary: dict[str, Any] = {"events": events, "runs": runs, "machine": _machine(), "partitions": settings.partitions,
                               "variants": {}, "ratio_vs_faust": None, "ratio_vs_quix": None}
    for p, v in workloads:
        mine = [r for r in results if r.pipeline == p and r.variant == v]
        entry = {
            "label": LABELS[v],
            "pipeline": p,
            "events_per_s": statistics.median(r.events_per_s for r in mine),
            "cpu_s_per_1k": statistics.median(r.cpu_s_per_1k for r in mine),
            "runs": [asdict(r) for r in mine],
        }
        if p != "fraud":
            summary.setdefault("pipelines", {})[p] = entry
            continue
        entry["work"] = ("as shipped: `lepton worker --pipelines fraud`" if v == "lepton"
                         else f"per event: validation, {features} features, one ONNX call, one output")
        own = _median_latency([lr for lr in latencies if lr.variant == v and lr.basis.startswith("50% of the slowest")])
        if own:
            entry.update(latency_rate_per_s=own["rate"], latency_p50_ms=own["p50"], latency_p99_ms=own["p99"])
        if v == "lepton":
            half = _median_latency([lr for lr in latencies if lr.variant == v and lr.basis == "50% of Lepton's max"])
            if half:
                entry.update(latency_at_half_max_rate_per_s=half["rate"], latency_at_half_max_p50_ms=half["p50"],
                             latency_at_half_max_p99_ms=half["p99"])
        summary["variants"][v] = entry
    lepton = summary["variants"].get("lepton")
    if lepton:
        for other in ("faust", "quix"):
            if other in summary["variants"]:
                summary[f"ratio_vs_{other}"] = lepton["events_per_s"] / summary["variants"][other]["events_per_s"]
    summary["latency"] = [asdict(lr) for lr in latencies]
    floor = _median_latency([lr for lr in latencies if lr.variant == "floor"])
    summary["latency_floor"] = ({"rate_per_s": floor["rate"], "p50_ms": floor["p50"], "p99_ms": floor["p99"]}
                                if floor else None)
    targets: dict[str, Any] = {}
    for key in ("ratio_vs_faust", "ratio_vs_quix"):
        if summary[key] is not None:
            targets[f"events_per_s_{key}"] = {"target": TARGETS[key], "measured": summary[key],
                                              "met": summary[key] >= TARGETS[key]}
    if lepton and "latency_at_half_max_p99_ms" in lepton:
        p99 = lepton["latency_at_half_max_p99_ms"]
        targets["latency_p99_ms_at_half_lepton_max"] = {"target": TARGETS["latency_p99_ms"], "measured": p99,
                                                        "met": p99 <= TARGETS["latency_p99_ms"]}
    summary["targets"] = targets
    summary["skipped"] = skipped
    return summary


def print_table(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=110)
    table = Table(title=f"{summary['events']:,} events per pipeline, median of {summary['runs']} run(s)",
                  caption=summary["machine"])
    table.add_column("variant", no_wrap=True)
    for col in ("events/s", "Lepton ×", "CPU s/1k ev", "latency in/s", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right", no_wrap=True)
    lepton = summary["variants"].get("lepton")

    def num(v: Any, fmt: str) -> str:
        return "–" if v is None else format(v, fmt)

    for name, v in summary["variants"].items():
        ratio = lepton["events_per_s"] / v["events_per_s"] if lepton and name != "lepton" else None
        table.add_row(v["label"], f"{v['events_per_s']:,.0f}", num(ratio, ".1f"), f"{v['cpu_s_per_1k']:.3f}",
                      num(v.get("latency_rate_per_s"), ",.0f"), num(v.get("latency_p50_ms"), ",.1f"),
                      num(v.get("latency_p99_ms"), ",.1f"))
    if lepton and "latency_at_half_max_p99_ms" in lepton:
        table.add_row("Lepton @ 50% own max", "", "", "", f"{lepton['latency_at_half_max_rate_per_s']:,.0f}",
                      f"{lepton['latency_at_half_max_p50_ms']:,.1f}", f"{lepton['latency_at_half_max_p99_ms']:,.1f}")
    floor = summary.get("latency_floor")
    if floor:
        table.add_row("floor: broker + bare consumer", "", "", "", f"{floor['rate_per_s']:,.0f}",
                      f"{floor['p50_ms']:,.1f}", f"{floor['p99_ms']:,.1f}")
    for p, v in summary.get("pipelines", {}).items():
        table.add_row(f"Lepton {p}", f"{v['events_per_s']:,.0f}", "", f"{v['cpu_s_per_1k']:.3f}", "", "", "")
    console.print(table)
    for name, t in summary.get("targets", {}).items():
        console.print(f"{name}: {t['measured']:,.1f} (target {t['target']:g}) "
                      f"{'[green]met[/green]' if t['met'] else '[red]missed[/red]'}")
    for name, why in summary.get("skipped", {}).items():
        console.print(f"[yellow]skipped {name}[/yellow]: {why}")

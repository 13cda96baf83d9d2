"""Settings → Kafka client configuration, in one place.

Every Kafka client Lepton builds (kafka-python for admin, producing and tests;
Faust/aiokafka for the worker) takes its connection settings from here, so a
SASL/TLS cluster is configured once, through ``LEPTON_KAFKA_*``.

Security settings belong to the external cluster named by
``LEPTON_KAFKA_BOOTSTRAP``. The embedded broker is always plaintext on
127.0.0.1, so they are not applied to it.

>>> from streams.settings import Settings, get_settings
>>> kafka_python_config(Settings(kafka_bootstrap="k:9092", kafka_security_protocol="SASL_SSL",
...                              kafka_sasl_mechanism="PLAIN", kafka_sasl_username="u",
...                              kafka_sasl_password="p"))  # doctest: +NORMALIZE_WHITESPACE
{'bootstrap_servers': 'k:9092', 'security_protocol': 'SASL_SSL', 'sasl_mechanism': 'PLAIN',
 'sasl_plain_username': 'u', 'sasl_plain_password': 'p'}
>>> kafka_python_config(Settings(), "127.0.0.1:9092")
{'bootstrap_servers': '127.0.0.1:9092', 'security_protocol': 'PLAINTEXT'}
"""

from __future__ import annotations

import logging
import ssl
import time
from typing import Any

from faust.auth import SASLCredentials, SSLCredentials
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from streams.settings import Settings, get_settings

log = logging.getLogger(__name__)

ENV_BOOTSTRAP = "LEPTON_KAFKA_BOOTSTRAP"  # the name users see in error messages


def _is_external(settings: Settings, bootstrap: str | None) -> bool:
    """True when ``bootstrap`` is the cluster named by LEPTON_KAFKA_BOOTSTRAP."""
    return bool(settings.kafka_bootstrap) and bootstrap in (None, settings.kafka_bootstrap)


def kafka_python_config(settings: Settings, bootstrap: str | None = None) -> dict[str, Any]:
    """kafka-python keyword arguments (admin, producer, consumer) for ``bootstrap``.

    ``bootstrap`` defaults to ``settings.kafka_bootstrap``. Only the options that
    are set appear, so the result can be merged into any client's kwargs.
    """
    servers = bootstrap or settings.kafka_bootstrap
    if not servers:
        raise ValueError("no bootstrap address: start the embedded broker or set " + ENV_BOOTSTRAP)
    config: dict[str, Any] = {"bootstrap_servers": servers}
    if not _is_external(settings, bootstrap):
        config["security_protocol"] = "PLAINTEXT"
        return config
    config["security_protocol"] = settings.kafka_security_protocol
    optional = {
        "sasl_mechanism": settings.kafka_sasl_mechanism,
        "sasl_plain_username": settings.kafka_sasl_username,
        "sasl_plain_password": settings.kafka_sasl_password,
        "ssl_cafile": settings.kafka_ssl_cafile,
        "ssl_certfile": settings.kafka_ssl_certfile,
        "ssl_keyfile": settings.kafka_ssl_keyfile,
    }
    for key, value in optional.items():
        if value is not None:
            config[key] = str(value)
    return config


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    if settings.kafka_ssl_certfile:
        keyfile = str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None
        context.load_cert_chain(str(settings.kafka_ssl_certfile), keyfile)
    return context


def faust_broker_credentials(settings: Settings) -> SASLCredentials | SSLCredentials | None:
    """Faust's ``broker_credentials`` for the external cluster; None for plaintext or embedded.

    The SSL context is always built here: ``faust.SSLCredentials()`` without an
    explicit context fails in faust-streaming 0.15.3 (it passes ``purpose=None``).
    """
    protocol = settings.kafka_security_protocol
    if not settings.kafka_bootstrap or protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return SSLCredentials(_ssl_context(settings))
    return SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password,
        mechanism=settings.kafka_sasl_mechanism or "PLAIN",
        ssl_context=_ssl_context(settings) if protocol == "SASL_SSL" else None,
    )


class BrokerUnreachable(Exception):
    """No Kafka round trip succeeded: says which setting gave the address and how to fix it."""

    def __init__(
        self, bootstrap: str, timeout_s: float, cause: str = "", *, external: bool = True, log: str | None = None
    ) -> None:
        self.bootstrap = bootstrap
        self.external = external
        self.cause = cause
        if external:
            where = f"the Kafka cluster at {bootstrap} (from {ENV_BOOTSTRAP})"
            fix = (
                f"Check the address and that the cluster is up (and the LEPTON_KAFKA_SECURITY_PROTOCOL/"
                f"SASL/SSL settings), or unset {ENV_BOOTSTRAP} to use the embedded broker."
            )
        else:
            where = f"the embedded broker at {bootstrap}"
            fix = (
                f"See {log or 'broker.log under LEPTON_HOME'}; set LEPTON_BROKER_PORT=0 to pick a free port, "
                f"or set {ENV_BOOTSTRAP} to use an external cluster."
            )
        detail = f": {cause}" if cause else ""
        super().__init__(f"Cannot reach {where} within {timeout_s:g} s{detail}. {fix}")


def wait_for_broker(
    bootstrap: str, timeout_s: float, settings: Settings | None = None, *, external: bool | None = None
) -> float:
    """Block until a Kafka round trip (ApiVersions + Metadata) to ``bootstrap`` succeeds.

    Returns the seconds it took; raises :class:`BrokerUnreachable` after ``timeout_s``.
    ``external`` (default: ``bootstrap`` is LEPTON_KAFKA_BOOTSTRAP) only picks the wording.
    """
    settings = settings or get_settings()
    if external is None:
        external = _is_external(settings, bootstrap)
    config = kafka_python_config(settings, bootstrap)
    start = time.monotonic()
    deadline = start + timeout_s
    cause = ""
    while True:
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0:
            raise BrokerUnreachable(bootstrap, timeout_s, cause, external=external)
        try:
            admin = KafkaAdminClient(
                **config,
                client_id="lepton-probe",
                bootstrap_timeout_ms=max(remaining_ms, 100),
                request_timeout_ms=max(min(remaining_ms, 10_000), 100),
                reconnect_backoff_ms=20,
                reconnect_backoff_max_ms=200,
            )
            try:
                admin.describe_cluster()
            finally:
                admin.close()
            return time.monotonic() - start
        except (KafkaError, OSError) as exc:
            cause = f"{type(exc).__name__}: {exc}"
            log.debug("broker %s not ready yet: %s", bootstrap, cause)
            time.sleep(0.05)

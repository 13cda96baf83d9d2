"""HTTP endpoints on Faust's own web server: /metrics, /healthz, /ready."""

from __future__ import annotations

from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .health import Health
from .metrics import REGISTRY


def register(app: faust.App, health: Health) -> None:
    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        response = web.bytes(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST.split(";")[0])
        return response

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        stalled = health.stalled()
        if stalled:
            return web.json({"status": "stalled", "partitions": stalled}, status=503)
        return web.json({"status": "ok"})

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        ok, why = health.ready()
        return web.json({"status": why}, status=200 if ok else 503)

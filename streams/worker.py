"""Run a Faust worker process for the configured pipelines."""

from __future__ import annotations

import logging

import faust

from .app import create_app
from .gc_pauses import freeze_long_lived
from .kafka_session import kafka
from .settings import Settings

log = logging.getLogger(__name__)


def run_worker(settings: Settings) -> None:
    """Blocks until SIGINT/SIGTERM; Faust commits what is processed, then stops."""
    from models.registry import ModelRegistry
    from models.train import train_pipeline

    registry = ModelRegistry(settings.models_dir)
    for name in settings.pipelines:
        if registry.champion(name) is None:
            log.warning("no %s model registered: training one on synthetic data first", name)
            train_pipeline(settings, name, progress=True)
    with kafka(settings) as bootstrap:
        runtime = create_app(settings, bootstrap)
        # models loaded, modules imported: none of it will become garbage
        freeze_long_lived(settings.gc_young_threshold)
        w = faust.Worker(runtime.app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
        try:
            w.execute_from_commandline()
        except SystemExit:
            pass

"""The ONNX model: an autoencoder of normal deviations, returning each sensor's reconstruction error.

Input: the standardized deviations of one frame (:mod:`.features`), one column
per sensor the model was trained on. A narrow bottleneck (a third of the
sensors) forces it to keep only the structure normal operation shares across
sensors (for example current and flow moving together with the load); what it
cannot reconstruct is unusual. Output: per-sensor squared error divided by its
mean on the training data, so that every sensor contributes about 1 in normal
operation and the pipeline can both sum the errors into a score and name the
sensors that carry it. The clipping of inputs is part of the graph, so training
and serving cannot disagree about it.

An ensemble (:class:`AutoencoderEnsemble`, ``anomaly_ensemble_members`` > 1)
averages the normalized errors of K autoencoders trained from different random
initializations: one model's errors depend on its init (SKAB F1 0.77-0.82 by
seed with one), their mean much less. It is exported as one graph with the same
input and output, so the worker still makes one call per micro-batch.

torch is imported here and in training only; workers run the exported graph.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

INPUT_NAME = "deviations"
OUTPUT_NAME = "contributions"


class DeviationAutoencoder(nn.Module):
    """``(n, sensors)`` deviations → ``(n, sensors)`` normalized squared reconstruction errors."""

    def __init__(self, n_sensors: int, *, hidden: int = 32, bottleneck: int | None = None, clip: float = 20.0) -> None:
        super().__init__()
        if n_sensors < 2:
            raise ValueError("an autoencoder needs at least 2 sensors; single-sensor equipment is scored "
                             "by its deviation alone")
        bottleneck = bottleneck or max(1, n_sensors // 3)
        self.clip = float(clip)
        self.encoder = nn.Sequential(nn.Linear(n_sensors, hidden), nn.Tanh(), nn.Linear(hidden, bottleneck), nn.Tanh())
        self.decoder = nn.Sequential(nn.Linear(bottleneck, hidden), nn.Tanh(), nn.Linear(hidden, n_sensors))
        self.register_buffer("error_scale", torch.ones(n_sensors))

    def squared_errors(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.clamp(x, -self.clip, self.clip)
        return (self.decoder(self.encoder(x)) - x) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.squared_errors(x) / self.error_scale


def train_autoencoder(x: np.ndarray, *, epochs: int = 30, batch_size: int = 256, lr: float = 2e-3, seed: int = 0,
                      clip: float = 20.0, scale_rows: np.ndarray | None = None,
                      progress: Callable[[int, float], None] | None = None) -> DeviationAutoencoder:
    """Fit on normal deviations ``x``; set ``error_scale`` so that ``scale_rows`` (default: ``x``) average 1 per sensor.

    ``scale_rows`` should be normal frames seen *after* a warm-up, the regime the
    model serves in: warm-up rows are standardized in-sample, so a sensor that
    drifts in normal operation (a temperature) looks steadier there than it is.

    Deterministic for a ``seed``; one torch thread (workers share the machine); the
    caller's torch RNG and thread count are restored.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) < 10:
        raise ValueError(f"need at least 10 rows of (rows, sensors) deviations, got shape {x.shape}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = DeviationAutoencoder(x.shape[1], clip=clip)
            xs = torch.from_numpy(x)
            opt = torch.optim.Adam(model.parameters(), lr=lr)
            shuffle = torch.Generator().manual_seed(seed)
            model.train()
            for epoch in range(1, epochs + 1):
                total = 0.0
                for idx in torch.randperm(len(xs), generator=shuffle).split(batch_size):
                    opt.zero_grad(set_to_none=True)
                    loss = model.squared_errors(xs[idx]).mean()
                    loss.backward()
                    opt.step()
                    total += loss.item() * len(idx)
                if progress is not None:
                    progress(epoch, total / len(xs))
            model.eval()
            ref = xs if scale_rows is None else torch.from_numpy(np.asarray(scale_rows, dtype=np.float32))
            with torch.no_grad():
                scale = model.squared_errors(ref).mean(dim=0)
            model.error_scale.copy_(torch.clamp(scale, min=1e-3))
    finally:
        torch.set_num_threads(threads)
    return model


class AutoencoderEnsemble(nn.Module):
    """The mean of its members' outputs: each sensor still contributes about 1 in normal operation."""

    def __init__(self, members: list[DeviationAutoencoder]) -> None:
        super().__init__()
        if not members or len({m.error_scale.shape[0] for m in members}) != 1:
            raise ValueError("an ensemble needs at least one member, all over the same sensors")
        self.members = nn.ModuleList(members)
        self.register_buffer("error_scale", torch.ones(members[0].error_scale.shape[0]))  # the width export reads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)


MEMBER_SEED_STRIDE = 1000  # member i of seed s is seeded s + 1000 i: seeds 0..999 never share a member


def member_seeds(seed: int, members: int) -> list[int]:
    """Member 0 is the single model of the same seed, so ``members=1`` changes nothing.

    >>> member_seeds(2, 3)
    [2, 1002, 2002]
    """
    return [seed + MEMBER_SEED_STRIDE * i for i in range(members)]


def train_ensemble(x: np.ndarray, *, members: int = 1, epochs: int = 30, seed: int = 0, clip: float = 20.0,
                   scale_rows: np.ndarray | None = None,
                   progress: Callable[[int, float], None] | None = None) -> DeviationAutoencoder | AutoencoderEnsemble:
    """``members`` autoencoders (:func:`train_autoencoder`, same data, seeds :func:`member_seeds`); a single one is
    returned as it is. ``progress(step, loss)`` counts epochs over all members (``members * epochs`` steps)."""
    if members < 1:
        raise ValueError(f"members must be >= 1, got {members}")
    fitted = []
    for i, s in enumerate(member_seeds(seed, members)):
        def report(epoch: int, loss: float, done: int = i * epochs) -> None:
            if progress is not None:
                progress(done + epoch, loss)

        fitted.append(train_autoencoder(x, epochs=epochs, seed=s, clip=clip, scale_rows=scale_rows, progress=report))
    return fitted[0] if members == 1 else AutoencoderEnsemble(fitted)


def export(model: DeviationAutoencoder | AutoencoderEnsemble) -> bytes:
    """ONNX bytes (dynamic batch), checked against torch by :func:`models.training.export_onnx`."""
    from models.training import export_onnx

    n = model.error_scale.shape[0]
    return export_onnx(model, n, input_name=INPUT_NAME, output_name=OUTPUT_NAME)

"""Gatys et al. (2015) style transfer: optimise one image's pixels against the same losses the
fast nets are trained with. Slow (seconds per step on a CPU) but the quality reference."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch

from pipeline.style.losses import LossWeights, StyleLosses, Vgg16Features, read_vgg16_weights
from pipeline.style.train import to_tensor

__all__ = ["GatysResult", "GatysSettings", "gatys_stylize"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GatysSettings:
    """Optimisation settings: Adam on the pixels (0-255 scale), starting from the content."""

    steps: int = 100
    learning_rate: float = 8.0
    weights: LossWeights = field(default_factory=LossWeights)  # the fast nets' training weights
    threads: int = 0  # torch CPU threads (0 keeps torch's default)
    log_every: int = 10


@dataclass(frozen=True, slots=True)
class GatysResult:
    """The stylized image (BGR uint8 (H, W, 3)) and its final unweighted losses."""

    image: npt.NDArray[np.uint8]
    losses: dict[str, float]
    seconds: float


def gatys_stylize(
    content: npt.NDArray[np.uint8],
    style: npt.NDArray[np.uint8],
    settings: GatysSettings,
    network: Vgg16Features | None = None,
) -> GatysResult:
    """Stylize BGR uint8 ``content`` in the manner of BGR uint8 ``style``.

    ``network``: a loaded loss network to reuse across calls (None: read it now).
    """
    started = time.monotonic()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    network = network if network is not None else Vgg16Features(read_vgg16_weights()).eval()
    losses = StyleLosses(network, to_tensor(style), settings.weights)
    content_tensor = to_tensor(content)
    target = losses.content_targets(content_tensor)
    pixels = content_tensor.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([pixels], lr=settings.learning_rate)
    for step in range(1, settings.steps + 1):
        optimizer.zero_grad()
        terms = losses(pixels, target)
        terms.total.backward()  # type: ignore[no-untyped-call]  # unannotated in torch
        optimizer.step()
        with torch.no_grad():
            pixels.clamp_(0.0, 255.0)
        if step % settings.log_every == 0:
            _log.info(
                "gatys step %d/%d total %.4g", step, settings.steps, float(terms.total.detach())
            )
    with torch.no_grad():
        final = losses(pixels, target)
    weights = settings.weights
    result = {
        "content": float(final.content) / weights.content if weights.content else 0.0,
        "style": float(final.style) / weights.style if weights.style else 0.0,
        "total_variation": float(final.total_variation) / weights.total_variation
        if weights.total_variation
        else 0.0,
    }
    image = pixels.detach()[0].permute(1, 2, 0).round().to(torch.uint8).numpy()
    return GatysResult(np.ascontiguousarray(image), result, time.monotonic() - started)

"""ROC and DET plots (PNG) of a calibration run, drawn with matplotlib's Agg canvas.

No pyplot: a ``Figure`` with its own ``FigureCanvasAgg`` keeps no process-wide state and needs
no display. Both plots use log-scaled FAR, where door-access operating points live (0.1 % and
below); the DET plot shows FRR against FAR on log axes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from calibration.roc import roc_curve
from calibration.threshold import PipelineResult
from engines.store import atomic_write

__all__ = ["write_det_plot", "write_roc_plot"]

_DPI = 110
_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def _label(result: PipelineResult) -> str:
    return f"{result.pipeline} ({result.condition}) AUC {result.auc:.4f} EER {result.eer:.2%}"


def _draw(
    axes: Axes,
    result: PipelineResult,
    points: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]],
    conditions: list[str],
) -> None:
    """One curve: a colour per condition, solid for facestream and dashed for the baseline."""
    if result.condition not in conditions:
        conditions.append(result.condition)
    colour = _COLOURS[conditions.index(result.condition) % len(_COLOURS)]
    style = "-" if result.pipeline == "facestream" else "--"
    axes.plot(points[0], points[1], color=colour, linestyle=style, label=_label(result))


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)  # attaches itself to the figure: rendering without pyplot
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    atomic_write(path, buffer.getvalue())
    return path


def write_roc_plot(
    results: Sequence[PipelineResult], path: Path, *, target_far: float, floor_far: float
) -> Path:
    """TAR against FAR (log axis from ``floor_far``) for each result; a line at ``target_far``."""
    figure = Figure(figsize=(7, 5))
    axes = figure.add_subplot()
    conditions: list[str] = []
    for result in results:
        curve = roc_curve(result.scored.scores)
        _draw(axes, result, (np.maximum(curve.far, floor_far), curve.tar), conditions)
    axes.axvline(target_far, color="grey", linestyle="--", linewidth=1, label="target FAR")
    axes.set_xscale("log")
    axes.set_xlim(floor_far, 1.0)
    axes.set_ylim(0.0, 1.01)
    axes.set_xlabel("false accept rate (FAR)")
    axes.set_ylabel("true accept rate (TAR = 1 - FRR)")
    axes.set_title("ROC: accept when distance <= tau")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    return _save(figure, path)


def write_det_plot(
    results: Sequence[PipelineResult], path: Path, *, target_far: float, floor_far: float
) -> Path:
    """FRR against FAR, both on log axes from ``floor_far`` (DET), for each result."""
    figure = Figure(figsize=(7, 5))
    axes = figure.add_subplot()
    conditions: list[str] = []
    for result in results:
        curve = roc_curve(result.scored.scores)
        points = (np.maximum(curve.far, floor_far), np.maximum(curve.frr, floor_far))
        _draw(axes, result, points, conditions)
    axes.axvline(target_far, color="grey", linestyle="--", linewidth=1, label="target FAR")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlim(floor_far, 1.0)
    axes.set_ylim(floor_far, 1.0)
    axes.set_xlabel("false accept rate (FAR)")
    axes.set_ylabel("false reject rate (FRR)")
    axes.set_title("DET: errors traded by tau")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    return _save(figure, path)

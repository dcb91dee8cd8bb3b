"""The match threshold measured by `facestream calibrate threshold`, as the service reads it.

The calibration writes ``data_dir/calibration/tau.json`` with the encoder's model id (and, for
an open-set tau, the gallery size it was chosen for); the service uses that tau unless the
config sets ``recognition.match.max_distance`` itself, and
refuses to start when the file was measured with another encoder (distances of different
models are not comparable).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engines.errors import ConfigError

__all__ = ["CALIBRATED_TAU_FILE", "CalibratedMatch", "calibrated_match"]

CALIBRATED_TAU_FILE = Path("calibration") / "tau.json"


@dataclass(frozen=True, slots=True)
class CalibratedMatch:
    """What a calibration fixed: tau, and the gallery size it was chosen for (open set)."""

    tau: float
    gallery_size: int | None


def calibrated_match(data_dir: Path, model_id: str) -> CalibratedMatch | None:
    """The tau (and gallery size) calibrated for encoder ``model_id``, None when none was
    saved; ConfigError when the file is unreadable or was made for another model."""
    path = data_dir / CALIBRATED_TAU_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        saved_model, tau = str(saved["model_id"]), float(saved["tau"])
        size = saved.get("gallery_size")
        gallery_size = None if size is None else int(size)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a calibrated tau file: {exc}") from exc
    if saved_model != model_id:
        raise ConfigError(
            f"{path}: tau {tau:.4f} was calibrated for encoder {saved_model!r}, but the encoder "
            f"in use is {model_id!r}; run `facestream calibrate threshold` again, or set "
            "recognition.match.max_distance in the config"
        )
    if not 0.0 < tau <= 2.0:
        raise ConfigError(f"{path}: tau {tau} is outside (0, 2]")
    if gallery_size is not None and gallery_size < 1:
        raise ConfigError(f"{path}: gallery_size {gallery_size} is below 1")
    return CalibratedMatch(tau, gallery_size)

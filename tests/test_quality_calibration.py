"""``facestream calibrate quality``: the gate search on hand-made pairs, and the command on a few
real pairs of ../shared/data (skipped without it)."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from calibration.errors import CalibrationDataError
from calibration.quality import (
    GatedPairs,
    GateGrid,
    QualityGate,
    evaluate_gate,
    search_gate,
)
from engines.store import ModelStore
from pipeline.access.policy import DoorConfig, passes_quality
from pipeline.cli.main import app
from pipeline.types import Quality

TAU = 0.6


def _face(interocular: float = 40.0, sharpness: float = 100.0) -> Quality:
    return Quality(
        interocular_px=interocular,
        sharpness=sharpness,
        yaw=0.05,
        roll_degrees=2.0,
        brightness=120.0,
        clipped_fraction=0.01,
        detector_score=0.9,
    )


def _pairs(
    condition: str, rows: list[tuple[float, bool, Quality | None, Quality | None]]
) -> GatedPairs:
    return GatedPairs(
        condition=condition,
        distances=np.array([row[0] for row in rows], np.float64),
        same=np.array([row[1] for row in rows], np.bool_),
        quality_a=tuple(row[2] for row in rows),
        quality_b=tuple(row[3] for row in rows),
    )


# clean: every face large and sharp, no impostor within tau
CLEAN = _pairs(
    "clean",
    [
        (0.40, True, _face(), _face()),
        (0.45, True, _face(), _face()),
        (0.80, False, _face(), _face()),
        (0.85, False, _face(), _face()),
    ],
)
# small: the one impostor pair within tau has a 12 px face; genuine faces are 16 and 25 px
SMALL = _pairs(
    "small",
    [
        (0.50, True, _face(16.0), _face(25.0)),
        (0.55, True, _face(25.0), _face(25.0)),
        (0.58, False, _face(12.0), _face(30.0)),  # a false accept unless the gate refuses it
        (0.90, False, _face(25.0), _face(16.0)),
        (np.inf, False, None, _face(30.0)),  # no face in one photo
    ],
)


def _interocular_grid(*values: float) -> GateGrid:
    return GateGrid(
        min_interocular_px=values,
        min_sharpness=(0.0,),
        max_yaw=(1.0,),
        max_roll_degrees=(90.0,),
        min_detector_score=(0.0,),
        max_clipped_fraction=(1.0,),
    )


def test_a_looser_gate_that_lets_a_false_accept_through_is_rejected() -> None:
    """Minimums 0 and 10 px let the 12 px impostor pair in (FAR 1/3 at small): unsafe; 15 and 20
    are safe, and 15 accepts more pairs, so 15 is chosen."""
    search = search_gate(
        [CLEAN, SMALL], _interocular_grid(0, 10, 15, 20), tau=TAU, target_far=0.001
    )
    assert search.gates_tried == 4
    assert search.safe_gates == 2
    assert search.chosen is not None
    assert search.chosen.min_interocular_px == 15.0
    loose = evaluate_gate(SMALL, QualityGate.open(), tau=TAU)
    assert (loose.false_accepts, loose.impostor_accepted, loose.no_face_pairs) == (1, 2, 1)
    clean, small = search.results
    assert (clean.false_accepts, small.false_accepts) == (0, 0)
    # 15 px refuses the 12 px impostor pair only; 20 px would also refuse the 16 px genuine one
    assert (small.refused_pairs, small.genuine_accepted, small.impostor_accepted) == (1, 2, 1)
    assert small.refused_share == pytest.approx(1 / 4)
    assert small.frr == 0.0


def test_the_loosest_safe_gate_is_chosen_across_fields() -> None:
    """The false accept is also blurry: a sharpness minimum of 10 refuses it alone and keeps every
    genuine pair, so it beats any interocular minimum that would."""
    blurry = _pairs(
        "blurry",
        [
            (0.50, True, _face(16.0, 50.0), _face(25.0, 60.0)),
            (0.58, False, _face(30.0, 5.0), _face(30.0, 80.0)),
            (0.90, False, _face(20.0, 40.0), _face(20.0, 40.0)),
        ],
    )
    grid = GateGrid(
        min_interocular_px=(0.0, 18.0, 35.0),
        min_sharpness=(0.0, 10.0, 70.0),
        max_yaw=(1.0,),
        max_roll_degrees=(90.0,),
        min_detector_score=(0.0,),
        max_clipped_fraction=(1.0,),
    )
    search = search_gate([CLEAN, blurry], grid, tau=TAU, target_far=0.001)
    assert search.chosen is not None
    assert (search.chosen.min_interocular_px, search.chosen.min_sharpness) == (0.0, 10.0)
    assert search.results[1].genuine_accepted == 1


def test_no_safe_gate_reports_the_closest() -> None:
    """An impostor pair within tau whose faces are as good as any genuine one: no gate of the
    grid separates it, so nothing is chosen and the closest is the one with the lowest FAR."""
    hopeless = _pairs(
        "hopeless",
        [(0.50, True, _face(), _face()), (0.52, False, _face(), _face())],
    )
    search = search_gate([hopeless], _interocular_grid(0, 20), tau=TAU, target_far=0.001)
    assert search.chosen is None
    assert search.safe_gates == 0
    assert search.results[0].far == 1.0
    assert search.closest.min_interocular_px == 0.0  # same FAR, accepts as much: the looser


def test_the_search_applies_the_door_rule() -> None:
    """The vectorised gate passes a pair exactly when the door's ``passes_quality`` passes both
    its faces, for random faces and gates."""
    generator = np.random.default_rng(3)

    def random_face() -> Quality:
        return Quality(
            interocular_px=float(generator.uniform(5, 60)),
            sharpness=float(generator.uniform(0, 200)),
            yaw=float(generator.uniform(0, 0.6)),
            roll_degrees=float(generator.uniform(-45, 45)),
            brightness=120.0,
            clipped_fraction=float(generator.uniform(0, 0.6)),
            detector_score=float(generator.uniform(0.3, 1.0)),
        )

    faces = [(random_face(), random_face()) for _ in range(200)]
    pairs = _pairs("random", [(0.5, bool(i % 2), a, b) for i, (a, b) in enumerate(faces)])
    for gate in list(GateGrid().gates())[::97]:
        door = DoorConfig(id="door", cameras=["cam"], **gate.as_dict())
        expected = sum(passes_quality(door, a) and passes_quality(door, b) for a, b in faces)
        result = evaluate_gate(pairs, gate, tau=TAU)
        assert result.genuine_accepted + result.impostor_accepted == expected, gate


def test_gate_fields_are_the_doors() -> None:
    """Every gate field is a DoorConfig field, and the default gate is the door's default."""
    door = DoorConfig(id="door", cameras=["cam"])
    assert QualityGate.from_door(door) == QualityGate()
    assert {field.name for field in fields(QualityGate)} <= set(DoorConfig.model_fields)


def test_pairs_and_qualities_must_line_up() -> None:
    """A quality missing for a pair is a data error naming the condition."""
    with pytest.raises(CalibrationDataError, match="clean"):
        GatedPairs("clean", np.zeros(2), np.zeros(2, np.bool_), (None,), (None, None))


@pytest.mark.slow
def test_quality_command_on_real_pairs(
    session_store: ModelStore, shared_data: Path, tmp_path: Path
) -> None:
    """A few shared pairs, clean and small: the JSON summary is last, the configured gate is the
    door's default, and the gate found keeps FAR <= target at every condition."""
    config = tmp_path / "config.toml"
    config.write_text(f'data_dir = "{session_store.data_dir}"\n')
    result = CliRunner().invoke(
        app,
        [
            "calibrate",
            "quality",
            "--pairs",
            str(shared_data / "faces" / "pairs.csv"),
            "--config",
            str(config),
            "--max-pairs",
            "12",
            "--degrade",
            "small",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["n_pairs"] == 12
    assert summary["tau"] == 0.6
    assert summary["gates"]["configured"]["gate"] == QualityGate().as_dict()
    found = "chosen" if summary["chosen"] is not None else "closest"
    conditions = summary["gates"][found]["conditions"]
    assert [row["condition"] for row in conditions] == ["clean", "small"]
    for row in conditions:
        assert row["pairs"] == 12
        if found == "chosen":
            assert row["false_accepts"] <= summary["target_far"] * row["impostor_accepted"]
    assert summary["far_measurable"] is False  # 12 pairs cannot resolve 0.1 %


def test_a_gate_refusing_too_many_clean_pairs_is_not_chosen() -> None:
    """A blurry clean impostor pair within tau: a sharpness minimum of 10 refuses it, and one of
    four clean pairs; allowed to refuse 25 % it is chosen, allowed 20 % it is not, and the
    closest gate is then the open one (admissible gates first)."""
    clean = _pairs(
        "clean",
        [
            (0.40, True, _face(), _face()),
            (0.45, True, _face(), _face()),
            (0.55, False, _face(sharpness=5.0), _face()),
            (0.85, False, _face(), _face()),
        ],
    )
    grid = GateGrid(
        min_interocular_px=(0.0,),
        min_sharpness=(0.0, 10.0),
        max_yaw=(1.0,),
        max_roll_degrees=(90.0,),
        min_detector_score=(0.0,),
        max_clipped_fraction=(1.0,),
    )
    lenient = search_gate([clean], grid, tau=TAU, target_far=0.001, max_clean_refused=0.25)
    assert lenient.chosen is not None
    assert lenient.chosen.min_sharpness == 10.0
    strict = search_gate([clean], grid, tau=TAU, target_far=0.001, max_clean_refused=0.2)
    assert strict.chosen is None
    assert strict.closest.min_sharpness == 0.0

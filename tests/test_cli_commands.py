"""The ``facestream`` command tree does not change by accident.

Every command path, its help and its parameters (names, flags, help, default, required) are
compared with tests/data/cli_commands.json, written from the command before its module was
split. A deliberate change regenerates the file: ``python tests/test_cli_commands.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

import pipeline
from pipeline.cli.main import app

SNAPSHOT = Path(__file__).parent / "data" / "cli_commands.json"
# defaults under the checkout (the style store) are written relative to it
ROOT = str(Path(pipeline.__file__).resolve().parents[1])


# typer vendors its own click: its objects are read by attribute, not checked by class
def _parameter(parameter: Any) -> dict[str, object]:
    return {
        "name": parameter.name,
        "kind": parameter.param_type_name,
        "opts": list(parameter.opts),
        "secondary_opts": list(parameter.secondary_opts),
        "help": getattr(parameter, "help", None),
        "required": parameter.required,
        "default": repr(parameter.default).replace(ROOT, "<root>"),
        "type": str(parameter.type_descriptor.annotation),
        "multiple": parameter.multiple,
        "is_flag": getattr(parameter, "is_flag", False),
        "bounds": [getattr(parameter, "min", None), getattr(parameter, "max", None)],
    }


def _walk(command: Any, path: tuple[str, ...]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = [
        {
            "path": " ".join(path),
            "help": command.help,
            "short_help": command.short_help,
            "hidden": command.hidden,
            "params": [_parameter(parameter) for parameter in command.params],
        }
    ]
    if hasattr(command, "commands"):  # a group
        for name, child in command.commands.items():  # the order --help lists them in
            rows.extend(_walk(child, (*path, name)))
    return rows


def command_tree() -> list[dict[str, object]]:
    """One row per command and group of ``facestream``, root first, children in the
    order ``--help`` lists them."""
    return _walk(typer.main.get_command(app), ("facestream",))


def test_command_tree_matches_the_snapshot() -> None:
    """Command names, options and help are exactly those of the snapshot."""
    expected = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    actual = command_tree()
    assert [row["path"] for row in actual] == [row["path"] for row in expected]
    for got, want in zip(actual, expected, strict=True):
        assert got == want, got["path"]


if __name__ == "__main__":
    SNAPSHOT.parent.mkdir(exist_ok=True)
    SNAPSHOT.write_text(json.dumps(command_tree(), indent=1) + "\n", encoding="utf-8")

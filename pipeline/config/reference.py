"""The configuration reference, generated from the pydantic models so it never drifts.

``facestream config reference > docs/configuration.md`` writes it; a test fails when the
committed file differs from what the models say.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from pipeline.config.service import FaceStreamConfig

__all__ = ["render_reference"]

_HEADER = """# Configuration reference

Generated from the pydantic models by `facestream config reference` (do not edit by hand).
Files are TOML; every section forbids unknown keys, so a typo is an error naming the key.
`facestream check-config FILE` validates a file and prints the resolved settings. A complete
example: [facestream.example.toml](facestream.example.toml).
"""


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Annotated, unions and lists)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for argument in get_args(annotation):
        for model in _models_in(argument):
            if model not in found:
                found.append(model)
    return found


def _is_list(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _is_list(get_args(annotation)[0])
    return origin is list


_PLAIN_NAMES: dict[Any, str] = {type(None): "none", SecretStr: "secret string"}


def _type_name(annotation: Any) -> str:
    if annotation in _PLAIN_NAMES:
        return _PLAIN_NAMES[annotation]
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(get_args(annotation)[0])
    if origin is typing.Literal:
        return " \\| ".join(json.dumps(value) for value in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(argument) for argument in get_args(annotation))
    if origin in (list, tuple):
        inner = [a for a in get_args(annotation) if a is not Ellipsis]
        return f"list of {_type_name(inner[0])}" if inner else "list"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory in (list, dict, tuple):
        value: Any = field.default_factory()
    elif field.default_factory is not None:
        return "(computed at start)"  # e.g. from the host name: not the same everywhere
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(section)"
    if value is None:
        return "none"
    if isinstance(value, SecretStr):
        return "(secret)"
    return f"`{json.dumps(value, default=str)}`"


def _section(
    path: str, array: bool, model: type[BaseModel], lines: list[str], variant: bool = False
) -> None:
    """Document ``model`` as table ``path`` (an array of tables when ``array``; ``variant``:
    one of several models the table can hold)."""
    title = "top level" if not path else f"`[[{path}]]`" if array else f"`[{path}]`"
    if variant:
        title += f" ({model.__name__})"
    doc = (model.__doc__ or "").strip().splitlines()
    lines += ["", f"## {title}", ""]
    if doc:
        lines += [doc[0], ""]
    rows = []
    nested: list[tuple[str, bool, type[BaseModel], bool]] = []
    for name, field in model.model_fields.items():
        models = _models_in(field.annotation)
        if not models:
            description = (field.description or "").replace("|", "\\|").replace("\n", " ")
            kind = _type_name(field.annotation)
            rows.append(f"| `{name}` | {kind} | {_default(field)} | {description} |")
            continue
        child = f"{path}.{name}" if path else name
        for inner in models:
            nested.append((child, _is_list(field.annotation), inner, len(models) > 1))
    if rows:
        lines += ["| key | type | default | meaning |", "|---|---|---|---|", *rows]
    for child, child_array, inner, is_variant in nested:
        _section(child, child_array, inner, lines, is_variant)


def render_reference() -> str:
    """The Markdown reference of every config section and key."""
    lines = [_HEADER.rstrip()]
    _section("", False, FaceStreamConfig, lines)
    return "\n".join(lines) + "\n"

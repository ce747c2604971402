"""Load a YAML file into a pydantic model, turning validation errors into one readable message.

Every spec in data_specs/ goes through `load_yaml_model`, so a wrong spec always fails the same way:
the file, the dotted field path, what was given and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class SpecError(ValueError):
    """A spec file that cannot be used; the message names the file, the field and the fix."""


def format_validation_error(path: Path | str, error: ValidationError) -> str:
    lines = [f"{path}: invalid spec ({error.error_count()} problem(s))"]
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "<top level>"
        given = item.get("input")
        shown = repr(given) if not isinstance(given, dict) else "a mapping"
        lines.append(f"  - field '{field}': {item['msg']} (given: {shown})")
    return "\n".join(lines)


def load_yaml_model(path: Path | str, model: type[M]) -> M:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return model.model_validate(raw, context={"spec_dir": path.parent})
    except ValidationError as exc:
        raise SpecError(format_validation_error(path, exc)) from None

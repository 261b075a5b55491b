"""Load YAML into pydantic models; every error names file, line and key path."""

from __future__ import annotations

import re
from pathlib import Path
import math
from typing import Any, NoReturn, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from twinloop.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

_UNITS = {"ms": 1e-3, "s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|sec|min|h|d)\s*$")


class Strict(BaseModel):
    """Base for config models: unknown keys are errors, objects are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_duration(value: Any) -> float:
    """Seconds from ``"250 ms"``, ``"30 s"``, ``"5 min"``, ``"2 h"`` or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"expected a duration such as '30 s', '250 ms' or '5 min', got {value!r}")
    if not math.isfinite(seconds):
        raise ValueError(f"a duration must be finite, got {value!r}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    return seconds


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> tuple[int | None, list[str]]:
    """Follow a pydantic error location through the YAML node tree.

    Location parts that are not keys in the document (union tags, model names)
    are skipped, so the key path shown is the one the user wrote.
    """
    path: list[str] = []
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(part):
                    # An unknown key is reported at the key itself.
                    child, line = value_node, key_node.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            continue
        node = child
        path.append(f"[{part}]" if isinstance(part, int) else str(part))
    return line, path


def _join(path: list[str]) -> str:
    return "".join(p if p.startswith("[") else f".{p}" for p in path).lstrip(".")


def read_text(path: Path) -> str:
    """A config file's text, or a ConfigError naming the file."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read file: {getattr(err, 'strerror', None) or err}", file=str(path)) from err


def raise_at(path: Path, text: str, loc: tuple[Any, ...], message: str) -> NoReturn:
    """Raise a ConfigError for key path ``loc`` of the YAML ``text``, with its line."""
    line, keys = _line_of(yaml.compose(text, Loader=yaml.SafeLoader), loc)
    raise ConfigError(message, file=str(path), line=line, key=_join(keys) or None)


def _refuse_duplicate_keys(node: yaml.Node | None, name: str, path: list[str]) -> None:
    """PyYAML keeps the last of two equal keys silently; a config file with one is an error."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"duplicate key '{key}' (first at line {seen[key]})", file=name,
                                  line=line, key=_join([*path, key]))
            seen[key] = line
            _refuse_duplicate_keys(value_node, name, [*path, key])
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicate_keys(item, name, [*path, f"[{i}]"])


def load_model(path: Path, model: type[M], text: str | None = None) -> M:
    """Parse ``path`` (or ``text`` standing for it) and validate it as ``model``."""
    name = str(path)
    if text is None:
        text = read_text(path)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        context = (f" ({err.context} at line {err.context_mark.line + 1})"
                   if err.context and err.context_mark and err.problem else "")
        raise ConfigError(f"YAML syntax error: {err.problem or err.context}{context}", file=name,
                          line=mark.line + 1 if mark else None) from err
    except yaml.YAMLError as err:
        raise ConfigError(f"YAML error: {err}", file=name) from err
    _refuse_duplicate_keys(node, name, [])
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping at the top level", file=name, line=1)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        line, keys = _line_of(node, tuple(first["loc"]))
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "union_tag_invalid":
            message = f"'{first['ctx']['tag']}' is not one of {first['ctx']['expected_tags']}"
        elif first["type"] == "union_tag_not_found":
            message = "expected a mapping with exactly one key naming its kind"
        elif first["type"] == "extra_forbidden":
            message = f"unknown key '{keys[-1] if keys else first['loc'][-1]}'"
        more = len(err.errors()) - 1
        if more:
            message += f" (and {more} more error{'s' if more > 1 else ''})"
        raise ConfigError(message, file=name, line=line, key=_join(keys) or None) from None


def to_ns(seconds: float) -> int:
    """Seconds as integer nanoseconds (nearest), the unit every schedule is counted in."""
    return round(seconds * 1_000_000_000)

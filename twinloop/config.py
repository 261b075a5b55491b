"""Load YAML into pydantic models; every error names file, line and key path."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from twinloop import units
from twinloop.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

class Strict(BaseModel):
    """Base for config models: unknown keys are errors, objects are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_duration(value: Any) -> float:
    """Seconds from a duration with its unit: ``"250 ms"``, ``"0.25 s"``, ``"5 min"``, ``"2 h"``."""
    return units.seconds(value)


class NamedText(io.StringIO):
    """YAML text that carries its file name, so every node's mark says which file it came from."""

    def __init__(self, text: str, name: str) -> None:
        super().__init__(text)
        self.name = name


def compose(text: str, name: str) -> yaml.Node | None:
    """The YAML node tree of ``text`` (marks name ``name``); syntax errors become ConfigErrors."""
    try:
        node = yaml.compose(NamedText(text, name), Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        context = (f" ({err.context} at line {err.context_mark.line + 1})"
                   if err.context and err.context_mark and err.problem else "")
        raise ConfigError(f"YAML syntax error: {err.problem or err.context}{context}", file=name,
                          line=mark.line + 1 if mark else None) from err
    except yaml.YAMLError as err:
        raise ConfigError(f"YAML error: {err}", file=name) from err
    except RecursionError:
        raise ConfigError("YAML nested too deeply", file=name) from None
    _refuse_duplicate_keys(node, name, [])
    return node


def construct(node: yaml.Node | None) -> Any:
    """Plain Python data (dicts, lists, scalars) from a node tree."""
    if node is None:
        return None
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def locate(node: yaml.Node | None, loc: tuple[Any, ...], name: str) -> tuple[str, int | None, str | None]:
    """File, line and key path of ``loc`` in a node tree (the deepest node the path reaches)."""
    line, keys, found = _line_of(node, loc)
    file = found.start_mark.name if found is not None and found.start_mark.name not in (
        "<file>", "<unicode string>") else name
    return file, line, _join(keys) or None


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> tuple[int | None, list[str], yaml.Node | None]:
    """Follow a pydantic error location through the YAML node tree.

    Location parts that are not keys in the document (union tags, model names)
    are skipped, so the key path shown is the one the user wrote.
    """
    path: list[str] = []
    line = node.start_mark.line + 1 if node is not None else None
    found = node
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(part):
                    # An unknown key is reported at the key itself.
                    child, line, found = value_node, key_node.start_mark.line + 1, key_node
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = found = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            continue
        node = child
        path.append(f"[{part}]" if isinstance(part, int) else str(part))
    return line, path, found


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
    raise_in(compose(text, str(path)), str(path), loc, message)


def raise_in(node: yaml.Node | None, name: str, loc: tuple[Any, ...], message: str) -> NoReturn:
    """Raise a ConfigError for key path ``loc`` of a node tree, naming the file the node came from."""
    file, line, key = locate(node, loc, name)
    raise ConfigError(message, file=file, line=line, key=key)


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
    return validate_node(compose(read_text(path) if text is None else text, name), model, name)


def validate_node(node: yaml.Node | None, model: type[M], name: str) -> M:
    """Validate a node tree as ``model``; the first error names file, line and key."""
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError("expected a mapping at the top level", file=name, line=1)
    try:
        return model.model_validate(construct(node))
    except ValidationError as err:
        errors = err.errors()
        # an unknown key is usually the cause of a "missing" one (a typo): report it first
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        file, line, key = locate(node, tuple(first["loc"]), name)
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "union_tag_invalid":
            message = f"'{first['ctx']['tag']}' is not one of {first['ctx']['expected_tags']}"
        elif first["type"] == "union_tag_not_found":
            message = "expected a mapping with exactly one key naming its kind"
        elif first["type"] == "missing":
            message = f"missing required key '{first['loc'][-1]}'"
        elif first["type"] == "extra_forbidden":
            message = f"unknown key '{str(first['loc'][-1])}'"
        more = len(err.errors()) - 1
        if more:
            message += f" (and {more} more error{'s' if more > 1 else ''})"
        raise ConfigError(message, file=file, line=line, key=key) from None


def to_ns(seconds: float) -> int:
    """Seconds as integer nanoseconds (nearest), the unit every schedule is counted in."""
    return round(seconds * 1_000_000_000)

"""Scenario files as written -> the documents that are run: ``include:``, ``parameters:`` and ``matrix:``.

A scenario may include shared fragments (mappings merge key by key, lists
concatenate with the fragment's items first, the including file wins on a
clash) and may declare parameters, used as ``${name}`` in any value, and a
matrix of parameter values, one run per point.

What is recorded and hashed is the **expanded text**: the scenario file's text,
then each included file's text after a ``--- # twinloop include: PATH`` line,
then the point's parameters after ``--- # twinloop point``. It holds everything
the run depends on, so ``verify`` re-parses it without the files, and a changed
fragment changes the scenario hash. A scenario without includes or matrix
expands to exactly its own text.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from copy import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from twinloop.config import compose, construct, raise_in, read_text
from twinloop.errors import ConfigError

_INCLUDE = "--- # twinloop include: "
_POINT = "--- # twinloop point"
_SPLIT = re.compile(r"^(--- # twinloop include: .*|--- # twinloop point)$", re.M)
_PARAM = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: Keys whose values are not substituted: they define the parameters.
_RAW_KEYS = ("include", "parameters", "matrix")
MAX_INCLUDES = 64


@dataclass(frozen=True)
class Document:
    """One file's text; ``name`` is the path errors show, ``ref`` the path recorded (relative to the scenario)."""

    name: str
    ref: str
    text: str


def _key(node: yaml.MappingNode, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    return next(((k, v) for k, v in node.value if k.value == key), None)


def _includes(node: yaml.Node | None, doc: Document) -> list[tuple[str, yaml.Node]]:
    """The ``include:`` entries of a document, with their nodes (for error lines)."""
    if not isinstance(node, yaml.MappingNode) or (found := _key(node, "include")) is None:
        return []
    value = found[1]
    items = value.value if isinstance(value, yaml.SequenceNode) else [value]
    out = []
    for item in items:
        if not isinstance(item, yaml.ScalarNode) or not item.value:
            raise ConfigError("expected the path of a YAML fragment", file=doc.name,
                              line=item.start_mark.line + 1, key="include")
        out.append((item.value, item))
    return out


def read_documents(path: str | Path) -> list[Document]:
    """The scenario file and every file it includes (depth first, each once)."""
    main = Path(path)
    root = main.parent
    docs = [Document(str(main), main.name, read_text(main))]
    seen = {main.resolve()}
    i = 0
    while i < len(docs):
        doc = docs[i]
        base = (root / doc.ref).parent if i else root
        for ref, node in _includes(compose(doc.text, doc.name), doc):
            target = (base / ref)
            where = dict(file=doc.name, line=node.start_mark.line + 1, key="include")
            if not target.is_file():
                raise ConfigError(f"included file '{ref}' not found (looked for {target})", **where)
            if target.resolve() in seen:
                if target.resolve() == main.resolve() or any(
                        (root / d.ref).resolve() == target.resolve() for d in docs[:i + 1]):
                    raise ConfigError(f"'{ref}' includes itself (an include cycle)", **where)
                continue
            if len(docs) >= MAX_INCLUDES:
                raise ConfigError(f"more than {MAX_INCLUDES} included files", **where)
            seen.add(target.resolve())
            docs.append(Document(str(target), os.path.relpath(target, root), read_text(target)))
        i += 1
    return docs


def expanded_text(docs: list[Document], point: dict[str, Any] | None) -> str:
    """The text recorded and hashed for one run (see the module docstring)."""
    parts = [docs[0].text]
    for doc in docs[1:]:
        parts.append(f"\n{_INCLUDE}{doc.ref}\n{doc.text}")
    if point is not None:
        parts.append(f"\n{_POINT}\n{json.dumps(point, sort_keys=True)}\n")
    return "".join(parts)


def split_expanded(name: str, text: str) -> tuple[list[Document], dict[str, Any] | None]:
    """Inverse of ``expanded_text``: the documents and the point a recorded text was made of."""
    pieces = _SPLIT.split(text)
    bodies = [pieces[0], *pieces[2::2]]
    # expanded_text put one newline before and after each marker line
    bodies = [b.removesuffix("\n") if i < len(bodies) - 1 else b for i, b in enumerate(bodies)]
    bodies = [bodies[0], *(b.removeprefix("\n") for b in bodies[1:])]
    docs = [Document(name, Path(name).name, bodies[0])]
    point = None
    for marker, body in zip(pieces[1::2], bodies[1:]):
        if marker == _POINT:
            point = json.loads(body)
        else:
            ref = marker[len(_INCLUDE):]
            docs.append(Document(str(Path(name).parent / ref), ref, body))
    return docs, point


def _merge(base: yaml.Node, over: yaml.Node) -> yaml.Node:
    """``over`` merged onto ``base``: mappings by key, lists concatenated, scalars replaced."""
    if isinstance(base, yaml.MappingNode) and isinstance(over, yaml.MappingNode):
        merged = copy(over)  # keeps the including file's marks for errors about the mapping itself
        merged.value = list(base.value)
        for k, v in over.value:
            at = next((i for i, (bk, _) in enumerate(merged.value) if bk.value == k.value), None)
            if at is None:
                merged.value.append((k, v))
            else:
                merged.value[at] = (k, _merge(merged.value[at][1], v))
        return merged
    if isinstance(base, yaml.SequenceNode) and isinstance(over, yaml.SequenceNode):
        merged = copy(over)
        merged.value = list(base.value) + list(over.value)
        return merged
    return over


def merged_node(docs: list[Document]) -> yaml.MappingNode:
    """The node tree of the scenario with every fragment merged in (marks keep their file)."""
    nodes = []
    for doc in docs:
        node = compose(doc.text, doc.name)
        if not isinstance(node, yaml.MappingNode):
            raise ConfigError("expected a mapping at the top level", file=doc.name, line=1)
        nodes.append(node)
    result = nodes[-1] if len(nodes) > 1 else nodes[0]
    for node in reversed(nodes[1:-1]):
        result = _merge(node, result)
    if len(nodes) > 1:
        result = _merge(result, nodes[0])
        # the scenario's own include list, as written, stays the one in the tree
        result.value = [(k, v) for k, v in result.value if k.value != "include"] + \
            ([f] if (f := _key(nodes[0], "include")) else [])
    return result


def _scalar(node: yaml.MappingNode, key: str) -> Any:
    found = _key(node, key)
    return construct(found[1]) if found else None


def points(node: yaml.MappingNode, name: str) -> list[dict[str, Any] | None]:
    """One parameter set per matrix point (the product of the matrix lists); ``[None]`` without parameters."""
    params, matrix = _scalar(node, "parameters"), _scalar(node, "matrix")
    if params is None and matrix is None:
        return [None]
    for key, value in (("parameters", params), ("matrix", matrix)):
        if value is not None and not isinstance(value, dict):
            raise_in(node, name, (key,), f"'{key}' must be a mapping of parameter names")
    params, matrix = dict(params or {}), dict(matrix or {})

    def check(loc: tuple[Any, ...], key: str, value: Any) -> None:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise_in(node, name, loc, f"parameter '{key}' must be a number or a quantity such as '30 W', "
                     f"got {value!r}")

    for key, value in params.items():
        check(("parameters", key), key, value)
    for key, values in matrix.items():
        if not isinstance(values, list) or not values:
            raise_in(node, name, ("matrix", key), f"matrix '{key}' must be a non-empty list of values")
        for i, value in enumerate(values):
            check(("matrix", key, i), key, value)
    axes = list(matrix)
    return [{**params, **dict(zip(axes, combo))}
            for combo in itertools.product(*(matrix[a] for a in axes))] or [params]


def point_id(point: dict[str, Any] | None, matrix_keys: list[str] | None = None) -> str:
    """A short id for a point, ``load=30 W,fan=0`` (matrix parameters only, when known)."""
    if point is None:
        return ""
    keys = matrix_keys if matrix_keys is not None else sorted(point)
    return ",".join(f"{k}={point[k]}" for k in keys)


def substitute(node: yaml.MappingNode, point: dict[str, Any] | None, name: str) -> yaml.MappingNode:
    """A copy of the tree with ``${param}`` replaced in every value outside the parameter keys."""
    if point is None:
        point = {}
    resolver = yaml.SafeLoader("")

    def walk(n: yaml.Node, loc: tuple[Any, ...]) -> yaml.Node:
        if isinstance(n, yaml.ScalarNode):
            if "${" not in n.value:
                return n
            unknown = [p for p in _PARAM.findall(n.value) if p not in point]
            if unknown:
                raise_in(root, name, loc, f"unknown parameter '${{{unknown[0]}}}'; declared: "
                         f"{', '.join(sorted(point)) or 'none (add a parameters: mapping)'}")
            whole = _PARAM.fullmatch(n.value)
            value = str(point[whole.group(1)]) if whole else _PARAM.sub(lambda m: str(point[m.group(1)]), n.value)
            out = copy(n)
            out.value = value
            out.tag = resolver.resolve(yaml.ScalarNode, value, (True, False))
            return out
        if isinstance(n, yaml.SequenceNode):
            out = copy(n)
            out.value = [walk(v, (*loc, i)) for i, v in enumerate(n.value)]
            return out
        if isinstance(n, yaml.MappingNode):
            out = copy(n)
            out.value = [(k, v if (not loc and k.value in _RAW_KEYS) else walk(v, (*loc, k.value)))
                         for k, v in n.value]
            return out
        return n

    root = node
    try:
        return walk(node, ())
    finally:
        resolver.dispose()

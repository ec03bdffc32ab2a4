"""Where a config problem is and how to say it: YAML line numbers, ``--set``
overrides, and one readable message per pydantic error.

Kept apart from the schema in `tfsft.config` so that the models stay a plain list of
keys; nothing here knows the schema except through the root model it is handed.
"""

from __future__ import annotations

import difflib
from typing import Any

import yaml
from pydantic import BaseModel

from tfsft.errors import ConfigError


def within(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


def apply_override(raw: dict[str, Any], item: str) -> str:
    key, sep, value = item.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not all(parts):
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=2")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except (yaml.YAMLError, RecursionError, ValueError):
        parsed = value  # a plain string that merely looks odd to YAML, e.g. "a: b"
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            prefix = ".".join(parts[: i + 1])
            raise ConfigError(f"--set {item!r}: {prefix} is a value, not a section")
        node = child
    node[parts[-1]] = parsed
    return key


def bad_scalar_line(text: str) -> int | str:
    """The line of the first scalar that safe_load cannot turn into a value."""
    loader = yaml.SafeLoader(text)
    try:
        stack = [loader.get_single_node()]
        while stack:
            node = stack.pop()
            if isinstance(node, yaml.ScalarNode):
                try:
                    loader.construct_object(node)
                except ValueError:
                    return node.start_mark.line + 1
            elif isinstance(node, yaml.MappingNode):
                stack.extend(n for pair in reversed(node.value) for n in reversed(pair))
            elif isinstance(node, yaml.SequenceNode):
                stack.extend(reversed(node.value))
    finally:
        loader.dispose()
    return "?"


def key_lines(node: yaml.Node | None, prefix: str = "") -> dict[str, int]:
    """Maps dotted key paths to 1-based YAML line numbers."""
    out: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = f"{prefix}{key_node.value}"
            out[path] = key_node.start_mark.line + 1
            out.update(key_lines(value_node, path + "."))
    return out


def describe_errors(
    errors: list[Any], root: type[BaseModel], source: str, lines: dict[str, int]
) -> str:
    """One line per problem in pydantic's ``errors`` for a config of model ``root``.

    Args:
        errors: ``ValidationError.errors()``.
        root: the top-level config model (for "did you mean" suggestions).
        source: the file name to report.
        lines: dotted key path -> YAML line (-1 for keys set by ``--set``).
    """
    names = _model_names(root)
    return "\n".join(
        _describe(err, loc, root, source, lines)
        for loc, err in _most_specific(errors, names)
    )


def _model_names(root: type[BaseModel]) -> set[str]:
    """Class names of ``root`` and every model nested in it (union location tags)."""
    names, stack = set(), [root]
    while stack:
        model = stack.pop()
        if model.__name__ in names:
            continue
        names.add(model.__name__)
        for field in model.model_fields.values():
            stack.extend(_nested_models(field.annotation))
    return names


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    return [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]


def _most_specific(
    errors: list[Any], model_names: set[str]
) -> list[tuple[list[str], dict[str, Any]]]:
    """One error per key path, preferring the deepest when a union value is wrong.

    A union such as ``freeze: none | {first_n_layers: K}`` reports one error per
    member; the user needs only the one that goes deepest into what they wrote.
    """
    located = []
    for err in errors:
        # Union members add their class name to the location; drop those tags (but
        # not the user's own keys, which may be capitalised too).
        loc = [
            str(p)
            for p in err["loc"]
            if not (
                isinstance(p, str) and (p in model_names or p.startswith("literal["))
            )
        ]
        located.append((loc, err))
    kept: list[tuple[list[str], dict[str, Any]]] = []
    for loc, err in located:
        deeper = any(len(o) > len(loc) and o[: len(loc)] == loc for o, _ in located)
        if not deeper and all(k != loc for k, _ in kept):
            kept.append((loc, err))
    return kept


def _describe(
    err: dict[str, Any],
    loc: list[str],
    root: type[BaseModel],
    source: str,
    lines: dict[str, int],
) -> str:
    dotted = ".".join(loc) or "(top level)"
    line = _nearest_line(loc, lines)
    where = source if not line else "--set" if line == -1 else f"{source}: line {line}"
    kind = err["type"]
    if kind == "extra_forbidden":
        msg = f"{dotted}: unknown key"
        hint = _suggest(loc, root)
        if hint:
            msg += f"; did you mean '{hint}'?"
    elif kind == "missing":
        msg = f"{dotted}: required key is missing"
    else:
        got = err.get("input")
        shown = f" (got {got!r})" if not isinstance(got, dict | list) else ""
        text = err["msg"].removeprefix("Value error, ")  # our own validators
        msg = f"{dotted}: {text}{shown}"
    return f"{where}: {msg}"


def _nearest_line(loc: list[str], lines: dict[str, int]) -> int | None:
    for n in range(len(loc), 0, -1):
        line = lines.get(".".join(loc[:n]))
        if line:
            return line
    return None


def _suggest(loc: list[str], root: type[BaseModel]) -> str | None:
    """The closest valid key at the same level as the unknown one."""
    if not loc:
        return None
    model = root
    for part in loc[:-1]:
        field = model.model_fields.get(part)
        nested = _nested_models(getattr(field, "annotation", None))
        if not nested:
            return None
        model = nested[0]
    close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1)
    return close[0] if close else None

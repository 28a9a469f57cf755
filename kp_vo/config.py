"""Typed, nested configuration: dataclasses with defaults in code, partial YAML overrides.

``load_config(Cls, path_or_dict)`` builds ``Cls`` from its defaults and applies a (possibly
partial) nested mapping on top (into free-form mapping fields such as ``extractor.options`` key
by key, so an override of one option keeps the others); unknown keys are an error naming the
full dotted key, so a typo in a YAML file or a ROS parameter never passes silently.
``to_dict`` / ``save_config`` write the config actually used next to every result.

YAML files are read by ``read_yaml``: at most ``MAX_YAML_BYTES`` of UTF-8 text whose node tree, with
every alias expanded, has at most ``MAX_YAML_NODES`` nodes (a few hundred bytes of nested aliases,
"billion laughs", would otherwise expand into gigabytes once the config is saved).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kp_vo.errors import KpVoError

T = TypeVar("T")

MAX_YAML_BYTES = 1 << 20     # largest config file read
MAX_YAML_NODES = 100_000     # largest node tree after alias expansion


class ConfigError(KpVoError, ValueError):
    """A configuration key or value that does not fit the typed config."""


def _apply(obj: Any, overrides: dict, prefix: str) -> Any:
    if not isinstance(overrides, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(overrides).__name__}")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    changes = {}
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"unknown config key {dotted!r}; known: {', '.join(sorted(fields))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _apply(current, value, dotted + ".")
        elif isinstance(current, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{dotted}: expected a mapping, got {value!r}")
            changes[key] = _merge_mapping(current, value)
        else:
            changes[key] = _coerce(value, hints[key], dotted)
    return dataclasses.replace(obj, **changes)


def _merge_mapping(current: dict, overrides: dict) -> dict:
    """A free-form mapping field (e.g. ``extractor.options``) with ``overrides`` applied key by key, nested
    mappings too: ``--set extractor.options.model_path=M`` keeps the config's ``max_keypoints``."""
    merged = dict(current)
    for key, value in overrides.items():
        if isinstance(merged.get(key), dict) and isinstance(value, dict):
            merged[key] = _merge_mapping(merged[key], value)
        else:
            merged[key] = value
    return merged


def _coerce(value: Any, hint: Any, dotted: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if value is None:
        if type(None) in args or hint is Any:
            return None
        raise ConfigError(f"{dotted}: null is not allowed")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, dotted)
            except ConfigError:
                continue
        raise ConfigError(f"{dotted}: {value!r} does not fit {hint}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{dotted}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, dotted) for v in value]
        return tuple(items) if origin is tuple else items
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{dotted}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{dotted}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{dotted}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{dotted}: expected a string, got {value!r}")
        return value
    return value


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML parse error in one line: what is wrong and where."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


def _expanded_size(node: yaml.Node, path: str) -> int:
    """Nodes of ``node``'s tree with aliases expanded; ConfigError past ``MAX_YAML_NODES``. Sizes are
    memoized per node, so a shared (aliased) subtree is counted in time linear in the file."""
    sizes: dict[int, int] = {}

    def size(n: yaml.Node) -> int:
        if id(n) not in sizes:
            children = n.value if isinstance(n, yaml.SequenceNode) else \
                [c for pair in n.value for c in pair] if isinstance(n, yaml.MappingNode) else []
            sizes[id(n)] = 1 + sum(size(c) for c in children)
            if sizes[id(n)] > MAX_YAML_NODES:
                raise ConfigError(f"{path}: more than {MAX_YAML_NODES} YAML nodes once its aliases are expanded")
        return sizes[id(n)]

    return size(node)


def read_yaml(path: str | os.PathLike, what: str = "config") -> dict:
    """The mapping in a YAML file (empty file: {}); one-line ConfigError naming ``path`` when it is
    unreadable, too large, not UTF-8, not YAML, an alias bomb or not a mapping at the top."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(f"{what} {path} is larger than {MAX_YAML_BYTES} bytes")
    try:
        loader = yaml.SafeLoader(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
    try:
        node = loader.get_single_node()
        if node is not None:
            _expanded_size(node, f"{what} {path}")
        value = loader.construct_document(node) if node is not None else {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {yaml_problem(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{what} {path} is nested too deeply") from None
    finally:
        loader.dispose()
    if not isinstance(value, dict):
        raise ConfigError(f"{what} {path} must be a mapping at the top level, got {type(value).__name__}")
    return value


def load_config(cls: type[T], overrides: dict | str | os.PathLike | None = None) -> T:
    """Defaults of ``cls`` with a nested mapping (or a YAML file of one, see ``read_yaml``) applied on top."""
    if overrides is None:
        return cls()
    if isinstance(overrides, (str, os.PathLike)):
        overrides = read_yaml(overrides)
    return _apply(cls(), overrides, "")


def merge(config: T, overrides: dict) -> T:
    """A copy of ``config`` with a partial nested mapping applied."""
    return _apply(config, overrides, "")


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | os.PathLike) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))

"""Typed, nested configuration: dataclasses with defaults in code, partial YAML overrides.

``load_config(Cls, path_or_dict)`` builds ``Cls`` from its defaults and applies a (possibly
partial) nested mapping on top (into free-form mapping fields such as ``extractor.options`` key
by key, so an override of one option keeps the others); unknown keys are an error naming the
full dotted key, so a typo in a YAML file or a ROS parameter never passes silently.
``to_dict`` / ``save_config`` write the config actually used next to every result.
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


class ConfigError(KpVoError, ValueError):
    """A configuration key or value that does not fit the typed config."""


def _apply(obj: Any, overrides: dict, prefix: str) -> Any:
    if not isinstance(overrides, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(overrides).__name__}")
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
        elif isinstance(current, dict) and isinstance(value, dict):
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


def load_config(cls: type[T], overrides: dict | str | os.PathLike | None = None) -> T:
    """Defaults of ``cls`` with a nested mapping (or a YAML file of one) applied on top."""
    if overrides is None:
        return cls()
    if isinstance(overrides, (str, os.PathLike)):
        path = Path(overrides)
        try:
            overrides = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
    return _apply(cls(), overrides, "")


def merge(config: T, overrides: dict) -> T:
    """A copy of ``config`` with a partial nested mapping applied."""
    return _apply(config, overrides, "")


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | os.PathLike) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))

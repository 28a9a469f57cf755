"""Settings written as text: ``KEY=VALUE`` items, dotted keys and ``name[:PATH][,key=value...]`` specs.

One parser for every place a user types a setting:

    parse_options(["width=320", "seed=7"], "--option")          -> {"width": 320, "seed": 7}
    nest({"train.steps": 10, "model": "vgg"}, "--set")           -> {"train": {"steps": 10}, "model": "vgg"}
    parse_settings(["train.steps=10"], "--set")                  -> {"train": {"steps": 10}}
    parse_spec("keypointnet:kpn.onnx,scale=0.5")                 -> Spec("keypointnet", "kpn.onnx", {"scale": 0.5})

Values are YAML (``true`` -> True, ``[1, 2]`` -> [1, 2]); every malformed item is a one-line error
naming where it came from (the flag, the parameter, the spec).
"""

from __future__ import annotations

from typing import NamedTuple

import yaml

from kp_vo.config import ConfigError, yaml_problem
from kp_vo.errors import InvalidInputError, KpVoError


def parse_options(items: list[str] | None, flag: str, error: type[KpVoError] = ConfigError,
                  form: str = "KEY=VALUE") -> dict:
    """``KEY=VALUE`` items (YAML values) as a dict; ``error`` naming ``flag`` (and the key) for a
    malformed item, which should look like ``form``."""
    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise error(f"{flag} expects {form}, got {item!r}")
        try:
            options[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise error(f"{flag} {key}: value {value!r} is not a YAML value ({yaml_problem(exc)})") from None
    return options


def nest(flat: dict, what: str, sep: str = ".") -> dict:
    """Dotted keys as one nested dict: {"a.b": 1, "a.c": 2, "d": 3} -> {"a": {"b": 1, "c": 2}, "d": 3}
    (ROS parameters and ``--set`` items are flat and dotted). ConfigError naming ``what`` and the key
    for an empty part or a key that is both a value and a section ({"a": 1, "a.b": 2})."""
    nested: dict = {}
    for dotted, value in flat.items():
        *sections, key = dotted.split(sep)
        if not all(sections) or not key:
            raise ConfigError(f"{what} {dotted}: empty part in the dotted key")
        node = nested
        for depth, section in enumerate(sections):
            node = node.setdefault(section, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{what} {dotted} conflicts with {sep.join(sections[:depth + 1])}, "
                                  f"which is also set to a value")
        node[key] = value
    return nested


def parse_settings(items: list[str] | None, flag: str) -> dict:
    """``SECTION.KEY=VALUE`` items (YAML values) as one nested dict: ["train.steps=10", "model=vgg"] ->
    {"train": {"steps": 10}, "model": "vgg"}; ConfigError naming ``flag`` for a malformed one."""
    return nest(parse_options(items, flag), flag)


class Spec(NamedTuple):
    """A parsed ``name[:PATH][,key=value...]`` spec."""

    name: str       # e.g. "keypointnet", "orb", "depthnet"
    path: str       # the model file after the colon ("" when none)
    options: dict   # the ",key=value" options (YAML values)


def parse_spec(spec: str) -> Spec:
    """``"keypointnet:kpn.onnx,scale=0.5,cell_nms=true"`` -> Spec("keypointnet", "kpn.onnx",
    {"scale": 0.5, "cell_nms": True}); InvalidInputError naming ``spec`` for a malformed option."""
    head, *items = spec.split(",")
    options = parse_options(items, f"spec {spec!r}", InvalidInputError, "',key=value' options")
    name, _, path = head.partition(":")
    return Spec(name, path, options)

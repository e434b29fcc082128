"""Training configuration: YAML sections read into frozen dataclasses, CLI overrides on top.

A config file holds one mapping per section, each read into its dataclass (unknown sections and
keys are refused, as everywhere in ToothMCL)::

    train:            # training.engine.TrainConfig
      epochs: 50
      lr: 1.0e-4
    pretrain:         # training.pretrain.PretrainConfig
      spacing_mm: 0.3

and any value can be overridden on the command line with ``--set section.key=value`` (the value
is read as YAML: ``--set train.epochs=2 --set pretrain.crop_size=[32,64,64]``).
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

from ToothMCLCore.errors import ConfigError


def config_from_dict(cls, data: dict):
    """Build a config dataclass from a mapping: unknown keys are refused, numbers are coerced.

    YAML reads ``1e-4`` as a string (YAML 1.1 needs ``1.0e-4``); a ``float`` field accepts it,
    an ``int`` field accepts ``2.0`` but not ``2.5``, a ``bool`` field only true/false, and lists
    become tuples.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__} must be a mapping (got {type(data).__name__})")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys {unknown}; known keys are {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(cls.__name__, name, hints[name], value) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"invalid {cls.__name__}: {exc}") from None


def _coerce(owner: str, name: str, hint, value):
    args = typing.get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{owner}.{name} must not be empty")
    base = next((a for a in args if a is not type(None)), hint) if args and type(None) in args else hint
    try:
        if base is bool:
            if not isinstance(value, bool):
                raise ValueError("expected true or false")
            return value
        if base is int:
            number = float(value)
            if number != int(number):
                raise ValueError("expected a whole number")
            return int(number)
        if base is float:
            return float(value)
        if base is str:
            return str(value)
        if typing.get_origin(base) is tuple or base is tuple:
            return tuple(value) if isinstance(value, (list, tuple)) else (value,)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{owner}.{name}: cannot use {value!r} ({exc})") from None
    return value


def config_to_dict(config) -> dict:
    """A config dataclass as a plain dict (tuples as lists), for YAML, JSON and checkpoints."""
    return {f.name: (list(v) if isinstance(v, tuple) else v)
            for f in dataclasses.fields(config) for v in [getattr(config, f.name)]}


def parse_overrides(items) -> dict:
    """``["train.epochs=2", "pretrain.spacing_mm=1.5"]`` -> nested dict; values are read as YAML."""
    import yaml

    out: dict = {}
    for item in items or ():
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like section.key=value")
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(text)
    return out


def load_config(path, sections: dict[str, type], overrides: dict | None = None) -> dict[str, Any]:
    """Read a YAML file of ``{section: {key: value}}`` into one dataclass per section.

    Args:
        path: YAML file, or None for defaults only (every required key must then be overridden).
        sections: section name -> config dataclass, e.g. ``{"train": TrainConfig}``.
        overrides: nested dict merged over the file (:func:`parse_overrides`, CLI flags).

    Raises:
        ConfigError: unreadable file, unknown section or key, invalid value.
    """
    import yaml

    data: dict = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config {path} must be a mapping of sections {sorted(sections)}")
    for section, values in (overrides or {}).items():
        if not isinstance(values, dict):
            raise ConfigError(f"override of {section!r} must be section.key=value")
        data.setdefault(section, {})
        data[section] = {**(data[section] or {}), **values}
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ConfigError(f"unknown config sections {unknown} in {path}; known sections are {sorted(sections)}")
    return {name: config_from_dict(cls, data.get(name) or {}) for name, cls in sections.items()}


def add_config_arguments(parser) -> None:
    """``--config PATH`` and repeatable ``--set section.key=value`` on an argparse parser."""
    parser.add_argument("--config", help="YAML config file (see training/configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (repeatable), e.g. --set train.epochs=2")


def merge(base: dict, extra: dict) -> dict:
    """Nested dict ``extra`` merged over ``base`` (one level of sections)."""
    out = {k: dict(v) for k, v in base.items()}
    for section, values in extra.items():
        out.setdefault(section, {}).update(values)
    return out

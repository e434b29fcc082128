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

from pathlib import Path
from typing import Any

from ToothMCLCore.config import config_from_dict, config_to_dict
from ToothMCLCore.errors import ConfigError

__all__ = ["config_from_dict", "config_to_dict", "load_config", "parse_overrides"]


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

"""Configs: one YAML per dataset setting, overridden from the command line with ``--set a.b=value``.

Each stage reads its own section into its own dataclass (``section(cfg, "gradcam", GradcamConfig)``),
so a section's fields and defaults are documented where they are used.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import Any, TypeVar

import yaml

DEFAULT_CONFIG = "configs/synthgaze.yaml"
T = TypeVar("T")


def parse_value(text: str) -> Any:
    """YAML scalar parsing for overrides: ``0.1`` -> float, ``true`` -> bool, ``[1,2]`` -> list, ``none`` -> None."""
    if text.lower() in {"none", "null"}:
        return None
    return yaml.safe_load(text)


def apply_overrides(cfg: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Return a copy of ``cfg`` with ``key.sub=value`` overrides applied (missing sections are created)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key.sub=value")
        key, value = item.split("=", 1)
        node = cfg
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = parse_value(value.strip())
    return cfg


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Load a YAML config (default ``configs/synthgaze.yaml``) and apply overrides.

    ``_config_path`` records where it came from (written into provenance files).
    """
    path = Path(path or DEFAULT_CONFIG)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path) as f:
        cfg = yaml.safe_load(f) or {}
    cfg = apply_overrides(cfg, overrides)
    cfg["_config_path"] = str(path)
    return cfg


def section(cfg: dict[str, Any], name: str, cls: type[T]) -> T:
    """Build dataclass ``cls`` from ``cfg[name]``; unknown keys are an error naming the section."""
    values = dict(cfg.get(name) or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"config section '{name}' has unknown keys {unknown}; known: {sorted(known)}")
    return cls(**values)


def add_config_args(parser) -> None:
    """The two options every stage takes: ``--config`` and repeated ``--set key.sub=value``."""
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set split.ratio=0.1 (repeatable)")


def config_from_args(args) -> dict[str, Any]:
    return load_config(args.config, args.overrides)

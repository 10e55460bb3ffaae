"""Configs: one YAML per dataset setting, overridden from the command line with ``--set a.b=value``.

Each stage reads its own section into its own dataclass (``section(cfg, "gradcam", GradcamConfig)``),
so a section's fields and defaults are documented where they are used. ``SECTIONS`` names every section's
dataclass, and ``load_config`` checks the whole config once against them: an unknown section or key (in
the file or in an override) and a bad value are an error naming the file or the override, with near
misses suggested, whichever stage reads the config.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import os
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gcdr.errors import UserError

DEFAULT_CONFIG = "configs/synthgaze.yaml"
T = TypeVar("T")

# section -> its dataclass as "module:Class", imported only when a config is checked (the modules import
# torch / transformers, and gcdr.data imports this module).
SECTIONS: dict[str, str] = {
    "dataset": "gcdr.data:DatasetConfig",
    "split": "gcdr.data.splits:SplitConfig",
    "synth": "gcdr_tools.synthgaze:SynthConfig",
    "vqa": "gcdr.vqa.blip:VqaConfig",
    "synth_vqa": "gcdr_tools.synth_vqa:SynthVqaConfig",
    "gradcam": "gcdr.vqa.gradcam:GradcamConfig",
    "teacher": "gcdr.teacher.config:TeacherConfig",
    "refine": "gcdr.teacher.config:RefineConfig",
    "student": "gcdr.students.config:StudentConfig",
    "inspect": "gcdr_tools.gallery.config:InspectConfig",  # make inspect (a tool beside the method)
    "ablation": "gcdr_tools.ablation:AblationConfig",  # make ablation (a tool beside the method)
}
# top-level keys that are not sections: run name, output root, and where the config came from (set here)
TOP_LEVEL_KEYS = ("name", "out_root", "_config_path")


class ConfigError(UserError, ValueError):
    """A config that does not validate; the message is one line naming the file or the override."""


class RunConfig(dict):
    """The run's whole config, validated once (``load_config``): the YAML tree as a dict (what provenance
    records), and every section as its typed dataclass by attribute: ``cfg.refine.T``, ``cfg.dataset.on_error``.

    A section attribute is built from the tree on each access (so it never disagrees with the tree); the
    dataclasses carry the defaults, types and ranges (see ``SECTIONS``).
    """

    def __getattr__(self, name: str) -> Any:
        if name in SECTIONS:
            return build_section(self, name)
        raise AttributeError(f"config has no section {name!r}{_suggest(name, list(SECTIONS))}")


def section_class(name: str) -> type:
    """The dataclass of config section ``name`` (imported on first use)."""
    module, _, cls = SECTIONS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def _suggest(word: str, known: list[str] | tuple[str, ...], prefix: str = "") -> str:
    """"; did you mean 'x'?" for near misses of ``word`` in ``known``, else the list of known names."""
    close = difflib.get_close_matches(word, known, n=2, cutoff=0.6)
    if close:
        return "; did you mean " + " or ".join(repr(prefix + c) for c in close) + "?"
    return f"; known: {', '.join(sorted(known))}"


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _key_problems(tree: dict[str, Any]) -> list[str]:
    """Unknown sections / keys of a (partial) config tree, as messages."""
    problems = []
    for key, value in tree.items():
        if key in TOP_LEVEL_KEYS:
            if not isinstance(value, str):
                problems.append(f"'{key}' must be a string, got {value!r}")
        elif key not in SECTIONS:
            if isinstance(value, dict):
                problems.append(f"unknown config section '{key}'{_suggest(str(key), list(SECTIONS))}")
            else:  # a misspelt top-level key, or a section name given a plain value
                known = [k for k in (*TOP_LEVEL_KEYS, *SECTIONS) if not k.startswith("_")]
                problems.append(f"unknown top-level key '{key}'{_suggest(str(key), known)}")
        elif value is not None and not isinstance(value, dict):
            problems.append(f"section '{key}' must be a mapping of keys, got {value!r}")
        else:
            fields = _field_names(section_class(key))
            for sub in value or {}:
                if sub not in fields:
                    problems.append(f"unknown key '{key}.{sub}'{_suggest(str(sub), fields, f'{key}.')}")
    return problems


_SIMPLE_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "None": type(None)}


def _type_problem(name: str, field: dataclasses.Field, value: Any) -> str | None:
    """A message when ``value`` does not fit a plain ``int | float | str | bool (| None)`` annotation."""
    annotation = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    parts = [p.strip() for p in annotation.split("|")]
    if not parts or not all(p in _SIMPLE_TYPES for p in parts):
        return None  # lists, sequences, unions with them: left to the dataclass
    if value is None:  # left to the stage: ``--set refine.method=none`` parses to None and means "none"
        return None
    if isinstance(value, bool):
        fits = "bool" in parts
    elif "bool" in parts and value in (0, 1) and not isinstance(value, float):  # make ... MEAN_TEACHER=1
        fits = True
    else:
        fits = (isinstance(value, int) and ("int" in parts or "float" in parts)) or \
               (isinstance(value, float) and "float" in parts) or (isinstance(value, str) and "str" in parts)
    if fits:
        return None
    wanted = " or ".join({"int": "an integer", "float": "a number", "str": "a string", "bool": "true/false",
                          "None": "null"}[p] for p in parts)
    hint = ""
    mantissa, _, exponent = str(value).lower().partition("e")
    if isinstance(value, str) and "float" in parts and exponent and "." not in mantissa:
        try:
            hint = f" (YAML reads {value} as text: write {float(mantissa)!r}e{int(exponent)})"
        except ValueError:
            pass
    if isinstance(value, bool) and "str" in parts:
        hint = " (YAML reads yes/no/on/off as true/false: quote it)"
    return f"{name}.{field.name} must be {wanted}, got {value!r}{hint}"


def build_section(cfg: dict[str, Any], name: str) -> Any:
    """Section ``name`` of ``cfg`` as its dataclass (``SECTIONS``), with types and values checked."""
    return section(cfg, name, section_class(name))


def validate_config(cfg: dict[str, Any], source: str, overrides: list[str] | None = None) -> None:
    """Check every section and key of ``cfg``; raise ConfigError naming ``source`` (and the overrides).

    Unknown sections / keys and values that do not fit the field's type or its dataclass's checks
    (``__post_init__``) are errors. Sections absent from ``cfg`` are built with their defaults.
    """
    problems = _key_problems(cfg)
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    for name in SECTIONS:
        touched = [o for o in overrides or [] if o.split("=", 1)[0].strip().split(".")[0] == name]
        where = source + "".join(f" with --set {o}" for o in touched)
        try:
            build_section(cfg, name)
        except (ValueError, TypeError) as err:
            message = " ".join(str(err).split())
            if f"{name}." not in message and f"'{name}'" not in message:
                message = f"section '{name}': {message}"
            raise ConfigError(f"{where}: {message}") from err


def _override_tree(item: str) -> dict[str, Any]:
    """The partial config tree that one ``key.sub=value`` override sets."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key.sub=value")
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    tree: Any = parse_value(value.strip())
    for part in reversed(parts):
        tree = {part: tree}
    return tree


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


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML config (default ``configs/synthgaze.yaml``), apply overrides and validate the result.

    The file is checked first (errors name it), then each override (errors name ``--set key=value``),
    then every section's values (``validate_config``). ``_config_path`` records where the config came
    from (written into provenance files). Raises ConfigError (a ValueError) on an invalid config.
    """
    path = Path(path or DEFAULT_CONFIG)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (the configs that ship are in configs/)")
    with open(path) as f:
        cfg = yaml.safe_load(f) or {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: a config file is a mapping of sections, got {type(cfg).__name__}")
    problems = _key_problems(cfg)
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    for item in overrides or []:
        problems = _key_problems(_override_tree(item))
        if problems:
            raise ConfigError(f"--set {item}: " + "; ".join(problems))
    cfg = apply_overrides(cfg, overrides)
    cfg["_config_path"] = str(path)
    validate_config(cfg, str(path), overrides)
    return RunConfig(cfg)


def section(cfg: dict[str, Any], name: str, cls: type[T]) -> T:
    """Build dataclass ``cls`` from ``cfg[name]``; unknown keys and ill-typed values are an error naming the section."""
    values = cfg.get(name) or {}
    if not isinstance(values, dict):
        raise ValueError(f"config section '{name}' must be a mapping of keys, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        hints = "".join(_suggest(str(k), list(fields), f"{name}.") for k in unknown
                        if difflib.get_close_matches(str(k), list(fields), n=1, cutoff=0.6))
        raise ValueError(f"config section '{name}' has unknown keys {unknown}{hints}; known: {sorted(fields)}")
    for key, value in values.items():
        problem = _type_problem(name, fields[key], value)
        if problem:
            raise ValueError(problem)
    return cls(**values)


def add_config_args(parser) -> None:
    """The two options every stage takes: ``--config`` and repeated ``--set key.sub=value``."""
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set split.ratio=0.1 (repeatable)")


def config_from_args(args) -> RunConfig:
    """``load_config`` for a stage's command line; an invalid config exits with its one-line message."""
    try:
        return load_config(args.config, args.overrides)
    except ConfigError as err:
        raise SystemExit(f"config error: {err}") from None

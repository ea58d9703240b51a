"""Build an :class:`ExperimentConfig` from a parsed TOML dict, with errors that teach."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any

from metagrad.config.checks import config_problems
from metagrad.config.coerce import coerce, describe, field_types, toml_type
from metagrad.config.errors import ConfigError
from metagrad.config.family_schema import family_problems  # registers ANIL, BOIL, ...
from metagrad.config.rl_schema import rl_problems  # importing it registers the RL variants
from metagrad.config.schema import SECTIONS, ExperimentConfig, Section, Variants

TOP_LEVEL = tuple(k for k in field_types(ExperimentConfig) if k not in SECTIONS)


def _where(source: str | None) -> str:
    return f" in {source}" if source else ""


def section_class(section: str, raw: Mapping[str, Any], source: str | None) -> type[Section]:
    """The dataclass that section ``section`` (parsed as ``raw``) must match.

    Raises:
        ConfigError: the section's tag is missing, not a string or names no registered variant.
    """
    spec = SECTIONS[section]
    if not isinstance(spec, Variants):
        return spec
    key, choices = f"{section}.{spec.tag}", ", ".join(sorted(spec.registry))
    if spec.tag not in raw:
        raise ConfigError(
            f'missing required key {key!r}{_where(source)}: add {spec.tag} = "..." under '
            f"[{section}], one of {choices}"
        )
    tag = raw[spec.tag]
    if not isinstance(tag, str) or tag not in spec.registry:
        hint = difflib.get_close_matches(str(tag), spec.registry, n=1)
        more = f"; did you mean {hint[0]!r}?" if hint else ""
        raise ConfigError(f"{key} {tag!r}{_where(source)}: expected one of {choices}{more}")
    return spec.registry[tag]


def valid_keys(section: str, cls: type[Section]) -> list[str]:
    """The dotted keys a section of class ``cls`` accepts, tag first."""
    spec = SECTIONS[section]
    tag = [f"{section}.{spec.tag}"] if isinstance(spec, Variants) else []
    return tag + [f"{section}.{name}" for name in field_types(cls)]


def unknown_key(
    key: str, valid: list[str], source: str | None, variant: str | None = None
) -> ConfigError:
    """An error for ``key``: suggest the closest valid key, else list the valid ones.

    If ``key`` is a field of another variant of its section than ``variant``, say which.
    """
    msg = f"unknown key {key!r}{_where(source)}"
    section, _, name = key.partition(".")
    spec = SECTIONS.get(section)
    if isinstance(spec, Variants) and name and variant:
        owners = [tag for tag, cls in spec.registry.items() if name in field_types(cls)]
        if owners:
            return ConfigError(
                f"{msg}: {section} {variant!r} has no field {name!r}, only {section} "
                f"{', '.join(map(repr, owners))}; valid keys here: {', '.join(valid)}"
            )
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if close:
        return ConfigError(f"{msg}; did you mean {close[0]!r}?")
    return ConfigError(f"{msg}; valid keys are: {', '.join(valid)}")


def variant_of(section: str, raw: Mapping[str, Any]) -> str | None:
    """The tag value of a tagged-union section (None for plain sections)."""
    spec = SECTIONS[section]
    return raw.get(spec.tag) if isinstance(spec, Variants) else None


def _section(section: str, raw: Any, source: str | None) -> Section:
    if not isinstance(raw, Mapping):
        shown = f"{toml_type(raw)} {raw!r}"
        raise ConfigError(
            f"{section}{_where(source)}: expected a table [{section}] of keys, got {shown}"
        )
    cls = section_class(section, raw, source)
    spec, types = SECTIONS[section], field_types(cls)
    tag = spec.tag if isinstance(spec, Variants) else None
    for key in raw:
        if key != tag and key not in types:
            raise unknown_key(
                f"{section}.{key}", valid_keys(section, cls), source, variant_of(section, raw)
            )
    kwargs = {}
    for f in dataclasses.fields(cls):
        path = f"{section}.{f.name}"
        if f.name in raw:
            kwargs[f.name] = coerce(raw[f.name], types[f.name], path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(
                f"missing required key {path!r}{_where(source)}: add {f.name} = ... under "
                f"[{section}] (expected {describe(types[f.name])})"
            )
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any], source: str | None = None) -> ExperimentConfig:
    """Build and validate an experiment config from a dict shaped like the TOML file.

    Args:
        data: Top-level keys and one sub-dict per section, as ``tomllib`` returns them.
        source: Where the data came from (a file path), named in error messages.

    Returns:
        The frozen config. Keys left out take the schema's defaults.

    Raises:
        ConfigError: an unknown or missing key, a wrong type, an unknown variant, or a value
            that type-checks but makes no sense (all such semantic problems are listed at once).
    """
    valid = list(TOP_LEVEL) + list(SECTIONS)
    for key in data:
        if key not in valid:
            raise unknown_key(key, valid, source)
    types = field_types(ExperimentConfig)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(ExperimentConfig):
        if f.name in data:
            if f.name in SECTIONS:
                kwargs[f.name] = _section(f.name, data[f.name], source)
            else:
                kwargs[f.name] = coerce(data[f.name], types[f.name], f.name)
        elif f.name in SECTIONS and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required section [{f.name}]{_where(source)}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(
                f"missing required key {f.name!r}{_where(source)}: add {f.name} = ... at the top "
                f"(expected {describe(types[f.name])})"
            )
    cfg = ExperimentConfig(**kwargs)
    problems = config_problems(cfg) + rl_problems(cfg) + family_problems(cfg)
    if problems:
        # One line (the command line prints errors as one line): problems joined by "; ".
        listed = "; ".join(f"{key}: {msg}" for key, msg in problems)
        raise ConfigError(f"invalid config{_where(source)}: {listed}")
    return cfg

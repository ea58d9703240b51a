"""Write an :class:`ExperimentConfig` back to TOML (with ``tomli-w``).

The output round-trips exactly: ``config_from_dict(tomllib.loads(config_to_toml(c))) == c``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tomli_w

from metagrad.config.schema import SECTIONS, ExperimentConfig, Variants


def _section_dict(section: str, obj: Any) -> dict[str, Any]:
    spec = SECTIONS[section]
    out: dict[str, Any] = {spec.tag: getattr(obj, spec.tag)} if isinstance(spec, Variants) else {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is not None:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def config_to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config as the nested dict a TOML file of it parses to.

    Variant tags are included, ``None`` values are left out and tuples become lists, so the
    result is also JSON-able (e.g. for logging hyperparameters).
    """
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in SECTIONS:
            out[f.name] = _section_dict(f.name, value)
        elif value is not None:
            out[f.name] = value
    return out


def config_to_toml(cfg: ExperimentConfig, header: str | None = None) -> str:
    """The config as TOML text: top-level keys, then one ``[section]`` each, tag first.

    Args:
        cfg: The config to write.
        header: Optional comment text put at the top, one ``#`` line per line.

    Returns:
        TOML that :func:`metagrad.config.load_config` reads back to an equal config.
    """
    lines = [f"# {line}".rstrip() for line in header.splitlines()] if header else []
    # tomli-w writes the top-level keys, then one table per section, each in the dict's order
    # (the tag first); floats in their shortest form that reads back exactly.
    return "\n".join([*lines, tomli_w.dumps(config_to_dict(cfg))]).lstrip("\n")

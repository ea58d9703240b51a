"""Write an :class:`ExperimentConfig` back to TOML (a tiny emitter for the value types in use).

The output round-trips exactly: ``config_from_dict(tomllib.loads(config_to_toml(c))) == c``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from metagrad.config.schema import SECTIONS, ExperimentConfig, Variants

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f"}
_ESCAPES["\r"] = "\\r"


def _string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    """Format one value as a TOML literal.

    Args:
        value: A bool, int, float, str, or a list/tuple of these.

    Returns:
        The TOML text, e.g. ``"[0.1, 5.0]"``; floats use ``repr`` so they parse back exactly.

    Raises:
        TypeError: for any other type (including ``None``, which TOML cannot express).
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as a TOML value")


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
    data = config_to_dict(cfg)
    lines = [f"# {line}".rstrip() for line in header.splitlines()] if header else []
    lines += [f"{k} = {toml_value(v)}" for k, v in data.items() if k not in SECTIONS]
    for section in SECTIONS:
        lines += ["", f"[{section}]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in data[section].items()]
    return "\n".join(lines) + "\n"

"""Check and convert TOML values against the schema's type hints.

The types in use are ``bool``, ``int``, ``float``, ``str``, ``Literal[...]`` of strings,
``tuple[X, ...]``, ``tuple[X, Y]`` and unions of these with each other and with ``None``.
TOML arrays become tuples (config dataclasses are frozen and hashable); ints are accepted
where floats are expected; bools are never accepted as numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Literal, Union

from metagrad.config.errors import ConfigError


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The resolved type hint of each dataclass field of ``cls``, in declaration order."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def is_optional(tp: Any) -> bool:
    """Whether ``None`` is a valid value of ``tp``."""
    return tp is type(None) or (_is_union(tp) and type(None) in typing.get_args(tp))


def accepts_str(tp: Any) -> bool:
    """Whether some string is a valid value of ``tp``."""
    if _is_union(tp):
        return any(accepts_str(arm) for arm in typing.get_args(tp))
    return tp is str or typing.get_origin(tp) is Literal


def describe(tp: Any, plural: bool = False) -> str:
    """A human description of ``tp``, e.g. ``"float or list of floats"``."""
    s = "s" if plural else ""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(tp):
        arms = [describe(a, plural) for a in args if a is not type(None)]
        return " or ".join(arms)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list{s} of {describe(args[0], plural=True)}"
        return f"list{s} of {len(args)} {describe(args[0], plural=True)}"
    return getattr(tp, "__name__", str(tp)) + s


def toml_type(value: Any) -> str:
    """The TOML name of a parsed value's type: str, int, float, bool, list, table or none."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "table"
    return type(value).__name__


def _mismatch(path: str, tp: Any, value: Any) -> ConfigError:
    shown = repr(list(value) if isinstance(value, tuple) else value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ConfigError(f"{path}: expected {describe(tp)}, got {toml_type(value)} {shown}")


def coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against type ``tp`` and return it in the schema's representation.

    Args:
        value: A parsed TOML value (or an already coerced one: coercion is idempotent).
        tp: A type hint from the schema.
        path: The dotted key, for the error message.

    Returns:
        The value, with lists turned into tuples and ints into floats where floats are expected.

    Raises:
        ConfigError: ``"train.iterations: expected int, got str 'abc'"``.
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(tp):
        for arm in args:
            try:
                return coerce(value, arm, path)
            except ConfigError:
                continue
        raise _mismatch(path, tp, value)
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is Literal:
        if any(type(value) is type(a) and value == a for a in args):
            return value
    elif origin is tuple:
        if isinstance(value, (list, tuple)):
            variadic = len(args) == 2 and args[1] is Ellipsis
            if variadic or len(value) == len(args):
                arms = [args[0]] * len(value) if variadic else list(args)
                return tuple(
                    coerce(v, a, f"{path}[{i}]")
                    for i, (v, a) in enumerate(zip(value, arms, strict=True))
                )
    else:
        raise TypeError(f"{path}: the schema uses type {tp!r}, which the config loader lacks")
    raise _mismatch(path, tp, value)


def is_supported(tp: Any) -> bool:
    """Whether :func:`coerce` and the TOML writer handle type ``tp`` (for schema tests)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(tp):
        return all(is_supported(a) for a in args)
    if origin is Literal:
        return all(isinstance(a, str) for a in args)
    if origin is tuple:
        return all(a is Ellipsis or is_supported(a) for a in args) and bool(args)
    return tp in (bool, int, float, str, type(None))

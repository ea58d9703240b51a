"""Command-line overrides: ``--set train.outer_lr=3e-4``.

A value is parsed as a TOML literal (``3e-4``, ``true``, ``[0.1, 0.05]``, ``"text"``); if it is
not one, it is taken as a bare string (``--set model.pool=max``). It is then type-checked against
the schema: a string field also accepts text that happens to parse as another type
(``--set name=2024``), a number field also accepts Python number syntax (``.5``), and an
optional field is reset to ``None`` by ``none`` or ``null``.

Switching a variant (``--set task.family=omniglot``) follows one rule: the section's other keys
carry over, except those whose value equals the old variant's default, which are dropped (they
said nothing, so the new variant's defaults apply). A carried-over key the new variant lacks is
an error that names it (remove the key from the file). Variant switches are applied before all
other overrides, so ``--set task.ways=10 --set task.family=omniglot`` works in either order; the
rest apply in order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from metagrad.config.build import TOP_LEVEL, section_class, unknown_key, valid_keys, variant_of
from metagrad.config.coerce import accepts_str, coerce, field_types, is_optional
from metagrad.config.errors import ConfigError
from metagrad.config.schema import SECTIONS, ExperimentConfig, Section, Variants

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_UNSET = object()  # returned for "--set optional.key=none": remove the key


@dataclass(frozen=True)
class Override:
    """One parsed ``KEY=VALUE`` override."""

    key: str  # dotted key, e.g. "train.outer_lr"
    value: Any  # the value parsed as a TOML literal, or the text itself if it is not one
    text: str  # the text after "=", stripped

    @property
    def source(self) -> str:
        """How the override was given, for error messages."""
        return f"--set {self.key}={self.text}"


def parse_override(text: str) -> Override:
    """Parse ``"train.outer_lr=3e-4"`` into key and value (not yet checked against the schema).

    Raises:
        ConfigError: there is no ``=`` or the key is not a dotted name.
    """
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not _KEY.fullmatch(key):
        raise ConfigError(
            f"bad override {text!r}: expected KEY=VALUE with a dotted KEY, "
            "e.g. --set train.outer_lr=3e-4 or --set model.pool=max"
        )
    return Override(key, _parse_value(value), value)


def _parse_value(text: str) -> Any:
    if "\n" in text:
        return text
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _is_tag(key: str) -> bool:
    section, _, name = key.partition(".")
    spec = SECTIONS.get(section)
    return isinstance(spec, Variants) and name == spec.tag


def _is_default(cls: type[Section], key: str, value: Any) -> bool:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if key not in fields or fields[key].default is dataclasses.MISSING:
        return False
    try:
        return coerce(value, field_types(cls)[key], key) == fields[key].default
    except ConfigError:
        return False


def _switch_variant(out: dict[str, Any], o: Override, source: str | None) -> None:
    section = o.key.partition(".")[0]
    spec = SECTIONS[section]
    assert isinstance(spec, Variants)
    if not isinstance(o.value, str) or o.value not in spec.registry:
        choices = ", ".join(sorted(spec.registry))
        raise ConfigError(f"{o.key} {o.value!r} (from {o.source}): expected one of {choices}")
    old = out.get(section, {})
    if not isinstance(old, Mapping):
        return  # config_from_dict reports the non-table section
    old_tag = old.get(spec.tag)
    old_cls = spec.registry.get(old_tag) if isinstance(old_tag, str) else None
    if old_tag == o.value:
        return
    kept = {
        k: v
        for k, v in old.items()
        if k != spec.tag and not (old_cls and _is_default(old_cls, k, v))
    }
    lacking = [k for k in kept if k not in field_types(spec.registry[o.value])]
    if lacking:
        keys = ", ".join(f"{section}.{k} = {kept[k]!r}" for k in lacking)
        where, was = source or "the config", f" {old_tag!r}" if old_tag else ""
        raise ConfigError(
            f"{o.source}: {where} sets {keys} for {section}{was}, but {section} {o.value!r} has "
            "no such key; remove it from the file (only values equal to the old variant's "
            "defaults are dropped automatically)"
        )
    out[section] = {spec.tag: o.value, **kept}


def _coerce(o: Override, tp: Any, path: str) -> Any:
    if is_optional(tp) and o.text.lower() in ("none", "null"):
        return _UNSET
    candidates = [o.value]
    if not isinstance(o.value, str) and accepts_str(tp):
        candidates.append(o.text)
    elif isinstance(o.value, str):
        for number in (int, float):
            with contextlib.suppress(ValueError):
                candidates.append(number(o.text))
    first: ConfigError | None = None
    for value in candidates:
        try:
            return coerce(value, tp, path)
        except ConfigError as e:
            first = first or e
    raise ConfigError(f"{first} (from {o.source})")


def _all_keys(out: Mapping[str, Any]) -> list[str]:
    keys = list(TOP_LEVEL)
    for section, spec in SECTIONS.items():
        try:
            keys += valid_keys(section, section_class(section, out.get(section) or {}, None))
        except ConfigError:  # unknown variant: offer the keys of every variant
            assert isinstance(spec, Variants)
            for cls in spec.registry.values():
                keys += [k for k in valid_keys(section, cls) if k not in keys]
    return keys


def _set(out: dict[str, Any], o: Override) -> None:
    parts = o.key.split(".")
    if len(parts) == 1 and o.key in SECTIONS:
        raise ConfigError(
            f"{o.source}: {o.key!r} is a section; set its keys one at a time, "
            f"e.g. --set {o.key}.KEY=VALUE"
        )
    if len(parts) == 1 and o.key in TOP_LEVEL:
        out[o.key] = _coerce(o, field_types(ExperimentConfig)[o.key], o.key)
        return
    if len(parts) != 2 or parts[0] not in SECTIONS:
        raise unknown_key(o.key, _all_keys(out), o.source)
    section, name = parts
    raw = out.setdefault(section, {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{o.source}: cannot set a key in {section!r}, which is not a table")
    try:
        cls = section_class(section, raw, None)
    except ConfigError:  # missing or unknown variant: config_from_dict reports it
        raw[name] = o.value
        return
    if name not in field_types(cls):
        raise unknown_key(o.key, valid_keys(section, cls), o.source, variant_of(section, raw))
    value = _coerce(o, field_types(cls)[name], o.key)
    if value is _UNSET:
        raw.pop(name, None)
    else:
        raw[name] = value


def apply_overrides(
    data: Mapping[str, Any], overrides: Iterable[str | Override], source: str | None = None
) -> dict[str, Any]:
    """Return a copy of the parsed TOML ``data`` with ``overrides`` applied.

    Args:
        data: Top-level keys and one sub-dict per section, as ``tomllib`` returns them.
        overrides: ``"KEY=VALUE"`` strings (or parsed :class:`Override` objects).
        source: Where ``data`` came from (a file path), named in error messages.

    Returns:
        A new dict; ``data`` is not modified. Values set here are already type-checked.

    Raises:
        ConfigError: bad syntax, an unknown key, a wrong type or an unknown variant, naming
            the ``--set`` argument at fault.
    """
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in data.items()}
    parsed = [o if isinstance(o, Override) else parse_override(o) for o in overrides]
    for o in parsed:
        if _is_tag(o.key):
            _switch_variant(out, o, source)
    for o in parsed:
        if not _is_tag(o.key):
            _set(out, o)
    return out

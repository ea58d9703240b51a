"""Read an experiment config file: TOML, then ``--set`` overrides, then schema validation.

A config is one plain TOML file: no executable config files, no inheritance between files.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from typing import Any

from metagrad.config.build import config_from_dict
from metagrad.config.errors import ConfigError
from metagrad.config.overrides import Override, apply_overrides
from metagrad.config.schema import ExperimentConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a TOML file.

    Raises:
        ConfigError: the file is missing, not UTF-8, or not valid TOML; a syntax error names
            the file, line and column and shows the offending line.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {os.fspath(path)}") from None
    except IsADirectoryError:
        raise ConfigError(f"{os.fspath(path)} is a directory; expected a .toml file") from None
    except PermissionError:
        raise ConfigError(
            f"cannot read the config file {os.fspath(path)}: permission denied; make it "
            f"readable (chmod u+r {os.fspath(path)}) or copy it"
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read the config file {os.fspath(path)}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{os.fspath(path)}: not UTF-8 text (byte {e.start}); save it as UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(_syntax_message(os.fspath(path), text, str(e))) from None


def _syntax_message(path: str, text: str, error: str) -> str:
    match = _POSITION.search(error)
    if not match:
        return f"{path}: invalid TOML: {error}"
    line, col = int(match.group(1)), int(match.group(2))
    reason = _POSITION.sub("", error).strip()
    lines = text.splitlines()
    shown = lines[line - 1] if 0 < line <= len(lines) else ""
    return (
        f"{path}:{line}:{col}: invalid TOML: {reason}\n"
        f"  {line} | {shown}\n"
        f"  {' ' * len(str(line))} | {' ' * (col - 1)}^"
    )


def load_config(
    path: str | os.PathLike[str], overrides: Iterable[str | Override] = ()
) -> ExperimentConfig:
    """Load and validate an experiment config file.

    Args:
        path: The TOML file.
        overrides: ``--set`` arguments such as ``"train.outer_lr=3e-4"``, applied in order
            after the file (variant switches like ``task.family=omniglot`` first).

    Returns:
        The frozen, validated config.

    Raises:
        ConfigError: anything wrong with the file or the overrides, explained.
    """
    source = os.fspath(path)
    return config_from_dict(apply_overrides(read_toml(path), overrides, source), source)

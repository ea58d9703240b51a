"""The experiment configs shipped inside the package, and resolving a CONFIG argument.

``metagrad train maml_5w1s`` works from any directory: a CONFIG that is no existing file is
looked up among the shipped configs by name (``maml_5w1s``), by family and name
(``omniglot/maml_5w1s``) or by its repository path (``configs/omniglot/maml_5w1s.toml``, the
form the README uses; the repository's ``configs`` is a link to the shipped directory).
"""

from __future__ import annotations

import difflib
from pathlib import Path

from metagrad.config import ConfigError

SHIPPED = Path(__file__).resolve().parents[1] / "configs"


def shipped_configs() -> dict[str, Path]:
    """``{"family/name": path}`` of every config shipped with the package, sorted."""
    if not SHIPPED.is_dir():
        return {}
    paths = sorted(SHIPPED.glob("*/*.toml"))
    return {f"{p.parent.name}/{p.stem}": p for p in paths}


def _key(text: str) -> str:
    # "configs/omniglot/maml_5w1s.toml", "omniglot/maml_5w1s" -> "omniglot/maml_5w1s"
    text = text.replace("\\", "/").removesuffix(".toml")
    return text.removeprefix("./").removeprefix("configs/")


def resolve_config(given: Path) -> Path:
    """The config file that ``given`` names: itself if it exists, else a shipped config.

    Raises:
        ConfigError: neither a file nor the name of a shipped config (with the closest names).
    """
    if given.exists():
        return given
    shipped = shipped_configs()
    key = _key(str(given))
    if key in shipped:
        return shipped[key]
    by_name = [path for name, path in shipped.items() if name.split("/")[1] == key]
    if len(by_name) == 1:
        return by_name[0]
    raise ConfigError(
        f"config file not found: {given} (neither a file nor the name of a shipped config)"
        f"{did_you_mean(given)}; `metagrad list` shows the configs"
    )


def did_you_mean(given: Path) -> str:
    """``"; did you mean 'maml_10shot'"`` for the shipped config closest to ``given``, or ``""``."""
    shipped = shipped_configs()
    choices = list(shipped) + sorted({name.split("/")[1] for name in shipped})
    close = difflib.get_close_matches(_key(str(given)), choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}" if close else ""

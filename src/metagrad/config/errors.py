"""The one exception type of the config system."""

from __future__ import annotations

from metagrad.errors import UsageError


class ConfigError(UsageError):
    """A config file or override is invalid.

    The message says what was given, what was expected and how to fix it, e.g.
    ``unknown key 'train.iteratons' in configs/x.toml; did you mean 'train.iterations'?``.
    """

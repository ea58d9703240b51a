"""The errors a user can act on.

:class:`UsageError` is a ``ValueError`` whose message says what was given, what was expected
and the fix. The command line prints it as one line; any other ``ValueError`` is a bug and keeps
its traceback (it used to be printed as a user error too, hiding programming mistakes).
:class:`DownloadError` is a failed download, whose message says what to retry.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input from the user: a file, a flag, a config value, a run directory."""


class DownloadError(RuntimeError):
    """A download failed (HTTP error, unreachable host, truncated transfer, ...)."""

"""A read-through cache of preprocessed arrays: one uncompressed ``.npz`` file per source.

Each file stores its arrays next to a JSON ``meta`` record (what was read and how); a copy whose
record differs from the one asked for, or that cannot be read, is rebuilt. Several cache
folders can be given, tried in order, so a read-only data root falls back to the user's cache.
Writes are atomic: a crash leaves the previous file or none, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

Arrays = dict[str, np.ndarray]
# Warnings point at the public loader: read_through <- omniglot._cached <- the comprehension in
# load_omniglot that calls it <- load_omniglot.
_STACKLEVEL = 4


def read_through(name: str, meta: dict, build: Callable[[], Arrays], caches: list[Path]) -> Arrays:
    """The arrays cached as ``name`` with this ``meta`` in the first folder holding them, else
    ``build()``'s, saved into the first writable folder of ``caches``.

    Args:
        name: the cache file's name (``.npz``).
        meta: JSON-able description of the source and the preprocessing; a cached copy is used
            only if its record equals it.
        build: computes the arrays when no valid copy exists.
        caches: folders to look in and write to, in order.
    """
    for file in (c / name for c in caches if (c / name).is_file()):
        try:
            with np.load(file) as stored:
                if json.loads(str(stored["meta"])) == meta:
                    return {k: stored[k] for k in stored.files if k != "meta"}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            # A truncated file (a full disk, a copy cut short) raises BadZipFile or EOFError;
            # left alone it failed every later run until deleted by hand.
            warnings.warn(
                f"ignoring unreadable cache {file} ({type(e).__name__}: {e}); rebuilding it",
                stacklevel=_STACKLEVEL,
            )
    arrays = build()
    errors = []
    for cache in caches:
        try:
            atomic_savez(cache / name, **arrays, meta=np.asarray(json.dumps(meta)))
            return arrays
        except OSError as e:
            errors.append(f"{cache}: {e}")
    warnings.warn(
        f"could not write the cache file {name} ({'; '.join(errors)}); preprocessing will be "
        "repeated on every load. Pass a writable cache_dir to keep it.",
        stacklevel=_STACKLEVEL,
    )
    return arrays


def atomic_savez(file: Path, **arrays: np.ndarray) -> None:
    """Write an uncompressed ``.npz`` to a temporary sibling, fsync, then rename into place."""
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=file.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

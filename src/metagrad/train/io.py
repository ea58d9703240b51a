"""Crash-safe file writes for run directories.

``atomic_write_*`` never leaves a half-written file under the final name: the data goes to a
temporary file in the same directory, is flushed and fsynced, then renamed over the target with
``os.replace`` (atomic on POSIX and Windows), and the directory is fsynced so the rename itself
survives a power loss. ``append_jsonl`` fsyncs each line, and ``read_jsonl`` skips a last line
cut short by a crash. :func:`inject_write_faults` makes these writes fail, for tests of a full
disk or a denied write. ``flatten_state`` / ``unflatten_state`` convert a nested training state
(optimizer ``state_dict``, RNG states, ...) to safetensors-ready tensors plus JSON, exactly.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metagrad.errors import UsageError

PathLike = str | os.PathLike[str]


class CheckpointError(RuntimeError):
    """A checkpoint cannot be saved or loaded; the message says why and what to do instead.

    Attributes:
        alternative: The name of an intact checkpoint in the same run directory, if any.
    """

    def __init__(self, message: str, alternative: str | None = None) -> None:
        super().__init__(message)
        self.alternative = alternative


class CheckpointWriteError(RuntimeError):
    """Writing a checkpoint failed (a full disk, a denied write): a runtime failure, exit 1.
    The message names the checkpoints still intact."""


class StateError(ValueError):
    """A training state cannot be flattened to tensors + JSON or rebuilt from them."""


def fsync_dir(path: PathLike) -> None:
    """Flush a directory's entries (new names, renames) to disk; a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------- fault injection (tests only)
_faults: list[tuple[int, int]] = []  # (errno, writes left before it fails), innermost last


@contextlib.contextmanager
def inject_write_faults(error: int = errno.ENOSPC, after: int = 0) -> Iterator[None]:
    """Make every write of this module fail with ``OSError(error)`` after ``after`` writes
    succeeded: a full disk (``errno.ENOSPC``) or a denied write (``errno.EACCES``) on any
    machine, for the tests. A write is one temporary file or one appended line.

    Example::

        with inject_write_faults(errno.ENOSPC, after=2):
            train(cfg, run_dir)   # the third file written finds the disk full
    """
    _faults.append((error, after))
    try:
        yield
    finally:
        _faults.pop()


def _maybe_fail(path: PathLike) -> None:
    if not _faults:
        return
    error, left = _faults[-1]
    if left > 0:
        _faults[-1] = (error, left - 1)
        return
    raise OSError(error, os.strerror(error), str(path))


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it back at once
    os.umask(mask)
    return mask


def write_temp(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to a new fsynced temporary file next to ``path`` and return its path.

    The caller renames it into place (``os.replace``) or deletes it. The file gets the mode
    an ordinary ``open`` would (0666 less the umask), not ``mkstemp``'s 0600.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with contextlib.suppress(OSError, AttributeError):  # no fchmod on Windows
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            _maybe_fail(target)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return Path(tmp)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Replace the file at ``path`` with ``data`` atomically: readers see old or new, never half.

    Args:
        path: The target file; its directory must exist.
        data: The complete new contents.
    """
    tmp = write_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(Path(path).parent)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """Like :func:`atomic_write_bytes` for text (no newline translation)."""
    atomic_write_bytes(path, text.encode(encoding))


def append_jsonl(path: PathLike, record: Mapping[str, Any]) -> None:
    """Append ``record`` as one JSON line to ``path`` (created if missing), flushed and fsynced.

    Non-finite floats are written as ``NaN``/``Infinity``, which Python's ``json`` reads back.

    Raises:
        TypeError: a value is not JSON-serialisable (convert tensors with ``.item()`` first).
    """
    line = json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n"
    _maybe_fail(path)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: PathLike) -> list[dict[str, Any]]:
    """Read the records of a JSONL file written by :func:`append_jsonl`.

    A last line without its newline (the process died mid-append) is skipped; any other
    malformed line raises ``ValueError`` naming the file and line number.
    """
    records = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number == len(lines):  # unterminated last line: an interrupted append
                break
            raise UsageError(f"{path}:{number}: not a JSON record ({e.msg})") from None
    return records


# ---------------------------------------------- training state <-> tensors + JSON
def tensor_copy(t: Tensor) -> Tensor:
    """A detached, contiguous CPU copy of ``t`` that shares no memory with it."""
    return t.detach().to("cpu").clone(memory_format=torch.contiguous_format)


def _encode(obj: Any, path: str, tensors: dict[str, Tensor]) -> Any:
    if isinstance(obj, Tensor):
        key = path
        while key in tensors:
            key += "'"
        tensors[key] = tensor_copy(obj)
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray) and obj.dtype.kind in "biuf":
        return {"__ndarray__": obj.dtype.str, "shape": list(obj.shape), "data": obj.tolist()}
    if isinstance(obj, np.generic) and obj.dtype.kind in "biuf":
        return {"__npscalar__": obj.dtype.str, "value": obj.item()}
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, f"{path}.{k}", tensors) for k, v in obj.items()}
        items = obj.items()
        return {
            "__items__": [
                [_encode(k, path, {}), _encode(v, f"{path}.{k}", tensors)] for k, v in items
            ]
        }
    raise StateError(
        f"cannot save {path}: unsupported type {type(obj).__name__}. A checkpoint state may hold "
        "tensors, numeric numpy arrays and scalars, and str/int/float/bool/None in dicts, lists "
        "and tuples"
    )


def flatten_state(obj: Any, root: str = "state") -> tuple[dict[str, Tensor], Any]:
    """Split a nested state (e.g. ``optimizer.state_dict()``) into tensors and a JSON-able tree.

    Exact: :func:`unflatten_state` rebuilds an equal structure, keeping int dict keys, tuples,
    non-finite floats, numpy arrays/scalars and tensor dtypes, so Adam resumes bit-identically.

    Args:
        obj: Tensors, numeric numpy arrays and scalars, None/bool/int/float/str, nested in dicts
            (any hashable keys of these types), lists and tuples.
        root: Prefix of the tensor keys, which are the dotted paths of the tensors in ``obj``.

    Returns:
        ``(tensors, tree)``: CPU copies of the tensors by key, and the rest with
        ``{"__tensor__": key}`` in place of each tensor.

    Raises:
        StateError: a value of another type, naming its path.
    """
    tensors: dict[str, Tensor] = {}
    return tensors, _encode(obj, root, tensors)


def unflatten_state(tensors: Mapping[str, Tensor], tree: Any) -> Any:
    """Invert :func:`flatten_state`.

    Raises:
        StateError: the tree refers to a tensor that ``tensors`` lacks.
    """
    if isinstance(tree, list):
        return [unflatten_state(tensors, v) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__tensor__" in tree:
        if tree["__tensor__"] not in tensors:
            raise StateError(f"the state refers to a missing tensor {tree['__tensor__']!r}")
        return tensors[tree["__tensor__"]]
    if "__ndarray__" in tree:
        array = np.array(tree["data"], dtype=np.dtype(tree["__ndarray__"]))
        return array.reshape(tree["shape"])
    if "__npscalar__" in tree:
        return np.dtype(tree["__npscalar__"]).type(tree["value"])
    if "__float__" in tree:
        return float(tree["__float__"])
    if "__tuple__" in tree:
        return tuple(unflatten_state(tensors, v) for v in tree["__tuple__"])
    if "__items__" in tree:
        return {unflatten_state({}, k): unflatten_state(tensors, v) for k, v in tree["__items__"]}
    return {k: unflatten_state(tensors, v) for k, v in tree.items()}

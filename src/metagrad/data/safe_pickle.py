"""Reading pickles from the internet without running them.

Every few-shot cache in the wild (``mini-imagenet-cache-*.pkl``, tiered-ImageNet's
``*_images_png.pkl`` and ``*_labels.pkl``, CIFAR-100's python batches) is a pickle, and
``pickle.load`` calls whatever global a pickle names: a file that names ``os.system`` runs a
shell command. :func:`load_pickle` admits only the globals that numpy arrays, lists, tuples,
dicts, numbers, strings and bytes need; anything else is refused, before it is called, with one
line naming it.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from metagrad.errors import UsageError

try:  # numpy >= 2 moved its internals to numpy._core; pickles name either spelling
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]


def _text_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 pickles bytes at protocol 2: only text codecs, since
    ``codecs.encode`` also reaches the compression codecs (a zip bomb is still a bomb)."""
    if codecs.lookup(encoding).name not in {"latin-1", "iso8859-1", "utf-8", "ascii"}:
        raise pickle.UnpicklingError(f"_codecs.encode with the {encoding!r} codec")
    return codecs.encode(text, encoding, errors)


# What a pickle of plain data may name. Each is a constructor of data, never of behaviour:
# _reconstruct/ndarray/dtype rebuild an array from its bytes, scalar a numpy number,
# _frombuffer an array pickled at protocol 5, _codecs.encode bytes pickled at protocol 2.
_NUMPY = {
    "multiarray": {
        "_reconstruct": _multiarray._reconstruct,
        "scalar": _multiarray.scalar,
        "ndarray": np.ndarray,
        "dtype": np.dtype,
    },
    "numeric": {"_frombuffer": _numeric._frombuffer},
}
_PLAIN = {t.__name__: t for t in (list, tuple, dict, int, float, str, bytes)}
_ALLOWED: dict[tuple[str, str], Any] = {
    ("_codecs", "encode"): _text_encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{("builtins", n): t for n, t in _PLAIN.items()},
    **{("__builtin__", n): t for n, t in {**_PLAIN, "long": int, "unicode": str}.items()},
}
for _core in ("numpy.core", "numpy._core"):
    for _module, _names in _NUMPY.items():
        _ALLOWED.update({(f"{_core}.{_module}", n): f for n, f in _names.items()})


class _Restricted(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


class _Refused(Exception):
    """A pickle named a global outside the allow-list."""


def load_pickle(path: Path | str, encoding: str = "ASCII") -> Any:
    """The data in the pickle at ``path``, refusing any pickle that names code.

    Args:
        path: the file.
        encoding: how Python 2 ``str`` objects are read; ``"latin1"`` for Python 2 pickles
            that hold numpy arrays (their keys then come back as ``str``), ``"bytes"`` to keep
            them as bytes.

    Raises:
        UsageError: the file is missing, truncated, not a pickle, or names a global that plain
            data never needs (nothing it names is ever called).
    """
    path = Path(path)
    try:
        # Streamed from the file: tiered-ImageNet's train pickle is gigabytes, and reading it
        # into memory first would double the peak.
        with path.open("rb") as f:
            return _Restricted(f, encoding=encoding).load()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file; check --root") from None
    except _Refused as e:
        raise UsageError(
            f"{path}: refused to load this pickle: it names {e}, which is not a numpy array, "
            "list, dict, number or string (the data sets never need it, and loading it could "
            "run code); use a copy of the file from the data set's official source"
        ) from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
        UnicodeDecodeError,
        MemoryError,
    ) as e:
        raise UsageError(
            f"{path}: not a complete pickle ({type(e).__name__}: {str(e)[:120]}); the file is "
            "truncated or damaged: copy or download it again"
        ) from None

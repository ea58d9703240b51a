"""Load learn2learn 0.2.0's MAML from its source, by path, without importing the package.

learn2learn 0.2.0 does not build from pip on Python 3.11, and ``import learn2learn`` pulls in
torchvision. ``benchmarks/setup_peers.sh`` downloads and extracts its source distribution into
``benchmarks/_peers/``; this module registers stub ``learn2learn`` and
``learn2learn.algorithms`` packages (no ``__init__`` code runs) and executes only
``learn2learn/utils/__init__.py``, ``algorithms/base_learner.py`` and ``algorithms/maml.py``.
No learn2learn code is copied into this repository.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

L2L_VERSION = "0.2.0"
L2L_ROOT = Path(__file__).resolve().parent / "_peers" / f"learn2learn-{L2L_VERSION}" / "learn2learn"
_MODULES = (
    ("learn2learn.utils", ("utils", "__init__.py"), True),
    ("learn2learn.algorithms.base_learner", ("algorithms", "base_learner.py"), False),
    ("learn2learn.algorithms.maml", ("algorithms", "maml.py"), False),
)


def load_l2l_maml(root: str | Path | None = None) -> type:
    """learn2learn's ``MAML`` class, loaded from ``root`` (default ``benchmarks/_peers/...``).

    Args:
        root: the ``learn2learn`` package directory of the extracted source distribution.

    Raises:
        FileNotFoundError: the source is missing; run ``bash benchmarks/setup_peers.sh``.
    """
    root = Path(root) if root is not None else L2L_ROOT
    missing = [root.joinpath(*p) for _, p, _ in _MODULES if not root.joinpath(*p).exists()]
    if missing:
        raise FileNotFoundError(
            f"learn2learn source not found ({missing[0]}): run bash benchmarks/setup_peers.sh"
        )
    loaded = sys.modules.get("learn2learn.algorithms.maml")
    if loaded is not None and hasattr(loaded, "MAML"):
        return loaded.MAML
    added: list[str] = []
    try:
        for name, sub in (("learn2learn", root), ("learn2learn.algorithms", root / "algorithms")):
            if name not in sys.modules:  # stub package: a search path, no __init__ executed
                pkg = types.ModuleType(name)
                pkg.__path__ = [str(sub)]
                pkg.__version__ = L2L_VERSION
                sys.modules[name] = pkg
                added.append(name)
        for name, parts, is_pkg in _MODULES:
            path = root.joinpath(*parts)
            locations = [str(path.parent)] if is_pkg else None
            spec = importlib.util.spec_from_file_location(
                name, path, submodule_search_locations=locations
            )
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            added.append(name)
            spec.loader.exec_module(module)
    except BaseException:
        for name in added:
            sys.modules.pop(name, None)
        raise
    return sys.modules["learn2learn.algorithms.maml"].MAML


def l2l_available(root: str | Path | None = None) -> bool:
    """Whether learn2learn's MAML can be loaded (source present and importable)."""
    try:
        load_l2l_maml(root)
    except (FileNotFoundError, ImportError):
        return False
    return True

"""What every figure of ``metagrad plot`` needs: matplotlib, imported lazily (the ``[plot]``
extra, headless), and saving a figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the headless Agg backend.

    Raises:
        ImportError: matplotlib is not installed (says what to install).
    """
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("plotting needs matplotlib: pip install 'metagrad[plot]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, plt: Any, path: Path) -> Path:
    """Write ``fig`` to ``path`` (90 dpi), close it and return ``path``."""
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

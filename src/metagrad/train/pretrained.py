"""Pretrained meta-initialisations shipped inside the package, by name.

Each is a small run directory under ``metagrad/pretrained/<folder>/`` (package data:
``config.toml``, ``preprocessing.json`` for images, and the ``best`` checkpoint), loaded
without a network by ``metagrad.load(NAME)`` and ``metagrad adapt NAME``; ``metagrad
pretrained`` lists them. A new one is an entry of :data:`PRETRAINED`::

    PRETRAINED.add("omniglot-maml-5w", PretrainedInit(
        "omniglot-maml-5w", "omniglot-maml-5w",
        trained_on="Omniglot, official background split", ways=5,
        accuracy="98.7% ± 0.4 (5-way 1-shot, 600 evaluation-split tasks)"))
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from metagrad.registry import Registry


@dataclass(frozen=True)
class PretrainedInit:
    """One shipped meta-initialisation.

    Attributes:
        name: what users type, e.g. ``"omniglot-maml-20w"``.
        folder: its run directory under ``metagrad/pretrained/``.
        trained_on: the data and split it was meta-trained on.
        ways: the classes of its meta-training tasks.
        accuracy: its measured test accuracy with the 95% interval and the protocol.
    """

    name: str
    folder: str
    trained_on: str
    ways: int | None
    accuracy: str

    @property
    def path(self) -> Path:
        """The run directory inside the installed package."""
        return Path(str(resources.files("metagrad") / "pretrained" / self.folder))

    def line(self) -> str:
        """One line of ``metagrad pretrained``: name first, then what it was trained on."""
        ways = f"{self.ways}-way" if self.ways else "regression"
        return f"{self.name}  {self.trained_on}; {ways}; test {self.accuracy}"


PRETRAINED: Registry[PretrainedInit] = Registry("pretrained initialisation")


def unknown_model(model: str) -> str:
    """The message for a ``MODEL`` that is neither a path nor a shipped initialisation."""
    close = difflib.get_close_matches(model, list(PRETRAINED), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    shipped = ", ".join(PRETRAINED) or "none are shipped in this version"
    return (
        f"no file, folder or pretrained initialisation named {model}{hint} Give a run "
        "directory, a checkpoint or an adapted model (.safetensors), or a pretrained "
        f"initialisation's name (`metagrad pretrained`: {shipped})"
    )


# The shipped initialisations (scripts/ship_pretrained.py writes their folders).
PRETRAINED.add(
    "sinusoid-maml",
    PretrainedInit(
        "sinusoid-maml",
        "sinusoid-maml",
        trained_on="sinusoids A sin(x - phase), A in [0.1, 5], phase in [0, pi] (MAML paper)",
        ways=None,
        accuracy="MSE 0.615 ± 0.063 / 0.350 ± 0.047 / 0.319 ± 0.045 after 1 / 5 / 10 steps "
        "(K = 5, 600 tasks; results/sinusoid/maml_10shot-1thread)",
    ),
)
PRETRAINED.add(
    "omniglot-maml-5w",
    PretrainedInit(
        "omniglot-maml-5w",
        "omniglot-maml-5w",
        trained_on="Omniglot, official background split (964 characters, rotations), MAML "
        "5-way 1-shot, 6,000 of the paper's 60,000 iterations",
        ways=5,
        accuracy="97.00% ± 0.67 (5-way 1-shot, 600 tasks of the evaluation alphabets, "
        "1 query per class, transductive BatchNorm, 1 step)",
    ),
)
PRETRAINED.add(
    "omniglot-maml-20w",
    PretrainedInit(
        "omniglot-maml-20w",
        "omniglot-maml-20w",
        trained_on="Omniglot, official background split (964 characters, rotations), MAML "
        "20-way 1-shot, 5,000 of the paper's 60,000 iterations",
        ways=20,
        accuracy="84.53% ± 0.65 (20-way 1-shot, 600 tasks of the evaluation alphabets, "
        "1 query per class, transductive BatchNorm, 5 steps)",
    ),
)

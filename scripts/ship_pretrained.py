"""Copy a run's best checkpoint into the package as a pretrained meta-initialisation.

    python scripts/ship_pretrained.py results/omniglot/maml_5w1s-official omniglot-maml-5w

Writes ``src/metagrad/pretrained/NAME/``: ``config.toml``, ``preprocessing.json`` (image runs),
``results.json`` (the accuracy ``metagrad pretrained`` lists) and a ``best`` checkpoint whose
state keeps only what adapting needs (the step and the learner's own state, e.g. Meta-SGD's
rates): no optimiser moments, random states or sampler, a third of a training checkpoint.
Then add the entry to ``PRETRAINED`` in ``src/metagrad/train/pretrained.py``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from metagrad.train.checkpoint import load_checkpoint, save_checkpoint, slim_state

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "metagrad" / "pretrained"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("name")
    parser.add_argument("--checkpoint", default="best")
    args = parser.parse_args()
    out = PACKAGE / args.name
    out.mkdir(parents=True, exist_ok=True)
    weights, state = load_checkpoint(args.run, args.checkpoint)
    save_checkpoint(out, "best", weights, slim_state(state))
    for name in ("config.toml", "preprocessing.json", "results.json"):
        if (args.run / name).exists():
            shutil.copyfile(args.run / name, out / name)
    print(f"{out}: {sorted(p.name for p in out.iterdir())}, step {state['step']}")


if __name__ == "__main__":
    main()

"""The ``metagrad`` command: train, test, resume, list, plot, data."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EPILOG = """examples:
  metagrad train configs/sinusoid/maml_10shot.toml
  metagrad train configs/omniglot/maml_5w1s.toml --set train.iterations=2000 --out runs/o5
  metagrad train --resume runs/o5
  metagrad train --resume runs/o5 --set train.iterations=20000   # train it further
  metagrad train configs/sinusoid/maml_10shot.toml --out runs/s --overwrite  # replace a run
  metagrad test runs/o5 --checkpoint best --set eval.tasks=2000
  metagrad plot runs/sinusoid-maml-10shot
  metagrad train configs/rl/maml_trpo_nav2d.toml
  metagrad plot runs/maml-trpo-nav2d --baseline runs/pretrained-nav2d
  metagrad adapt runs/o5 --support my_classes --query photos --out predictions.csv
  metagrad list
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="metagrad",
        description="Meta-learning experiments (MAML, FOMAML, Reptile) from one config file each.",
        epilog=EPILOG,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="meta-train an experiment, then meta-test it",
        description="Meta-train CONFIG into a run directory (validating and "
        "keeping the best checkpoint), then meta-test it. With --resume, continue "
        "the run in RUN_DIR exactly where its last checkpoint left off.",
    )
    t.add_argument("config", nargs="?", type=Path, help="experiment TOML file")
    t.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.iterations=500 (repeatable)",
    )
    t.add_argument("--out", type=Path, help="run directory (default: runs/<config name>)")
    t.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="resume the run in RUN_DIR (--set train.iterations=N extends it)",
    )
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out (deletes its checkpoints and metrics)",
    )
    t.add_argument("--no-test", action="store_true", help="skip the meta-test at the end")

    s = sub.add_parser(
        "test",
        help="meta-test a run (or a config) on fixed test tasks",
        description="Meta-test: adapt to eval.tasks fixed test tasks and report "
        "the query loss/accuracy after each inner step (mean ± 95% interval); "
        "writes results.json into the run directory (results-<checkpoint>-<overrides>.json "
        "for another checkpoint or --set, so the run's own result is never overwritten).",
    )
    s.add_argument("target", type=Path, help="a run directory, or a config file")
    s.add_argument(
        "--checkpoint",
        default="best",
        help="best (default; last if the run has no best), last, last.prev, or a "
        "path to a checkpoint's .safetensors file",
    )
    s.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an eval setting, e.g. --set eval.tasks=2000",
    )
    s.add_argument(
        "--out", type=Path, help="where results.json and config.toml go when TARGET is a config"
    )

    sub.add_parser("list", help="list configs, algorithms, models and task families")

    pl = sub.add_parser(
        "plot",
        help="draw a run's figures (PNG)",
        description="Learning curve of a run; for sinusoid runs also the "
        "adaptation figure of the MAML paper (Figure 2); for RL runs the return against "
        "the meta-iteration and against the adaptation steps (Figures 4 and 5) and the "
        "time per phase of a meta-iteration.",
    )
    pl.add_argument("run_dir", type=Path)
    pl.add_argument(
        "--baseline",
        type=Path,
        action="append",
        default=[],
        help="a run to draw alongside (e.g. pretrained, or a `metagrad test CONFIG --out "
        "DIR` of an untrained policy); repeatable",
    )

    a = sub.add_parser(
        "adapt",
        help="adapt a trained model to your own classes and classify images",
        description="Adapt MODEL to the classes of --support DIR (one sub-folder of images per "
        "class, the folder name is the class name) with the model's test-time inner loop, then "
        "classify every --query image (files, or the .png/.jpg/.jpeg files of folders). Images "
        "of any size and mode are preprocessed as the model's training images were; BatchNorm "
        "uses the support set's statistics, so each image's answer is its own.",
    )
    a.add_argument(
        "model",
        help="a run directory, a checkpoint (.safetensors), an adapted model (--save-adapted), "
        "or the name of a pretrained initialisation (metagrad pretrained)",
    )
    a.add_argument("--support", type=Path, metavar="DIR", help="one sub-folder of images per class")
    a.add_argument(
        "--query", nargs="+", required=True, metavar="PATH", help="image files or folders"
    )
    a.add_argument("--steps", type=int, help="inner steps (default: the model's test steps)")
    a.add_argument(
        "--head",
        choices=["trained", "zero", "prototypes"],
        help="how the classifier's head starts: trained (the meta-learned head; only when the "
        "classes are as many as its units), zero, or prototypes (any number of classes; "
        "default: trained when it fits, else prototypes)",
    )
    a.add_argument("--out", type=Path, metavar="FILE", help="write every prediction to this CSV")
    a.add_argument(
        "--save-adapted",
        type=Path,
        metavar="FILE",
        help="save the adapted model (safetensors) for metagrad.load or a later metagrad adapt",
    )
    sub.add_parser("pretrained", help="list the pretrained meta-initialisations shipped")

    d = sub.add_parser("data", help="download or prepare data sets")
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    dl = dsub.add_parser("download", help="download a data set's official files")
    dl.add_argument("dataset", choices=["omniglot"])
    dl.add_argument("--root", type=Path, required=True, help="directory to put the files in")
    pr = dsub.add_parser(
        "prepare",
        help="check a natural-image data set's layout and decode it once into a cache",
        description="Check the layout under --root (class counts per split, images per class, "
        "every file decodable), listing each problem on one line (exit 2), then decode and "
        "resize every image once into memory-mapped uint8 .npy files under --cache.",
    )
    pr.add_argument(
        "dataset", choices=["cub", "mini-imagenet", "tiered-imagenet", "cifar-fs", "fc100"]
    )
    pr.add_argument("--root", type=Path, required=True, help="the folder holding the data set")
    pr.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="where to write the prepared arrays (default: $XDG_CACHE_HOME/metagrad or "
        "~/.cache/metagrad; never the data root)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``metagrad`` console script."""
    args = _parser().parse_args(argv)
    from metagrad.cli import commands

    try:
        return commands.run(args)
    except commands.OtherRank as e:  # another process's error, which rank 0 reports
        return commands.other_rank(e)
    except BrokenPipeError:  # `metagrad list | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as e:  # a run's own message says what it saved
        said = str(e) or (
            "interrupted; a run continues from its last checkpoint with "
            "`metagrad train --resume RUN_DIR`"
        )
        print(f"metagrad {args.command}: {said}", file=sys.stderr)
        return 130
    except commands.USER_ERRORS as e:
        print(f"metagrad {args.command}: error: {commands.message(e)}", file=sys.stderr)
        return commands.exit_code(e)
    except RuntimeError as e:
        if not commands.out_of_memory(e):
            raise  # a bug: keep its traceback
        print(f"metagrad {args.command}: error: {commands.message(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

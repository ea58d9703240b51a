"""What each ``metagrad`` command does (argument parsing lives in :mod:`metagrad.cli.main`)."""

from __future__ import annotations

import argparse
import traceback
from pathlib import Path

from metagrad.cli.configs import did_you_mean, resolve_config, shipped_configs
from metagrad.config import (
    ALGORITHM_CONFIGS,
    MODEL_CONFIGS,
    TASK_CONFIGS,
    ConfigError,
    config_to_toml,
    load_config,
)
from metagrad.errors import DownloadError, UsageError
from metagrad.registry import UnknownName
from metagrad.train.checkpoint import CheckpointError, CheckpointWriteError
from metagrad.train.distributed import OtherRank, RankFailure, leading
from metagrad.train.io import atomic_write_text
from metagrad.train.rundir import CONFIG_FILE, WriteFailure

# Errors whose message tells the user what to do, printed as one line, with their exit code:
# 2 for a usage error (what was given is wrong), 1 for a failure at run time. Any other
# exception is a bug, and keeps its traceback.
# A damaged checkpoint is a usage error: the message names the intact one to give instead.
# A file the user pointed at that cannot be read, or a place they chose that cannot be written
# (permissions), is theirs to fix too.
USAGE_ERRORS = (
    UsageError,
    UnknownName,
    CheckpointError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    NotADirectoryError,
    IsADirectoryError,
)
# A full disk, a failed download, a diverged run or too little memory is the machine's or the
# run's state, not a bug: exit 1.
RUNTIME_ERRORS = (
    DownloadError,
    FloatingPointError,
    CheckpointWriteError,
    WriteFailure,
    OSError,
    MemoryError,
    RankFailure,  # another process of a torchrun died or hung
)
USER_ERRORS = USAGE_ERRORS + RUNTIME_ERRORS


def exit_code(error: BaseException) -> int:
    """2 for a usage error, 1 for a runtime failure (see :data:`USER_ERRORS`)."""
    return 2 if isinstance(error, USAGE_ERRORS) else 1


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation that failed: NumPy's MemoryError, or torch's
    RuntimeError from its CPU allocator (or its OutOfMemoryError on a GPU)."""
    if isinstance(error, MemoryError):
        return True
    return isinstance(error, RuntimeError) and (
        type(error).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(error)
    )


def other_rank(error: OtherRank) -> int:
    """The exit code of a process of a torchrun that stops for an error rank 0 reports (it
    says nothing; a bug keeps its traceback here, where it happened)."""
    if isinstance(error.error, KeyboardInterrupt):
        return 130
    if not isinstance(error.error, USER_ERRORS):
        traceback.print_exception(error.error)
    return exit_code(error.error)


def message(error: BaseException) -> str:
    """The one line printed for a user error: its message, or for running out of memory
    (whose message names an array shape, not a setting) what to lower."""
    if out_of_memory(error):
        shown = str(error).splitlines()[0] if str(error) else type(error).__name__
        shown = shown.split("DefaultCPUAllocator: ")[-1]
        return (
            f"out of memory ({shown}): lower train.meta_batch_size (or algorithm.chunk_size, "
            "eval.chunk_size, train.val_tasks) with --set; files already written are intact, "
            "and a run continues with `metagrad train --resume RUN_DIR`"
        )
    if isinstance(error, PermissionError) and error.filename:
        return (
            f"permission denied: {error.filename}; give yourself access (chmod u+rw) or use "
            "another path"
        )
    if isinstance(error, NotADirectoryError | IsADirectoryError) and error.filename:
        return f"{error.strerror}: {error.filename}; give another path"
    if isinstance(error, OSError) and not isinstance(error, USAGE_ERRORS):  # e.g. a full disk
        where = f" writing {error.filename}" if error.filename else ""
        return (
            f"{error.strerror or error}{where}: free disk space or fix the permissions, then "
            "run the command again"
        )
    return str(error)


def run(args: argparse.Namespace) -> int:
    commands = {"train": train, "test": test, "list": list_things, "plot": plot, "data": data}
    commands |= {"adapt": adapt, "pretrained": pretrained}
    return commands[args.command](args)


def train(args: argparse.Namespace) -> int:
    from metagrad.train.trainer import fail_together, resume_run
    from metagrad.train.trainer import train as train_run

    try:  # under torchrun, a process that cannot start stops the others with it
        if args.resume and args.overwrite:
            raise UsageError("--overwrite replaces a run; --resume continues one: give one")
        if args.resume and args.config:
            raise UsageError(
                "--resume continues a run with its own config.toml; give no CONFIG with it "
                "(--set train.iterations=N trains it further)"
            )
        if not args.resume and args.config is None:
            raise UsageError("give a CONFIG file to train, or --resume RUN_DIR")
        cfg = None if args.resume else load_config(resolve_config(args.config), args.overrides)
    except USER_ERRORS as e:
        fail_together(e)
    if args.resume:
        resume_run(args.resume, args.overrides, test=not args.no_test)
        return 0
    out = args.out or Path("runs") / cfg.name
    if leading():  # rank 0 speaks for the processes of a torchrun
        print(f"training {cfg.name} into {out}", flush=True)
    train_run(cfg, out, test=not args.no_test, overwrite=args.overwrite)
    return 0


def test(args: argparse.Namespace) -> int:
    from metagrad.train.checkpoint import intact_checkpoints
    from metagrad.train.results import results_file
    from metagrad.train.testing import run_test
    from metagrad.train.trainer import fail_together

    target: Path = args.target
    try:  # under torchrun, a process that cannot start stops the others with it
        if not target.exists():
            target = _config_file(target)
        cfg = load_config(target / "config.toml" if target.is_dir() else target, args.overrides)
    except USER_ERRORS as e:
        fail_together(e)
    if target.is_dir():
        checkpoint = args.checkpoint
        results = results_file(checkpoint, args.overrides)
        if checkpoint == "best" and "best" not in intact_checkpoints(target):
            checkpoint = "last"  # runs without validation keep only "last"
        run_test(target, checkpoint, cfg=cfg, results=results)
        if leading():
            print(f"wrote {target / results}", flush=True)
        return 0
    out = args.out or Path("runs") / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = args.checkpoint if args.checkpoint != "best" else "untrained"
    run_test(out, checkpoint, cfg=cfg)
    if leading() and not (out / CONFIG_FILE).exists():  # `metagrad test OUT` re-derives it
        header = f"metagrad test of {cfg.name}: re-test it with --checkpoint {checkpoint}"
        atomic_write_text(out / CONFIG_FILE, config_to_toml(cfg, header=header))
    return 0


def _config_file(target: Path) -> Path:
    try:
        return resolve_config(target)
    except ConfigError:
        raise FileNotFoundError(
            f"{target} does not exist: give a run directory (holding config.toml), a "
            f"config file or a config's name{did_you_mean(target)}; `metagrad list` shows "
            "the configs"
        ) from None


def list_things(args: argparse.Namespace) -> int:
    configs = shipped_configs()
    width = max(map(len, configs), default=0)
    print("configs (train or test one by its name or its file):")
    for name, path in configs.items():
        print(f"  {name:<{width}}  {path}")
    groups: dict[str, list[str]] = {}
    for name in ALGORITHM_CONFIGS:  # registration order: MAML and its family first
        groups.setdefault(ALGORITHM_CONFIGS[name].group, []).append(name)
    print("algorithms:")
    for group, names in groups.items():
        print(f"  {group + ':':<13} " + ", ".join(names))
    print("models: " + ", ".join(sorted(MODEL_CONFIGS)))
    print("task families: " + ", ".join(sorted(TASK_CONFIGS)))
    return 0


def adapt(args: argparse.Namespace) -> int:
    from metagrad.train.adapting import adapt_folders, summary, write_predictions

    report = adapt_folders(args.model, args.support, args.query, args.steps, args.head)
    if args.out is not None:
        write_predictions(args.out, report)
    if args.save_adapted is not None:
        report.adapted.save(args.save_adapted)
    print(summary(report))
    for path, what in ((args.out, "predictions"), (args.save_adapted, "adapted model")):
        if path is not None:
            print(f"wrote the {what} to {path}")
    return 0


def pretrained(args: argparse.Namespace) -> int:
    from metagrad.train.pretrained import PRETRAINED

    if not PRETRAINED:
        print(
            "no pretrained initialisations are shipped in this version: adapt a run of your "
            "own (metagrad adapt RUN_DIR --support DIR --query PATH)"
        )
    for entry in PRETRAINED.values():
        print(entry.line())
    return 0


def plot(args: argparse.Namespace) -> int:
    from metagrad.cli.plots import plot_run

    for path in plot_run(args.run_dir, args.baseline):
        print(f"wrote {path}")
    return 0


def data(args: argparse.Namespace) -> int:
    from metagrad.train.build import DOWNLOADS, PREPARE

    if args.data_command == "prepare":
        try:
            lines = PREPARE[args.dataset](args.root, args.cache, lambda m: print(m, flush=True))
        except UsageError as e:
            # A bad layout lists every problem on standard output, one per line; standard error
            # keeps its one line (the count and the first problem).
            for problem in getattr(e, "problems", []):
                print(f"problem: {problem}")
            raise
        for line in lines:
            print(f"ok {line}")
        return 0
    for path in DOWNLOADS[args.dataset](args.root):
        print(f"ok {path}")
    return 0

"""Meta-training: the run directory, exact resume, and the entry point of every kind of run.

A run directory holds ``config.toml`` (the resolved config), ``metrics.jsonl``, TensorBoard
events, checkpoints ``last`` and ``best`` and, after the final test, ``results.json``. A run
stopped at any point (even ``kill -9``) resumes from ``last`` exactly: on CPU, N steps, resume
and N more give bit-identical parameters to 2N uninterrupted steps.

:func:`train` hands supervised experiments to :mod:`metagrad.train.supervised` and RL ones to
:mod:`metagrad.train.rl_trainer`; both run :func:`metagrad.train.loop.run_loop`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import torch

from metagrad.config import (
    ExperimentConfig,
    TrainConfig,
    config_from_dict,
    config_to_toml,
    load_config,
)
from metagrad.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib
from metagrad.train.checkpoint import intact_checkpoints
from metagrad.train.distributed import (
    ONE,
    OtherRank,
    Ranks,
    echo,
    launched,
    process_group,
    same_config,
    share,
    together,
)
from metagrad.train.io import atomic_write_text
from metagrad.train.loop import TrainResult
from metagrad.train.rundir import (
    CONFIG_FILE,
    RESUMABLE,
    check_new_run,
    check_out_dir,
    flat_config,
    holds_run,
    resumable,
    run_lock,
)
from metagrad.train.supervised import train_supervised


def train(
    cfg: ExperimentConfig,
    run_dir: Path,
    resume: bool = False,
    test: bool = True,
    max_steps: int | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Meta-train ``cfg`` into ``run_dir`` (or resume the run there), then meta-test.

    Args:
        cfg: the experiment.
        run_dir: the run directory (see module docstring); locked while the run writes to it.
        resume: continue from the ``last`` checkpoint of ``run_dir`` (from step 0 if the run
            stopped before its first checkpoint).
        test: meta-test the best (else last) checkpoint at the end.
        max_steps: stop after this step (for tests and time-boxed runs); the run can resume.
        overwrite: delete a run already in ``run_dir`` first (else it is refused).

    Returns:
        The run directory, the steps done, the best validation metric and the test result
        (:class:`metagrad.evaluate.protocol.EvalResult`, or for RL
        :class:`metagrad.train.rl_testing.RLEvalResult`) if it ran.

    Raises:
        FileExistsError: ``run_dir`` holds a run and neither ``resume`` nor ``overwrite``.
        UsageError: ``run_dir`` is a file, unwritable, or in use by another process.
    """
    with process_group(cfg.train.dist_timeout_s) as ranks:
        agree_on_config(ranks, cfg)
        with _claimed(ranks, run_dir, resume, overwrite):
            return _train(cfg, run_dir, resume, test, max_steps, ranks)


@contextlib.contextmanager
def _claimed(ranks: Ranks, run_dir: Path, resume: bool, overwrite: bool) -> Iterator[None]:
    """Rank 0 takes ``run_dir`` (its lock, for the block) after checking it may; if it may
    not, every process stops with rank 0's error."""
    with contextlib.ExitStack() as held:
        with together(ranks):
            if ranks.leader:
                if not resume:
                    check_out_dir(run_dir)
                held.enter_context(run_lock(run_dir))
                if not resume:
                    check_new_run(run_dir, overwrite)
        yield


def agree_on_config(
    ranks: Ranks, cfg: ExperimentConfig | None, problem: BaseException | None = None
) -> None:
    """Check, at start-up, that every process of the run can train ``cfg``, the same one.

    Every process passes its config, or the ``problem`` that kept it from having one (it
    still comes, so that no other process waits for it in vain).

    Raises:
        UsageError: (rank 0; :class:`OtherRank` on the others) a process could not read its
            config, the configs differ (:func:`same_config`), or its meta-batches cannot be
            split over the processes.
    """
    same_config(ranks, cfg, problem)
    if ranks.many and (error := _unshardable(ranks, cfg)) is not None:
        raise echo(ranks, error)


def _unshardable(ranks: Ranks, cfg: ExperimentConfig) -> UsageError | None:
    """Why the meta-batches of ``cfg`` cannot be split over ``ranks.world`` processes."""
    tasks = cfg.train.meta_batch_size
    if cfg.task.kind == "rl":
        return UsageError(
            f"MAML-TRPO does not split its tasks over processes (started {ranks.world}): its "
            "environments already run in task.workers processes; start it as one process"
        )
    if ranks.world > tasks:
        return UsageError(
            f"{ranks.world} processes cannot split train.meta_batch_size = {tasks} task(s): "
            "each needs one task at least (the tasks of a meta-batch are split, never the "
            f"examples of a task); start at most {tasks}, or raise train.meta_batch_size"
        )
    if getattr(cfg.algorithm, "inner_state", "reset") == "carry":
        return UsageError(
            "Reptile's carried inner state (algorithm.inner_state = 'carry') runs the tasks of "
            "a meta-batch in sequence, which several processes cannot: use inner_state = "
            "'reset', or train on one process"
        )
    return None


def fail_together(problem: BaseException) -> NoReturn:
    """Raise ``problem`` (a bad config, a bad flag); under a launcher, first meet the other
    processes, which would otherwise wait for this one in vain, so that all stop with it
    (rank 0 reports it: :func:`agree_on_config`)."""
    if not launched():
        raise problem
    with process_group(TrainConfig.dist_timeout_s) as ranks:
        agree_on_config(ranks, None, problem)
    raise problem  # pragma: no cover - agree_on_config raised


def _train(
    cfg: ExperimentConfig,
    run_dir: Path,
    resume: bool,
    test: bool = True,
    max_steps: int | None = None,
    ranks: Ranks = ONE,
) -> TrainResult:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if cfg.task.kind == "rl":  # meta-RL: its own step, the same loop and run directory
        from metagrad.train.rl_trainer import train_rl

        return train_rl(cfg, run_dir, resume, test, max_steps)
    try:
        return train_supervised(cfg, run_dir, resume, test, max_steps, ranks)
    except (FloatingPointError, KeyboardInterrupt) as e:  # met by every process alike
        if ranks.many and not ranks.leader:
            raise OtherRank(e) from e
        raise


# What a resume may change (kept in one place, metagrad.train.rundir.RESUMABLE).
RESUMABLE_CHANGES = RESUMABLE


def resumed_config(run_dir: Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The config of the run in ``run_dir``, with ``overrides`` that only extend or re-log it.

    ``--set train.iterations=N`` continues a finished or stopped run to N iterations (the
    steps already taken are unchanged, so with a constant outer learning rate the result equals
    a run started with N). Anything that would change what a step computes is refused.

    Raises:
        FileNotFoundError: ``run_dir`` is not a run directory.
        ValueError: an override outside :data:`RESUMABLE_CHANGES`, an iteration count below the
            steps already done, or a new budget under a schedule that depends on it.
    """
    cfg_path = run_dir / CONFIG_FILE
    if not cfg_path.exists():
        if holds_run(run_dir):  # checkpoints without their config: never advise deleting them
            raise FileNotFoundError(
                f"{run_dir} has no {CONFIG_FILE}, so it cannot be resumed: put back the "
                "config.toml it was trained with, or train into another --out"
            )
        raise FileNotFoundError(
            f"{run_dir} has no {CONFIG_FILE}: it is not a metagrad run directory. Start a run "
            "with `metagrad train CONFIG --out NEW_DIR`."
        )
    cfg = load_config(cfg_path)
    if not overrides:
        return cfg
    new = load_config(cfg_path, overrides)
    before, after = flat_config(cfg), flat_config(new)
    changed = sorted(k for k in after if before.get(k) != after[k])
    refused = [k for k in changed if not resumable(k)]
    if refused:
        raise UsageError(
            f"--resume cannot change {', '.join(refused)}: it would change what the steps "
            f"already taken compute. A resume may only set {', '.join(RESUMABLE_CHANGES)}; "
            "start a new run (metagrad train CONFIG --set ...) for anything else."
        )
    if "train.iterations" in changed:
        done = read_step(run_dir)
        if new.train.iterations < done:
            raise UsageError(
                f"--set train.iterations={new.train.iterations}, but {run_dir} has already run "
                f"{done} iterations: give at least {done}."
            )
        if done and getattr(cfg.train, "outer_lr_schedule", "constant") != "constant":
            raise UsageError(
                f"{run_dir} anneals its outer learning rate over train.iterations="
                f"{cfg.train.iterations} (outer_lr_schedule = "
                f'"{cfg.train.outer_lr_schedule}"), so a new budget would change the steps '
                "already taken; start a new run with the budget you want."
            )
    if changed:
        atomic_write_text(cfg_path, config_to_toml(new, header=f"metagrad run {new.name}"))
        print(f"{run_dir}: {', '.join(f'{k} = {after[k]}' for k in changed)}", flush=True)
    return new


def read_step(run_dir: Path) -> int:
    """The step a resume of ``run_dir`` starts from (0 before the first checkpoint)."""
    found = intact_checkpoints(run_dir)
    return max((found[n] for n in ("last", "last.prev") if n in found), default=0)


def resume_run(run_dir: Path, overrides: Sequence[str] = (), **kw) -> TrainResult:
    """Resume the run in ``run_dir`` with the config it was started with.

    Args:
        run_dir: the run directory.
        overrides: ``--set`` values a resume may change (see :func:`resumed_config`), e.g.
            ``["train.iterations=20000"]`` to train a finished run further.
        **kw: passed to :func:`train`.
    """
    if not launched():
        if not (run_dir / CONFIG_FILE).exists():
            resumed_config(run_dir)  # raises, saying why
        with run_lock(run_dir):
            return _train(resumed_config(run_dir, overrides), run_dir, resume=True, **kw)
    # Several processes: rank 0 reads (and with overrides rewrites) the run's config.toml and
    # gives it to the others, which need not see the run directory.
    with process_group(_timeout(run_dir)) as ranks, _claimed(ranks, run_dir, True, False):
        text = share(ranks, lambda: config_to_toml(resumed_config(run_dir, overrides)))
        with together(ranks):
            cfg = config_from_dict(tomllib.loads(text), str(run_dir / CONFIG_FILE))
        agree_on_config(ranks, cfg)
        return _train(cfg, run_dir, resume=True, ranks=ranks, **kw)


def _timeout(run_dir: Path) -> float:
    """``train.dist_timeout_s`` of the run in ``run_dir``, if this process can read it."""
    try:
        return load_config(run_dir / CONFIG_FILE).train.dist_timeout_s
    except (UsageError, OSError):
        return TrainConfig.dist_timeout_s

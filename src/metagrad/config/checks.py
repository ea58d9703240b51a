"""Semantic checks across sections, and the test-time settings that fall back to training's."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from metagrad.config.schema import SECTIONS, ExperimentConfig, Problem


@dataclass(frozen=True)
class EvalSettings:
    """Test-time settings after ``None`` in ``[eval]`` has been replaced by training's value."""

    shots: int | None  # support examples (per class); None if the task family has no shots
    queries: int | None  # query examples (per class); None if the task family has no queries
    inner_steps: int  # adaptation steps (0 for algorithms that do not adapt)
    inner_lr: float | tuple[float, ...] | None  # step size(s); None if the algorithm has none
    trajectories: int | None = None  # RL: episodes per task and step; None for other families


def _training_lr(cfg: ExperimentConfig) -> float | tuple[float, ...] | None:
    algorithm = cfg.algorithm
    return getattr(algorithm, "inner_lr", None)


def _eval_steps(cfg: ExperimentConfig) -> int | None:
    if not cfg.algorithm.adapts:
        return 0
    if cfg.eval.inner_steps is not None:
        return cfg.eval.inner_steps
    return getattr(cfg.algorithm, "inner_steps", None)


def resolve_eval(cfg: ExperimentConfig) -> EvalSettings:
    """The settings meta-testing uses, with every ``None`` of ``cfg.eval`` resolved.

    Args:
        cfg: A validated config (as returned by the loader).

    Returns:
        Shots, queries, inner steps and inner learning rate(s) for test-time adaptation.
    """
    ev, task = cfg.eval, cfg.task
    steps = _eval_steps(cfg)
    if steps is None:  # only reachable for configs built without validation
        raise ValueError("eval.inner_steps must be set for this algorithm")
    lr = ev.inner_lr if ev.inner_lr is not None else _training_lr(cfg)
    trajectories = getattr(task, "test_trajectories", None) or getattr(task, "trajectories", None)
    return EvalSettings(
        shots=ev.shots if ev.shots is not None else getattr(task, "shots", None),
        queries=ev.queries if ev.queries is not None else getattr(task, "queries", None),
        inner_steps=steps,
        inner_lr=lr if cfg.algorithm.adapts else None,
        trajectories=trajectories,
    )


def val_metric(cfg: ExperimentConfig) -> str:
    """How a validation picks the best checkpoint: ``"last"`` or ``"mean"`` (over the adapted
    steps 1..K), with ``train.val_metric = "auto"`` resolved by the task's kind."""
    rule = cfg.train.val_metric
    if rule == "auto":
        return "last" if cfg.task.kind == "classification" else "mean"
    return rule


def selection_score(scores: dict[int, float], rule: str) -> float:
    """The number (higher is better) that picks the best checkpoint.

    Args:
        scores: a validation's score (accuracy, minus the loss, or the return) after each
            scored inner step ``0..K``.
        rule: ``"last"`` (the score after step K) or ``"mean"`` (the mean over the scored
            steps 1..K; the score before adaptation when K = 0), see :func:`val_metric`.
    """
    last = max(scores)
    adapted = [v for step, v in scores.items() if step > 0]
    score = scores[last] if rule == "last" or not adapted else sum(adapted) / len(adapted)
    return score if not math.isnan(score) else -math.inf  # NaN: diverged, never the best


def _top_level(cfg: ExperimentConfig) -> list[Problem]:
    problems = []
    name = cfg.name
    if name in ("", ".", "..") or any(c in "/\\" or not c.isprintable() for c in name):
        message = f"must be a non-empty name without slashes or control characters, got {name!r}"
        problems.append(("name", message))
    if cfg.seed < 0:
        problems.append(("seed", f"must be >= 0, got {cfg.seed}"))
    return problems


def _cross_section(cfg: ExperimentConfig) -> list[Problem]:
    task, model, algorithm = cfg.task, cfg.model, cfg.algorithm
    problems: list[Problem] = []

    def add(key: str, message: str) -> None:
        problems.append((key, message))

    if task.modality not in model.modalities:
        add(
            "model.name",
            f"model {model.name!r} takes {'/'.join(sorted(model.modalities))} inputs, but task "
            f"family {task.family!r} has {task.modality} inputs; use a model that accepts them",
        )
    channels, in_channels = getattr(task, "channels", None), getattr(model, "in_channels", None)
    if None not in (channels, in_channels) and channels != in_channels:
        add(
            "model.in_channels",
            f"is {in_channels} but {task.family} images have {channels} channel(s); "
            f"set model.in_channels = {channels}",
        )
    if task.kind not in algorithm.task_kinds:
        add(
            "algorithm.name",
            f"{algorithm.name!r} works only on {'/'.join(sorted(algorithm.task_kinds))} tasks, "
            f"but task family {task.family!r} is {task.kind}",
        )
    steps = _eval_steps(cfg)
    if steps is None:
        add(
            "eval.inner_steps",
            f"must be set for algorithm {algorithm.name!r}, which has no training inner loop to "
            "fall back to; e.g. inner_steps = 10 under [eval]",
        )
    lr = cfg.eval.inner_lr if cfg.eval.inner_lr is not None else _training_lr(cfg)
    differs = cfg.eval.inner_lr is not None or cfg.eval.inner_steps is not None
    if differs and algorithm.adapts and isinstance(lr, tuple) and steps not in (None, len(lr)):
        source = "eval.inner_lr" if cfg.eval.inner_lr is not None else "algorithm.inner_lr"
        add(
            "eval.inner_lr",
            f"test-time adaptation runs {steps} step(s) but {source} lists {len(lr)} per-step "
            f"rates; set eval.inner_lr to one float or a list of {steps}",
        )
    if cfg.train.reduce == "ordered" and getattr(algorithm, "inner_state", None) == "carry":
        add(
            "train.reduce",
            '"ordered" computes each task alone, but Reptile\'s carried inner state '
            '(algorithm.inner_state = "carry") runs the tasks in sequence: use "all_reduce"',
        )
    return problems


def config_problems(cfg: ExperimentConfig) -> list[Problem]:
    """Every semantic problem of ``cfg`` as ``(dotted key, message)``, in file order."""
    problems = _top_level(cfg)
    for section in SECTIONS:
        problems += [(f"{section}.{k}", msg) for k, msg in getattr(cfg, section).problems()]
        listed = {key for key, _ in problems}
        problems += [p for p in _not_finite(section, getattr(cfg, section)) if p[0] not in listed]
    return problems + _cross_section(cfg)


def _not_finite(section: str, values: object) -> list[Problem]:
    """Every float field holding inf or nan (TOML allows both): an infinite amplitude or
    step size passed the range checks and crashed deep in NumPy or diverged at step 1."""
    out = []
    for f in dataclasses.fields(values):  # type: ignore[arg-type]
        value = getattr(values, f.name)
        items = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in items):
            shown = list(value) if isinstance(value, tuple) else value
            out.append((f"{section}.{f.name}", f"must be finite, got {shown}"))
    return out

"""The MAML family as named algorithms: ANIL, BOIL, Meta-SGD and MAML++.

Each is :class:`~metagrad.config.schema.MAMLConfig` with its defining switches set (and fixed
where changing one would make it another algorithm): ``algorithm.name = "anil"`` is
``name = "maml"`` with ``inner_params = "head"``, and so on, so every MAML setting (paths,
chunks, the MAML++ switches) works for each. Importing this module adds them to
:data:`~metagrad.config.schema.ALGORITHM_CONFIGS` (``import metagrad.config`` does);
:func:`family_problems` adds the checks across sections.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

from metagrad.config.schema import (
    ALGORITHM_CONFIGS,
    ExperimentConfig,
    MAMLConfig,
    config_class,
)

Problem = tuple[str, str]


def _fixed(cfg: MAMLConfig, key: str, value: object, instead: str) -> Iterator[Problem]:
    if getattr(cfg, key) != value:
        yield key, f"is always {value!r} for {cfg.name}; {instead}"


@config_class
class ANILConfig(MAMLConfig):
    """ANIL (Raghu et al., 2020): only the head adapts in the inner loop, at training and test
    time; the body's features of each task are computed once and reused by every step."""

    name: ClassVar[str] = "anil"
    inner_params: str | tuple[str, ...] = "head"  # fixed: the head alone adapts

    def problems(self) -> Iterator[Problem]:
        yield from super().problems()
        yield from _fixed(self, "inner_params", "head", 'for another choice use name = "maml"')


@config_class
class BOILConfig(MAMLConfig):
    """BOIL (Oh et al., 2021): the body adapts in the inner loop, the head is held."""

    name: ClassVar[str] = "boil"
    inner_params: str | tuple[str, ...] = "body"  # fixed: the body alone adapts

    def problems(self) -> Iterator[Problem]:
        yield from super().problems()
        yield from _fixed(self, "inner_params", "body", 'for another choice use name = "maml"')


@config_class
class MetaSGDConfig(MAMLConfig):
    """Meta-SGD (Li et al., 2017): a learnable learning rate per weight element, starting at
    ``inner_lr`` and meta-trained with the initialisation; one inner step by default."""

    name: ClassVar[str] = "metasgd"
    learn_inner_lr: Literal["none", "per_element", "per_layer_per_step"] = "per_element"

    def problems(self) -> Iterator[Problem]:
        yield from super().problems()
        yield from _fixed(
            self, "learn_inner_lr", "per_element", 'for other rates use name = "maml"'
        )


@config_class
class MAMLPPConfig(MAMLConfig):
    """MAML++ (Antoniou et al., 2019, "How to train your MAML"): MAML with per-layer per-step
    learnable rates (LSLR), the multi-step loss (MSL), per-step BatchNorm weights (BNWB) and
    cosine annealing of the outer learning rate (CA: ``train.outer_lr_schedule = "cosine"``).

    The defaults are the paper's code's Omniglot configs (``omniglot_maml++-omniglot_1_8_0.1_64_
    {5,20}_0.json``): 5 steps from rate 0.1, MSL for 10 epochs of 500 iterations, derivative-
    order annealing off (``first_order_to_second_order_epoch = -1``). Each switch can be turned
    off alone.
    """

    name: ClassVar[str] = "mamlpp"
    inner_lr: float | tuple[float, ...] = 0.1  # where LSLR's rates start
    inner_steps: int = 5
    learn_inner_lr: Literal["none", "per_element", "per_layer_per_step"] = "per_layer_per_step"
    multi_step_loss_iterations: int = 5000  # MSL: 10 epochs x 500 iterations
    per_step_bn_weights: bool = True  # BNWB


for _cls in (ANILConfig, BOILConfig, MetaSGDConfig, MAMLPPConfig):
    ALGORITHM_CONFIGS.add(_cls.name, _cls)


def family_problems(cfg: ExperimentConfig) -> list[Problem]:
    """Problems across sections of a config of the MAML family (none for other algorithms)."""
    a, ev, model = cfg.algorithm, cfg.eval, cfg.model
    if not isinstance(a, MAMLConfig):
        return []
    problems: list[Problem] = []
    norm = getattr(model, "norm", "none")
    if a.per_step_bn_stats and norm != "running":
        problems.append(
            (
                "algorithm.per_step_bn_stats",
                f'keeps BatchNorm running statistics per step, but model.norm = "{norm}" keeps '
                'none; set model.norm = "running" (or turn it off: the transductive BatchNorm '
                "normalises with each batch's statistics, as the MAML++ paper's code does)",
            )
        )
    if a.per_step_bn_weights and norm == "none":
        problems.append(
            (
                "algorithm.per_step_bn_weights",
                'gives BatchNorm a scale and shift per step, but model.norm = "none" has no '
                "BatchNorm; use a norm, or turn it off",
            )
        )
    per_step = [
        what
        for what, on in (
            ("per-step learning rates", a.learn_inner_lr == "per_layer_per_step"),
            ("per-step BatchNorm", a.per_step_bn_weights or a.per_step_bn_stats),
        )
        if on
    ]
    if per_step and ev.inner_steps is not None and ev.inner_steps > a.inner_steps:
        problems.append(
            (
                "eval.inner_steps",
                f"is {ev.inner_steps}, but the {' and '.join(per_step)} are learned for "
                f"{a.inner_steps} steps (algorithm.inner_steps); test with at most that many",
            )
        )
    if a.learn_inner_lr != "none" and ev.inner_lr is not None:
        problems.append(
            (
                "eval.inner_lr",
                f"would replace the learned learning rates (learn_inner_lr = "
                f'"{a.learn_inner_lr}") at test time; remove it: the test adapts with them',
            )
        )
    return problems


__all__ = [
    "ANILConfig",
    "BOILConfig",
    "MAMLPPConfig",
    "MetaSGDConfig",
    "family_problems",
]

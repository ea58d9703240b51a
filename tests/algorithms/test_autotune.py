"""path="auto" measures: the fastest plan within the memory budget, by an injected clock and
memory probe (never the wall clock), cached per task shape, invisible to what training
computes."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from conftest import image_batch, regression_batch
from metagrad import MAML, Reptile
from metagrad.algorithms import learner as learner_module
from metagrad.algorithms.autotune import (
    Autotuner,
    Decision,
    Plan,
    budget_bytes,
    candidates,
    tensor_memory,
)
from metagrad.errors import UsageError
from metagrad.models import MLP, Conv4


@pytest.fixture(autouse=True)
def _measure(monkeypatch):
    monkeypatch.delenv("METAGRAD_MEASURE_PATHS", raising=False)


class Probes:
    """An injected clock and memory probe: each plan's seconds and bytes by its label, and
    every run counted."""

    def __init__(self, seconds: dict[str, float], used: dict[str, int]) -> None:
        self.seconds, self.used = seconds, used
        self.timed: list[str] = []
        self.measured: list[str] = []

    def timer(self, plan: Plan, fn) -> float:
        fn()
        self.timed.append(plan.label)
        return self.seconds[plan.label]

    def memory(self, plan: Plan, fn) -> int:
        fn()
        self.measured.append(plan.label)
        return self.used[plan.label]

    def tuner(self, budget: float = 1000) -> Autotuner:
        return Autotuner(budget, timer=self.timer, memory=self.memory)


LABELS = ("loop", "vectorized", "vectorized/16", "vectorized/8")


def mlp_maml(probes: Probes | None = None, budget: float = 1000, **kw) -> MAML:
    torch.manual_seed(0)
    maml = MAML(MLP(2, 1, (8,)).double(), torch.nn.functional.mse_loss, inner_lr=0.1, **kw)
    if probes is not None:
        maml.decide = probes.tuner(budget)
    return maml


def grads(learner) -> list[torch.Tensor]:
    return [p.grad.clone() for p in learner.parameters()]


def test_the_fastest_plan_within_the_budget_is_chosen():
    probes = Probes(dict(zip(LABELS, (4.0, 1.0, 2.0, 3.0))), dict(zip(LABELS, (10, 900, 500, 300))))
    maml = mlp_maml(probes)
    maml.backward(regression_batch(tasks=20))
    assert list(maml.plans.values()) == [Plan("vectorized", None)]
    assert probes.measured == list(LABELS)  # each plan's memory once
    # then timed, interleaved, twice, but not again when over 2x the fastest's first time
    assert probes.timed == [*LABELS, "vectorized", "vectorized/16"]
    (decision,) = maml.decide.decisions
    assert decision.fits and decision.budget == 1000
    assert [t.seconds for t in decision.trials] == [4.0, 1.0, 2.0, 3.0]


def test_a_plan_over_the_budget_is_never_timed_nor_chosen_even_if_fastest():
    probes = Probes(
        dict(zip(LABELS, (4.0, 1.0, 2.0, 3.0))), dict(zip(LABELS, (10, 5000, 500, 300)))
    )
    maml = mlp_maml(probes)
    maml.backward(regression_batch(tasks=20))
    assert list(maml.plans.values()) == [Plan("vectorized", 16)]
    assert "vectorized" not in probes.timed
    line = maml.decide.decisions[0].line()
    assert "vectorized not timed, 0 MB (over budget)" in line and line.startswith("path auto")


def test_when_every_plan_is_over_the_budget_the_least_memory_runs_and_says_so(caplog):
    probes = Probes(dict(zip(LABELS, (4.0, 1.0, 2.0, 3.0))), dict(zip(LABELS, (90, 900, 500, 300))))
    maml = mlp_maml(probes, budget=50)
    with caplog.at_level(logging.WARNING, "metagrad.algorithms.autotune"):
        maml.backward(regression_batch(tasks=20))
    assert list(maml.plans.values()) == [Plan("loop")] and probes.timed == []
    assert not maml.decide.decisions[0].fits
    assert "every plan is over algorithm.memory_budget" in caplog.text
    assert "lower train.meta_batch_size" in caplog.text


def test_a_plan_out_of_memory_is_not_chosen():
    probes = Probes(dict(zip(LABELS, (4.0, 1.0, 2.0, 3.0))), dict(zip(LABELS, (10, 9, 500, 300))))

    def memory(plan, fn):
        if plan.label == "vectorized":
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried ...")
        return probes.memory(plan, fn)

    maml = mlp_maml()
    maml.decide = Autotuner(1000, timer=probes.timer, memory=memory)
    maml.backward(regression_batch(tasks=20))
    assert list(maml.plans.values()) == [Plan("vectorized", 16)]
    assert "vectorized not timed, out of memory" in maml.decide.decisions[0].line()


def test_each_task_shape_is_measured_once():
    probes = Probes(dict(zip(LABELS, (4.0, 1.0, 2.0, 3.0))), dict.fromkeys(LABELS, 1))
    maml = mlp_maml(probes)
    batch = regression_batch(tasks=20)
    for _ in range(3):
        maml.backward(batch)
    assert len(probes.measured) == 4 and len(maml.plans) == 1
    maml.backward(regression_batch(tasks=20, support=3))  # another shape: measured anew
    assert len(probes.measured) == 8 and len(maml.plans) == 2


def test_measuring_changes_nothing_the_step_computes():
    """A step that measures first equals, bit for bit, the step forced onto the chosen plan:
    the same .grad (accumulated onto what was there), the same global random state after, the
    same schedule position."""
    probes = Probes(dict(zip(LABELS, (4.0, 3.0, 2.0, 1.0))), dict.fromkeys(LABELS, 1))
    batch = regression_batch(tasks=20)
    kw = dict(multi_step_loss_iterations=3, first_order_iterations=1)
    auto = mlp_maml(probes, **kw)
    forced = mlp_maml(path="vectorized", chunk_size=8, **kw)
    for learner in (auto, forced):
        for p in learner.parameters():
            p.grad = torch.ones_like(p)
    outs = []
    for learner in (auto, forced):
        torch.manual_seed(5)
        learner.backward(batch)  # first order: measured with this variant
        learner.backward(batch)  # second order from here: measured anew
        outs.append((grads(learner), torch.rand(3), learner.iteration))
    assert list(auto.plans.values()) == [Plan("vectorized", 8)] * 2
    (g_a, r_a, i_a), (g_f, r_f, i_f) = outs
    assert all(torch.equal(a, b) for a, b in zip(g_a, g_f, strict=True))
    assert torch.equal(r_a, r_f) and i_a == i_f == 2


def test_reptile_measuring_keeps_its_generator_and_carried_state():
    probes = Probes(dict(zip(("loop", "vectorized"), (2.0, 1.0))), {"loop": 1, "vectorized": 1})
    batch = regression_batch(tasks=4, support=6)

    def make(path):
        torch.manual_seed(0)
        model = MLP(2, 1, (8,)).double()
        return Reptile(
            model,
            torch.nn.functional.mse_loss,
            inner_lr=0.1,
            inner_steps=2,
            inner_optimizer="adam",
            inner_state="carry",
            inner_batch_size=2,
            generator=torch.Generator().manual_seed(3),
            path=path,
        )

    auto, forced = make("auto"), make("vectorized")
    auto.decide = probes.tuner()
    for learner in (auto, forced):
        for _ in range(2):
            for p in learner.parameters():
                p.grad = None
            learner.backward(batch)
    assert probes.measured == ["loop", "vectorized"]  # Reptile does not chunk: no chunk sizes
    assert all(torch.equal(a, b) for a, b in zip(grads(auto), grads(forced), strict=True))
    assert torch.equal(auto.generator.get_state(), forced.generator.get_state())
    assert torch.equal(auto.carried["t"]["steps"], forced.carried["t"]["steps"])


def test_an_explicit_path_never_measures():
    maml = mlp_maml(path="vectorized")

    def refuse(*args):
        raise AssertionError("measured an explicit path")

    maml.decide = refuse
    maml.backward(regression_batch(tasks=20))
    assert maml.plans == {}


def test_measuring_switched_off_follows_the_model_rule(monkeypatch):
    monkeypatch.setenv("METAGRAD_MEASURE_PATHS", "0")
    maml = mlp_maml(Probes({}, {}))
    maml.backward(regression_batch(tasks=20))
    assert maml.plans == {}


def test_candidates_are_the_plans_that_can_run_the_model():
    native, plain = MLP(2, 1, (8,)), nn.Sequential(nn.Linear(2, 1))
    every = [Plan("loop"), Plan("vectorized"), Plan("vectorized", 16), Plan("vectorized", 8)]
    assert candidates(native, 32, (None, 16, 8), False) == every
    # chunks of the whole meta-batch or more are the whole meta-batch
    assert candidates(native, 12, (None, 16, 8), False) == every[:2] + every[3:]
    assert candidates(plain, 4, (None, 16, 8), False) == [Plan("loop"), Plan("vmap")]
    assert candidates(native, 32, (5,), False) == [Plan("loop"), Plan("vectorized", 5)]
    assert candidates(native, 32, (None, 16, 8), True) == [Plan("loop")]


def test_running_statistics_run_the_loop_without_measuring():
    torch.manual_seed(0)
    maml = MAML(Conv4(3, filters=4, image_size=8, norm="running").double(), inner_lr=0.1)

    def refuse(*args):
        raise AssertionError("measured a loop-only model")

    maml.decide = refuse
    maml.backward(image_batch(tasks=2))
    assert list(maml.plans.values()) == [Plan("loop")]


def test_the_budget_is_a_fraction_of_the_available_memory_or_bytes():
    assert budget_bytes(0.5, lambda: 8000) == 4000
    assert budget_bytes(1, lambda: 8000) == 8000
    assert budget_bytes(3e9, lambda: 8000) == 3_000_000_000
    assert budget_bytes(0.5, lambda: None) == 2**63 - 1  # unknown: no limit


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), "half", True])
def test_a_bad_memory_budget_is_refused_in_one_line(bad):
    with pytest.raises(UsageError, match=r"^memory_budget must be a fraction .* got"):
        mlp_maml(memory_budget=bad)


def test_tensor_memory_is_the_peak_of_live_tensor_bytes():
    def work():
        a = torch.ones(1000, 250)  # 1 MB
        view = a[:10]  # a view: no new storage
        b = a * 2  # 1 MB more: peak 2 MB
        del a, view
        c = b + 1  # 1 MB more, a freed: 2 MB again
        return c.sum()

    assert 2_000_000 <= tensor_memory(Plan("loop"), work) <= 2_000_100


def test_decisions_round_trip_and_bad_records_teach():
    d = Decision("k", Plan("vectorized", 8), 1000, ())
    assert Decision.from_dict(d.to_dict()) == d
    bad = {**d.to_dict(), "path": "fast"}
    with pytest.raises(UsageError, match="path.json holds a path decision .* delete it"):
        Decision.from_dict(bad, "path.json")


def test_the_default_probes_measure_a_real_step(monkeypatch):
    """The default clock and probe run: Conv4's batched plans hold more tensors than the
    loop, which backpropagates one task at a time (no time asserted)."""
    monkeypatch.setattr(learner_module, "Autotuner", lambda budget: Autotuner(budget, repeats=1))
    torch.manual_seed(0)
    maml = MAML(Conv4(3, filters=4, image_size=8), inner_lr=0.1)
    maml.backward(image_batch(tasks=4, dtype=torch.float32))
    used = {t.plan.label: t.bytes for t in maml.decide.decisions[0].trials}
    assert set(used) == {"loop", "vectorized"} and 0 < used["loop"] < used["vectorized"]

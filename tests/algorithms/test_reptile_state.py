"""Reptile's inner Adam carried across tasks (``inner_state="carry"``, as the paper's code)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_rel_close, global_norm, image_batch
from metagrad import Reptile
from metagrad.functional.optim import Adam
from metagrad.models import Conv4


def test_adam_chain_equals_running_the_tasks_gradients_in_sequence():
    g = torch.Generator().manual_seed(0)
    adam, tasks, steps = Adam(betas=(0.5, 0.9)), 3, 4
    params = {"w": torch.randn(2, 3, generator=g, dtype=torch.float64), "b": torch.zeros(2)}
    start = {
        "m": {"w": torch.randn(2, 3, generator=g, dtype=torch.float64), "b": torch.ones(2)},
        "v": {"w": torch.rand(2, 3, generator=g, dtype=torch.float64), "b": torch.ones(2)},
        "t": {"steps": torch.tensor(7.0, dtype=torch.float64)},
    }
    # "b" gets no gradient (an unused parameter): its moments must stay as they are.
    grads = torch.randn(tasks, steps, 2, 3, generator=g, dtype=torch.float64)
    ends, sequential = [], start
    for i in range(tasks):
        state = start
        for s in range(steps):
            _, state = adam.step(params, {"w": grads[i, s]}, state, 0.1)
            _, sequential = adam.step(params, {"w": grads[i, s]}, sequential, 0.1)
        ends.append(state)
    stacked = {n: {k: torch.stack([e[n][k] for e in ends]) for k in start[n]} for n in start}
    chained = adam.sequential(start, stacked, steps, tasks)
    for n in ("m", "v"):
        for k in start[n]:
            assert_rel_close(chained[n][k], sequential[n][k], 1e-12, f"{n}.{k}")
    assert chained["t"]["steps"].item() == 7 + tasks * steps == sequential["t"]["steps"].item()


def make(path: str, inner_state: str = "carry") -> tuple[Reptile, torch.nn.Module]:
    torch.manual_seed(0)
    model = Conv4(3, filters=4, image_size=8).double()
    learner = Reptile(
        model,
        F.cross_entropy,
        inner_lr=0.01,
        inner_steps=3,
        inner_optimizer="adam",
        inner_state=inner_state,
        path=path,
    )
    return learner, model


def two_batches(learner: Reptile, model: torch.nn.Module) -> dict:
    learner.backward(image_batch(tasks=3))
    for p in model.parameters():
        p.grad = None
    learner.backward(image_batch(tasks=2, shots=3))  # another batch shape, from the carried state
    return {k: p.grad for k, p in model.named_parameters()}


def test_carried_state_vectorised_path_equals_loop():
    ref_learner, ref_model = make("loop")
    got_learner, got_model = make("vectorized")
    ref, got = two_batches(ref_learner, ref_model), two_batches(got_learner, got_model)
    for k in ref:
        if k.endswith("conv.bias"):  # cancelled by BatchNorm: Adam normalises rounding noise
            continue
        assert_rel_close(got[k], ref[k], 1e-10, k, global_norm(ref))
    for n in ("m", "v"):
        for k, v in ref_learner.carried[n].items():
            if k.endswith("conv.bias"):
                continue
            assert_rel_close(got_learner.carried[n][k], v, 1e-10, f"{n}.{k}")
    assert got_learner.carried["t"]["steps"].item() == 3 * 3 + 2 * 3


def test_carry_starts_like_reset_and_then_uses_the_state():
    carry_learner, carry_model = make("loop", "carry")
    reset_learner, reset_model = make("loop", "reset")
    carry_learner.backward(image_batch())
    reset_learner.backward(image_batch())
    for (k, a), b in zip(carry_model.named_parameters(), reset_model.parameters()):
        assert torch.equal(a.grad, b.grad), k  # the first tasks start from zero moments
    assert reset_learner.carried is None and reset_learner.inner_loop().state is None
    assert carry_learner.inner_loop().state is carry_learner.carried  # meta-test starts there
    carry, reset = two_batches(carry_learner, carry_model), two_batches(reset_learner, reset_model)
    assert max((carry[k] - reset[k]).abs().max().item() for k in carry) > 1e-4


def test_the_carried_state_round_trips_and_a_reset_learner_refuses_it():
    learner, _ = make("loop")
    learner.backward(image_batch())
    state = learner.state_dict()
    fresh, _ = make("loop")
    fresh.load_state_dict(state)
    assert fresh.carried is state["inner_state"]
    reset, _ = make("loop", "reset")
    assert reset.state_dict() == {}
    with pytest.raises(ValueError, match="inner_state = 'carry'"):
        reset.load_state_dict(state)


def test_carry_needs_an_optimizer_with_state():
    with pytest.raises(ValueError, match="inner_state must be"):
        make("loop", "keep")

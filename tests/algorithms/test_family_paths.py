"""ANIL, BOIL, Meta-SGD and MAML++ on every execution path, held to the per-task loop; the one
switch that runs on the loop alone (per-step running statistics) refuses the others."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from algorithms.test_paths import MODEL_CASES
from conftest import assert_rel_close, global_norm, image_batch
from metagrad import MAML
from metagrad.algorithms.per_step import norm_layers
from metagrad.errors import UsageError
from metagrad.models import Conv4


def _mamlpp(model, loss, path):
    # Every MAML++ switch at once (DA: first order at this first iteration); BNWB where the
    # model has BatchNorm.
    return MAML(
        model,
        loss,
        inner_lr=0.1,
        inner_steps=2,
        path=path,
        learn_inner_lr="per_layer_per_step",
        multi_step_loss_iterations=10,
        per_step_bn_weights=bool(norm_layers(model)),
    )


FAMILY = {
    "anil": lambda m, loss, path: MAML(
        m, loss, inner_lr=0.1, inner_steps=2, path=path, inner_params="head"
    ),
    "boil": lambda m, loss, path: MAML(
        m, loss, inner_lr=0.1, inner_steps=2, path=path, inner_params="body"
    ),
    "metasgd": lambda m, loss, path: MAML(
        m, loss, inner_lr=0.1, inner_steps=2, path=path, learn_inner_lr="per_element"
    ),
    "mamlpp": _mamlpp,
}


def grads_of(case: str, algorithm: str, path: str, dtype):
    make_model, loss, make_batch = MODEL_CASES[case]
    torch.manual_seed(0)
    model = make_model().to(dtype)
    learner = FAMILY[algorithm](model, loss, path)
    out = learner.backward(make_batch(dtype=dtype))
    grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    grads |= {k: t.grad for k, t in learner.learned().items()}
    return grads, out


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("path", ["vectorized", "vmap"])
@pytest.mark.parametrize("algorithm", FAMILY)
@pytest.mark.parametrize("case", [c for c in MODEL_CASES if c != "resnet12"])
def test_every_family_member_on_every_path_equals_the_loop(case, algorithm, path, dtype, tol):
    ref, ref_out = grads_of(case, algorithm, "loop", dtype)
    got, out = grads_of(case, algorithm, path, dtype)
    assert ref.keys() == got.keys()
    scale = global_norm(ref)
    for k in ref:
        # A per-layer rate's meta-gradient is one dot product over every element of its
        # parameter (inner gradient . query gradient): in float32 its rounding differs between
        # the paths by up to 1.7e-5 (measured over these cases); 1e-10 in float64.
        scalar_rate = dtype == torch.float32 and k.startswith("inner_lr") and ref[k].dim() == 0
        assert_rel_close(got[k], ref[k], 1e-4 if scalar_rate else tol, k, scale)
    assert_rel_close(out.task_losses, ref_out.task_losses, tol, "task losses")
    assert_rel_close(out.query_out, ref_out.query_out, tol, "query outputs")


@pytest.mark.parametrize("algorithm", FAMILY)
def test_resnet12_family_on_the_vectorized_path_equals_the_loop(algorithm):
    ref, _ = grads_of("resnet12", algorithm, "loop", torch.float64)
    got, _ = grads_of("resnet12", algorithm, "vectorized", torch.float64)
    scale = global_norm(ref)
    for k in ref:
        assert_rel_close(got[k], ref[k], 1e-10, k, scale)


@pytest.mark.parametrize("path", ["vectorized", "vmap"])
def test_per_step_running_statistics_refuse_the_batched_paths_in_one_line(path):
    model = Conv4(3, filters=4, image_size=8, norm="running")
    with pytest.raises(UsageError) as e:
        MAML(model, inner_lr=0.1, inner_steps=2, per_step_bn_stats=True, path=path)
    assert "\n" not in str(e.value)
    assert f"path={path!r}" in str(e.value) and "path='loop'" in str(e.value)


def test_per_step_running_statistics_run_on_the_loop_and_never_touch_the_model():
    model = Conv4(3, filters=4, image_size=8, norm="running").double()
    before = {k: b.clone() for k, b in model.named_buffers()}
    learner = MAML(model, F.cross_entropy, inner_lr=0.1, inner_steps=2, per_step_bn_stats=True)
    assert learner.executor.path == "loop"  # "auto" runs running statistics on the loop
    stats = {k: v.clone() for k, v in learner.per_step.items()}
    learner.backward(image_batch())
    for k, v in learner.per_step.items():  # step s's support forward updated row s
        assert all(not torch.equal(v[s], stats[k][s]) for s in range(2)), k
    for k, b in model.named_buffers():
        if "running" in k:
            assert torch.equal(b, before[k]), k
    # In eval() mode step s normalises with row s: a different row, a different output.
    model.eval()
    x, y = image_batch().support_x[0], image_batch().support_y[0]
    phi = learner.adapt(x, y, inner_steps=1)
    one = learner.predict(phi, x)
    with torch.no_grad():
        for v in learner.per_step.values():
            v[0] += 1.0
    assert not torch.allclose(learner.predict(learner.adapt(x, y, inner_steps=1), x), one)

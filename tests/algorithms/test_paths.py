"""The vectorised paths held to the per-task loop, for every built-in model and algorithm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_rel_close, global_norm, image_batch, regression_batch
from metagrad import MAML, Reptile
from metagrad.models import MLP, MODELS, BatchNorm, Conv4, ResNet12, kernels
from metagrad.models.conv4 import ConvBlock

MODEL_CASES = {
    "mlp": (lambda: MLP(2, 1, (6, 5)), F.mse_loss, regression_batch),
    "mlp+bn": (
        lambda: MLP(64, 3, (8, 6), norm="transductive", input_dims=3),
        F.cross_entropy,
        image_batch,
    ),
    "conv4-stride": (lambda: Conv4(3, filters=4, image_size=8), F.cross_entropy, image_batch),
    "conv4-max": (
        lambda: Conv4(3, filters=4, image_size=16, pool="max"),
        F.cross_entropy,
        lambda dtype: image_batch(size=16, dtype=dtype),
    ),
    "conv4-nonorm": (
        lambda: Conv4(3, filters=4, image_size=8, norm="none"),
        F.cross_entropy,
        image_batch,
    ),
    "resnet12": (
        # RGB: with one input channel, BatchNorm cancels the first 1x1 shortcut's scale and its
        # gradient is pure rounding noise.
        lambda: ResNet12(3, in_channels=3, widths=(2, 3, 3, 4)),
        F.cross_entropy,
        lambda dtype: image_batch(channels=3, size=16, dtype=dtype),
    ),
}
ALGORITHMS = {
    "maml": lambda m, loss, path: MAML(m, loss, inner_lr=0.1, inner_steps=2, path=path),
    "fomaml": lambda m, loss, path: MAML(
        m, loss, inner_lr=0.1, inner_steps=2, first_order=True, path=path
    ),
    "maml-chunked": lambda m, loss, path: MAML(
        m, loss, inner_lr=[0.1, 0.05], inner_steps=2, path=path, chunk_size=2
    ),
    "reptile": lambda m, loss, path: Reptile(m, loss, inner_lr=0.1, inner_steps=3, path=path),
    "reptile-adam": lambda m, loss, path: Reptile(
        m, loss, inner_lr=0.01, inner_steps=3, inner_optimizer="adam", path=path
    ),
}


def cancelled_biases(model: torch.nn.Module) -> set[str]:
    """Names of biases of layers directly followed by a BatchNorm (which cancels them)."""
    names = set()
    for prefix, seq in model.named_modules():
        if isinstance(seq, ConvBlock) and isinstance(seq.norm, BatchNorm):
            names.add(f"{prefix}.conv.bias")
        if isinstance(seq, torch.nn.Sequential):
            for (i, a), b in zip(enumerate(seq), list(seq)[1:]):
                if isinstance(b, BatchNorm) and getattr(a, "bias", None) is not None:
                    names.add(f"{prefix}.{i}.bias".lstrip("."))
    return names


def test_every_registered_model_has_a_case():
    assert {name.split("-")[0].split("+")[0] for name in MODEL_CASES} == set(MODELS)


def grads_of(make_model, loss, make_batch, algorithm, path, dtype):
    torch.manual_seed(0)
    model = make_model().to(dtype)
    out = ALGORITHMS[algorithm](model, loss, path).backward(make_batch(dtype=dtype))
    return {k: p.grad for k, p in model.named_parameters()}, out


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("path", ["vectorized", "vmap"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", MODEL_CASES)
def test_vectorised_path_equals_loop(case, algorithm, path, dtype, tol):
    if algorithm == "reptile-adam" and dtype == torch.float32:
        pytest.skip(
            "Adam normalises each gradient element, amplifying float32 rounding noise "
            "of near-zero gradients; its exactness is checked in float64"
        )
    if case == "resnet12" and dtype == torch.float32:
        # Thirteen layers deep, float32 rounding differs by up to 2e-5 between the paths
        # (measured); their exactness is held at 1e-10 in float64.
        tol = 1e-4
    make_model, loss, make_batch = MODEL_CASES[case]
    ref, ref_out = grads_of(make_model, loss, make_batch, algorithm, "loop", dtype)
    got, out = grads_of(make_model, loss, make_batch, algorithm, path, dtype)
    assert ref.keys() == got.keys()
    for k in ref:
        if algorithm == "reptile-adam" and k in cancelled_biases(make_model()):
            # BatchNorm cancels these biases: their gradient is rounding noise, which Adam
            # normalises to about +-lr. Exactness for them is checked with SGD and MAML.
            continue
        assert_rel_close(got[k], ref[k], tol, k, global_norm(ref))
    assert_rel_close(out.task_losses, ref_out.task_losses, tol, "task losses")
    assert_rel_close(out.query_out, ref_out.query_out, tol, "query outputs")


@pytest.mark.parametrize("impl", sorted(kernels.CONV_IMPLS))
def test_every_per_task_convolution_kernel_equals_loop(impl):
    previous = kernels.get_conv_impl()
    try:
        kernels.set_conv_impl(impl)
        make_model, loss, make_batch = MODEL_CASES["conv4-max"]
        ref, _ = grads_of(make_model, loss, make_batch, "maml", "loop", torch.float64)
        got, _ = grads_of(make_model, loss, make_batch, "maml", "vectorized", torch.float64)
    finally:
        kernels.set_conv_impl(previous)
    for k in ref:
        assert_rel_close(got[k], ref[k], 1e-10, k, global_norm(ref))


def test_unknown_conv_impl_is_refused():
    with pytest.raises(ValueError, match="unknown conv implementation 'fft'"):
        kernels.set_conv_impl("fft")


def test_native_batch_norm_of_torch_nn_under_vmap_path():
    # A user model with torch.nn.BatchNorm2d (batch statistics only): the vmap forward is
    # differentiated by ordinary autograd outside vmap, which stays exact in second order.
    def make():
        return torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3),
            torch.nn.BatchNorm2d(4, track_running_stats=False),
            torch.nn.ReLU(),
            torch.nn.Flatten(),
            torch.nn.Linear(144, 3),
        )

    ref, _ = grads_of(make, F.cross_entropy, image_batch, "maml", "loop", torch.float64)
    got, _ = grads_of(make, F.cross_entropy, image_batch, "maml", "vectorized", torch.float64)
    for k in ref:
        assert_rel_close(got[k], ref[k], 1e-10, k, global_norm(ref))


def test_auto_path_follows_the_measured_preference_for_the_task_sizes():
    from metagrad import TaskBatch
    from metagrad.algorithms.paths import TaskExecutor

    def batch(ways, shots, queries):
        x = torch.zeros(2, ways * (shots + queries), 1, 28, 28)
        y = torch.zeros(2, ways * (shots + queries), dtype=torch.long)
        k = ways * shots
        return TaskBatch(x[:, :k], y[:, :k], x[:, k:], y[:, k:])

    strided, pooled = Conv4(5, pool="stride"), Conv4(5, pool="max")
    running = Conv4(5, pool="stride", norm="running")
    expected = [
        (strided, batch(5, 1, 1), "vectorized"),  # MAML's Omniglot 5-way 1-shot: 10 images
        (strided, batch(20, 1, 1), "vectorized"),  # 20-way 1-shot: 40 images
        (strided, batch(5, 5, 5), "loop"),  # 50 images
        (strided, batch(5, 1, 15), "loop"),
        (pooled, batch(5, 1, 1), "loop"),  # 28x28 activations
        (running, batch(5, 1, 1), "loop"),  # running statistics: the loop only
        (MLP(4, 2, (8,)), None, "vectorized"),
    ]
    for model, b, path in expected:
        assert TaskExecutor.create(model, "auto", b).path == path
    assert TaskExecutor.create(strided, "auto").path == "loop"  # sizes unknown: the reference
    assert TaskExecutor.create(strided, "loop", batch(5, 1, 1)).path == "loop"  # forced

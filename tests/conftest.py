"""Shared fixtures: small deterministic task batches for the engine tests, and prepared
natural-image caches for the runs."""

from __future__ import annotations

import os

import pytest
import torch

from metagrad.types import TaskBatch
from reliability.catalogue import cli, keep  # noqa: F401  (the catalogue's fixtures)

# Tests use one thread (and so do the commands they spawn): results are then bit-reproducible,
# and small tensors do not pay OpenMP synchronisation, which on a loaded 2-core machine costs
# milliseconds per operation.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)
# path = "auto" follows the models' rule instead of timing the paths by the wall clock, so that
# separate runs compared bit for bit take the same path (tests/algorithms/test_autotune.py
# measures, with injected clocks and memory probes).
os.environ["METAGRAD_MEASURE_PATHS"] = "0"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def regression_batch(tasks=3, support=6, query=7, features=2, dtype=torch.float64) -> TaskBatch:
    g = torch.Generator().manual_seed(1)
    return TaskBatch(
        torch.randn(tasks, support, features, generator=g, dtype=dtype),
        torch.randn(tasks, support, 1, generator=g, dtype=dtype),
        torch.randn(tasks, query, features, generator=g, dtype=dtype),
        torch.randn(tasks, query, 1, generator=g, dtype=dtype),
    )


def image_batch(tasks=3, ways=3, shots=2, queries=2, channels=1, size=8, dtype=torch.float64):
    g = torch.Generator().manual_seed(2)
    return TaskBatch(
        torch.randn(tasks, ways * shots, channels, size, size, generator=g, dtype=dtype),
        torch.arange(ways).repeat_interleave(shots).repeat(tasks, 1),
        torch.randn(tasks, ways * queries, channels, size, size, generator=g, dtype=dtype),
        torch.randint(0, ways, (tasks, ways * queries), generator=g),
    )


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Norm of the difference over the norm of the reference ``b``."""
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def assert_rel_close(
    actual: torch.Tensor, expected: torch.Tensor, tol: float, name: str = "", scale: float = 0.0
):
    """Relative error by norm below ``tol``.

    A tensor whose exact value is zero (the gradient of a bias that BatchNorm cancels) has no
    scale of its own: its error is measured against ``scale`` (the norm of the whole gradient)
    once its own norm is below ``1e-6 * scale``.
    """
    denom = expected.norm().item()
    if denom < 1e-6 * scale:
        denom = scale
    err = (actual - expected).norm().item() / max(denom, 1e-300)
    assert err < tol, f"{name}: relative error {err:.3g} >= {tol}"


def global_norm(tensors: dict) -> float:
    return torch.sqrt(sum(t.double().norm() ** 2 for t in tensors.values())).item()


@pytest.fixture(scope="session")
def natural_cache(tmp_path_factory):
    """A cache folder where every natural-image family is prepared from fixtures in its real
    format, 2 images per class (``--set task.cache=...`` points a run at it)."""
    from metagrad.data import prepare
    from natural_fixtures import write_cifar100, write_cub, write_mini_pkl, write_tiered

    base = tmp_path_factory.mktemp("natural")
    cache = base / "cache"
    write_cub(base / "cub", per_class=2)
    write_mini_pkl(base / "mini", per_class=2)
    write_tiered(base / "tiered", per_class=2)
    write_cifar100(base / "cifar", per_class=1)  # 1 per half: 2 per class
    for name, root in [
        ("cub", "cub"),
        ("mini-imagenet", "mini"),
        ("tiered-imagenet", "tiered"),
        ("cifar-fs", "cifar"),
        ("fc100", "cifar"),
    ]:
        prepare(name, base / root, cache)
    return cache

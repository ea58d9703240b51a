"""The benchmark harness counts FLOPs reproducibly and catches wrong meta-gradients.

Nothing here is timed: the tests run tiny settings once and check what the harness computes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: ``benchmarks``

from benchmarks.l2l_loader import l2l_available, load_l2l_maml
from benchmarks.measure import check_gradients, compare_grads, count_flops, working_memory
from benchmarks.models import metagrad_model, twin
from benchmarks.peers import Implementation, build_implementations
from benchmarks.settings import SETTINGS, Setting, make_batch, select_settings

TINY = Setting("tiny", "tiny test setting", ways=3, queries=2, tasks=2, size=16, filters=4)
TINY_MLP = SETTINGS["sinusoid"].replace(tasks=2, shots=3, queries=3)


def build(setting: Setting, pool: str, patterns: list[str] | None = None):
    reference = metagrad_model(setting, pool, seed=0)
    impls, skipped = build_implementations(setting, pool, reference, patterns)
    return {i.name: i for i in impls}, skipped


def grad_fns(impls: dict[str, Implementation], batch) -> dict:
    return {n: (lambda i=i: i.meta_grad(batch)) for n, i in impls.items()}


class Scaled(Implementation):
    """A deliberately wrong implementation: a correct one whose gradient is scaled."""

    def __init__(self, inner: Implementation, factor: float) -> None:
        super().__init__("scaled", "peer", inner.model, inner.setting)
        self.inner, self.factor = inner, factor

    def meta_backward(self, batch) -> None:
        self.inner.meta_backward(batch)
        for p in self.model.parameters():
            p.grad.mul_(self.factor)


@pytest.mark.parametrize("pool", ["max", "stride"])
def test_reference_flops_positive_and_stable(pool):
    impls, _ = build(TINY, pool, ["metagrad-loop"])
    loop, batch = impls["metagrad-loop"], make_batch(TINY)
    counts = [count_flops(lambda: loop.meta_grad(batch)) for _ in range(2)]
    assert counts[0] > 0 and counts[0] == counts[1]
    # Every task is the same amount of work: twice the tasks is exactly twice the FLOPs.
    double = TINY.replace(tasks=2 * TINY.tasks)
    impls2, _ = build(double, pool, ["metagrad-loop"])
    batch2 = make_batch(double)
    assert count_flops(lambda: impls2["metagrad-loop"].meta_grad(batch2)) == 2 * counts[0]


def test_first_order_counts_fewer_flops():
    so, _ = build(TINY, "max", ["metagrad-loop"])
    fo, _ = build(TINY.replace(first_order=True), "max", ["metagrad-loop"])
    batch = make_batch(TINY)
    n_so = count_flops(lambda: so["metagrad-loop"].meta_grad(batch))
    n_fo = count_flops(lambda: fo["metagrad-loop"].meta_grad(batch))
    assert 0 < n_fo < n_so


def test_grad_check_flags_a_wrong_implementation():
    impls, _ = build(TINY, "max", ["metagrad-loop", "metagrad-vec-*"])
    batch = make_batch(TINY)
    wrong_fo = build(TINY.replace(first_order=True), "max", ["metagrad-loop"])[0]["metagrad-loop"]
    fns = grad_fns(impls, batch)
    fns["first-order"] = lambda: wrong_fo.meta_grad(batch)
    slightly = twin_impl(impls["metagrad-loop"], 1.001)
    fns["scaled"] = lambda: slightly.meta_grad(batch)
    checks = check_gradients(fns, "metagrad-loop", tol=1e-4)
    assert checks["metagrad-loop"].ok and checks["metagrad-loop"].worst_rel == 0.0
    for name in impls:
        assert checks[name].ok, (name, checks[name])
    assert not checks["first-order"].ok
    assert not checks["scaled"].ok and checks["scaled"].worst_rel == pytest.approx(1e-3, rel=1e-2)


def twin_impl(impl: Implementation, factor: float) -> Implementation:
    """A wrong twin of ``impl`` on its own copy of the weights."""
    clone = build(impl.setting, "max", ["metagrad-loop"])[0]["metagrad-loop"]
    return Scaled(clone, factor)


def test_compare_grads_zero_tensor_and_names():
    ref = {"w": torch.ones(3), "b": torch.zeros(2)}
    close = {"w": torch.ones(3), "b": torch.full((2,), 1e-9)}
    assert compare_grads(close, ref, 1e-4).ok  # zero reference: judged on the global norm
    assert not compare_grads({"w": torch.ones(3)}, ref, 1e-4).ok
    nan = {"w": torch.full((3,), float("nan")), "b": torch.zeros(2)}
    assert not compare_grads(nan, ref, 1e-4).ok


@pytest.mark.parametrize(
    ("setting", "pool", "peer", "module"),
    [
        (TINY, "max", "higher", "higher"),
        (TINY, "stride", "higher", "higher"),
        (TINY.replace(first_order=True, steps=2), "max", "higher", "higher"),
        (TINY.replace(steps=2), "max", "torchopt", "torchopt"),
        (TINY, "stride", "torchopt-func", "torchopt"),
        (TINY.replace(first_order=True), "max", "torchopt-func", "torchopt"),
        (TINY_MLP, "mlp", "higher", "higher"),
    ],
)
def test_peers_agree_with_metagrad(setting, pool, peer, module):
    pytest.importorskip(module)
    impls, skipped = build(setting, pool, ["metagrad-loop", "metagrad-auto", peer])
    assert peer in impls, skipped
    checks = check_gradients(grad_fns(impls, make_batch(setting)), "metagrad-loop", 1e-4)
    assert all(c.ok for c in checks.values()), checks


def test_learn2learn_agrees_with_metagrad():
    if not l2l_available():
        pytest.skip("learn2learn source not fetched (bash benchmarks/setup_peers.sh)")
    for setting in (TINY, TINY.replace(first_order=True, steps=2)):
        impls, _ = build(setting, "max", ["metagrad-loop", "l2l"])
        checks = check_gradients(grad_fns(impls, make_batch(setting)), "metagrad-loop", 1e-4)
        assert set(checks) == {"metagrad-loop", "l2l"} and all(c.ok for c in checks.values())


def test_l2l_loader_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="setup_peers.sh"):
        load_l2l_maml(tmp_path)


def test_models_share_weights_and_math():
    reference = metagrad_model(SETTINGS["reference"], "max")
    assert sum(p.numel() for p in reference.parameters()) == 112_261  # BASELINE.md's Conv4
    for pool in ("max", "stride"):
        ours = metagrad_model(TINY, pool)
        theirs = twin(ours, TINY, pool)
        x = torch.randn(6, 1, 16, 16)
        torch.testing.assert_close(theirs(x), ours(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="parameters differ"):  # refused, never half-copied
        twin(metagrad_model(TINY, "max"), TINY.replace(filters=8), "max")


def test_settings_and_batches():
    assert {"reference", "k5", "fo", "20w1s", "q1", "sinusoid", "mini"} <= set(SETTINGS)
    with pytest.raises(ValueError, match="unknown settings"):
        select_settings("reference,nope")
    batch = make_batch(SETTINGS["20w1s"].replace(tasks=2))
    assert batch.support_x.shape == (2, 20, 1, 28, 28) and batch.query_y.shape == (2, 300)
    assert batch.support_y.dtype == torch.int64
    # The MAML paper's own Omniglot settings (issue 19): strided Conv4, queries = shots.
    paper = select_settings("5w1s-q1,20w1s-q1,5w5s-q5")
    assert [(s.ways, s.shots, s.queries, s.steps, s.tasks) for s in paper] == [
        (5, 1, 1, 1, 32),
        (20, 1, 1, 5, 16),
        (5, 5, 5, 1, 32),
    ]
    assert all(s.pools == ("stride",) and not s.first_order for s in paper)


def test_compare_reports_the_plan_auto_picked(monkeypatch):
    """compare.py names the plan ``metagrad-auto`` measured and chose (nothing timed here)."""
    from benchmarks.compare import _auto_picks

    monkeypatch.delenv("METAGRAD_MEASURE_PATHS", raising=False)
    impls, _ = build(TINY, "stride", ["metagrad-auto"])
    impls["metagrad-auto"].meta_grad(make_batch(TINY))  # its first step measures
    picked = _auto_picks(impls)
    assert list(picked) == ["metagrad-auto"]  # the loop's path is given: nothing measured
    (decision,) = picked["metagrad-auto"]
    assert decision["label"] in ("loop", "vectorized")
    assert [t["path"] for t in decision["trials"]] == ["loop", "vectorized"]


def test_chunked_variants_only_when_named_and_equal_to_the_loop():
    """``metagrad-vec-grouped-c2`` runs the vectorised path in chunks of 2 tasks (the memory
    sweep); a wildcard never builds chunked variants, so a default run times none of them."""
    impls, _ = build(TINY, "stride", ["metagrad-vec-*"])
    assert not any("-c" in name.removeprefix("metagrad-vec-") for name in impls)
    impls, _ = build(TINY, "stride", ["metagrad-vec-grouped-c2"])
    assert set(impls) == {"metagrad-loop", "metagrad-vec-grouped-c2"}
    chunked = impls["metagrad-vec-grouped-c2"]
    assert chunked.maml.chunk_size == 2 and chunked.conv == "grouped"
    checks = check_gradients(grad_fns(impls, make_batch(TINY)), "metagrad-loop", 1e-4)
    assert all(check.ok for check in checks.values()), checks


def test_exact_meta_gradients_are_float64_and_leave_the_timed_models_alone():
    """compare.py decides correctness in float64, on fresh copies of every implementation."""
    from benchmarks.compare import exact_meta_gradients

    reference = metagrad_model(TINY, "stride", seed=0)
    patterns = ["metagrad-vec-grouped", "l2l"] if l2l_available() else ["metagrad-vec-grouped"]
    exact = exact_meta_gradients(TINY, "stride", reference, patterns, make_batch(TINY))
    assert {"metagrad-loop", "metagrad-vec-grouped"} <= set(exact)
    assert all(g.dtype == torch.float64 for grads in exact.values() for g in grads.values())
    assert next(reference.parameters()).dtype == torch.float32
    checks = check_gradients({n: (lambda n=n: exact[n]) for n in exact}, "metagrad-loop", 1e-10)
    assert all(c.ok for c in checks.values()), checks


def test_working_memory_sees_an_allocation():
    used, how = working_memory(lambda: torch.ones(16 * 2**20).sum())  # 64 MB
    assert used >= 48 * 2**20, (used, how)


def test_isolated_working_memory_runs_in_a_fresh_process():
    from benchmarks.memory import MemoryJob, isolated_working_memory

    setting = SETTINGS["sinusoid"].replace(tasks=4)
    kwargs = {"setting": setting, "pool": "mlp", "name": "metagrad-loop"}
    used, how = isolated_working_memory(MemoryJob("benchmarks.peers:build_one", kwargs, setting))
    assert how in ("VmHWM", "sampled RSS") and 0 <= used < 256 * 2**20
    with pytest.raises(ValueError, match="'nope' cannot run here"):
        isolated_working_memory(
            MemoryJob("benchmarks.peers:build_one", {**kwargs, "name": "nope"}, setting)
        )


def test_kernel_table_counts_every_layer_of_the_strided_conv4():
    from benchmarks.kernel_table import rows

    setting = SETTINGS["20w1s-q1"].replace(tasks=2, ways=3, size=16, filters=4)
    table = rows(setting, repeats=1)
    # The 1-channel first block runs folded (metagrad.models.fold): one kernel, as Conv4 runs it.
    assert [r["kernel"].split(":")[0] for r in table] == [
        "conv 1 + BatchNorm + ReLU, folded",
        *(f"{k} {i}" for i in range(2, 5) for k in ("conv", "BatchNorm + ReLU")),
    ]
    convs = [r["flop"] for r in [table[0], *table[1::2]]]
    assert all(f > 0 for f in convs) and convs[1] > convs[2] > convs[3]
    assert all(r["flop"] == 0 and r["bytes"] > 0 for r in table[2::2])

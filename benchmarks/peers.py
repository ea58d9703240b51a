"""Every implementation of a MAML meta-iteration behind one interface, ``step(batch)``.

A step is ``zero_grad``, the meta-gradient of the mean query loss over the tasks of ``batch``
accumulated into ``.grad``, and an Adam step: what a training loop runs. Each implementation
owns its model (a copy of the same initial weights) and its Adam optimiser.

metagrad runs its built-in models on each execution path (``loop``, ``vectorized`` with each
per-task convolution of ``metagrad.models.kernels.CONV_IMPLS``, ``auto``). The peers run the
plain ``torch.nn`` twin of the model the way their documentation teaches, backpropagating task by
task (their low-memory usage): learn2learn ``MAML.clone()/adapt()``, higher
``innerloop_ctx(copy_initial_weights=False)``, torchopt ``MetaSGD`` with
``extract_state_dict``/``recover_state_dict`` and torchopt's functional API (``torchopt.sgd``,
``apply_updates``) over ``torch.func.functional_call``.

Test-episode settings (``mode="test"``) have implementations of their own in
:mod:`benchmarks.episodes`; :func:`build_implementations` builds either kind.
"""

from __future__ import annotations

import copy
import fnmatch
import importlib.util
import re

import torch
from torch import Tensor, nn
from torch.func import functional_call

import metagrad
from benchmarks.l2l_loader import load_l2l_maml
from benchmarks.models import loss_fn, metagrad_model, twin
from benchmarks.settings import Setting
from metagrad import TaskBatch
from metagrad.models import kernels

DEFAULT_CONV = kernels.get_conv_impl()  # what "auto" and the library default use


class Implementation:
    """One way of computing a meta-iteration.

    Args:
        name: short unique name (``--impls`` matches it).
        family: ``"metagrad"`` or ``"peer"``.
        model: the network this implementation trains (its own copy).
        setting: the benchmark setting (inner loop, loss, outer learning rate).
        names: the names under which ``meta_grad`` reports the parameters, in the order of
            ``model.parameters()`` (default: the model's own); peers use metagrad's names, so
            that gradients compare tensor by tensor.
    """

    def __init__(
        self,
        name: str,
        family: str,
        model: nn.Module,
        setting: Setting,
        names: list[str] | None = None,
    ) -> None:
        self.name, self.family, self.model, self.setting = name, family, model, setting
        self.names = names or [n for n, _ in model.named_parameters()]
        self.loss = loss_fn(setting)
        self.opt = torch.optim.Adam(model.parameters(), lr=setting.outer_lr)
        self.detail = ""

    def prepare(self) -> None:
        """Set process-wide switches this implementation needs (called before every run)."""

    def meta_backward(self, batch: TaskBatch) -> None:
        """Accumulate the meta-gradient (mean over tasks) into the model's ``.grad``."""
        raise NotImplementedError

    def step(self, batch: TaskBatch) -> None:
        """One meta-training iteration: ``zero_grad``, meta-gradient, Adam step."""
        self.prepare()
        self.opt.zero_grad(set_to_none=True)
        self.meta_backward(batch)
        self.opt.step()

    def outputs(self, batch: TaskBatch) -> dict[str, Tensor]:
        """What the harness checks against the reference: here the meta-gradient (test episodes
        check their predictions, see :mod:`benchmarks.episodes`)."""
        return self.meta_grad(batch)

    def meta_grad(self, batch: TaskBatch) -> dict[str, Tensor]:
        """The meta-gradient of ``batch`` at the current weights, by parameter name (no step)."""
        self.prepare()
        self.opt.zero_grad(set_to_none=True)
        self.meta_backward(batch)
        return {
            n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
            for n, p in zip(self.names, self.model.parameters())
        }


class MetagradImpl(Implementation):
    """``metagrad.MAML(...).backward(batch)`` on one path (and per-task convolution).

    Extra keyword ``options`` go to ``metagrad.MAML`` (e.g. ``recompute_inner=True``).
    """

    def __init__(self, name, model, setting, path: str, conv: str | None = None, **options) -> None:
        super().__init__(name, "metagrad", model, setting)
        self.conv = conv or DEFAULT_CONV
        self.maml = metagrad.MAML(
            model,
            self.loss,
            inner_lr=setting.inner_lr,
            inner_steps=setting.steps,
            first_order=setting.first_order,
            path=path,
            **options,
        )
        self.detail = f"path={path}" + (f", conv={self.conv}" if setting.net == "cnn" else "")
        self.detail += "".join(f", {k}={v}" for k, v in options.items())
        self.path = path

    def prepare(self) -> None:
        if kernels.get_conv_impl() != self.conv:
            kernels.set_conv_impl(self.conv)

    def meta_backward(self, batch: TaskBatch) -> None:
        self.maml.backward(batch)

    def auto_decisions(self) -> list:
        """What ``path="auto"`` measured and chose so far (:class:`Decision` records; none for
        an explicit path, or with measuring switched off: then it runs the model's rule)."""
        return list(getattr(self.maml.decide, "decisions", []))


class L2LImpl(Implementation):
    """learn2learn 0.2.0 ``MAML``: ``clone()``, ``adapt(loss)`` per step, backward per task."""

    def __init__(self, name, model, setting, names=None) -> None:
        super().__init__(name, "peer", model, setting, names)
        self.maml = load_l2l_maml()(model, lr=setting.inner_lr, first_order=setting.first_order)

    def meta_backward(self, batch: TaskBatch) -> None:
        for task in batch:
            learner = self.maml.clone()
            for _ in range(self.setting.steps):
                learner.adapt(self.loss(learner(task.support_x), task.support_y))
            (self.loss(learner(task.query_x), task.query_y) / batch.num_tasks).backward()


class HigherImpl(Implementation):
    """higher ``innerloop_ctx(copy_initial_weights=False)`` with an SGD inner optimiser.

    First order: ``track_higher_grads=False`` (fast weights detached after each step), the query
    gradient at the adapted weights added to the initial weights' ``.grad`` (higher's FOMAML).
    """

    def __init__(self, name, model, setting, names=None) -> None:
        super().__init__(name, "peer", model, setting, names)
        import higher

        self.higher = higher
        self.inner_opt = torch.optim.SGD(model.parameters(), lr=setting.inner_lr)

    def meta_backward(self, batch: TaskBatch) -> None:
        fo, params = self.setting.first_order, list(self.model.parameters())
        for task in batch:
            with self.higher.innerloop_ctx(
                self.model, self.inner_opt, copy_initial_weights=False, track_higher_grads=not fo
            ) as (fmodel, diffopt):
                for _ in range(self.setting.steps):
                    diffopt.step(self.loss(fmodel(task.support_x), task.support_y))
                query = self.loss(fmodel(task.query_x), task.query_y) / batch.num_tasks
                if not fo:
                    query.backward()
                    continue
                for p, g in zip(params, torch.autograd.grad(query, fmodel.fast_params)):
                    p.grad = g if p.grad is None else p.grad + g


class TorchoptMetaSGDImpl(Implementation):
    """torchopt ``MetaSGD`` on the module, state saved and restored around every task."""

    def __init__(self, name, model, setting, names=None) -> None:
        super().__init__(name, "peer", model, setting, names)
        import torchopt

        self.torchopt = torchopt
        self.inner_opt = torchopt.MetaSGD(model, lr=setting.inner_lr)

    def meta_backward(self, batch: TaskBatch) -> None:
        to = self.torchopt
        net_state = to.extract_state_dict(self.model, by="reference", detach_buffers=True)
        opt_state = to.extract_state_dict(self.inner_opt, by="reference")
        for task in batch:
            for _ in range(self.setting.steps):
                self.inner_opt.step(self.loss(self.model(task.support_x), task.support_y))
            (self.loss(self.model(task.query_x), task.query_y) / batch.num_tasks).backward()
            to.recover_state_dict(self.model, net_state)
            to.recover_state_dict(self.inner_opt, opt_state)


class TorchoptFuncImpl(Implementation):
    """torchopt's functional API: ``torchopt.sgd`` update + ``apply_updates`` on a params tuple."""

    def __init__(self, name, model, setting, names=None) -> None:
        super().__init__(name, "peer", model, setting, names)
        import torchopt

        self.torchopt = torchopt
        self.inner = torchopt.sgd(lr=setting.inner_lr)
        self.own_names = [n for n, _ in model.named_parameters()]  # for functional_call

    def meta_backward(self, batch: TaskBatch) -> None:
        create_graph = not self.setting.first_order
        base = tuple(self.model.parameters())
        for task in batch:
            params, state = base, self.inner.init(base)
            for _ in range(self.setting.steps):
                out = functional_call(
                    self.model, dict(zip(self.own_names, params)), (task.support_x,)
                )
                grads = torch.autograd.grad(
                    self.loss(out, task.support_y), params, create_graph=create_graph
                )
                updates, state = self.inner.update(grads, state, params=params, inplace=False)
                params = self.torchopt.apply_updates(params, updates, inplace=False)
            out = functional_call(self.model, dict(zip(self.own_names, params)), (task.query_x,))
            (self.loss(out, task.query_y) / batch.num_tasks).backward()


def resolved_path(model: nn.Module) -> str:
    """What ``path="auto"`` runs for ``model`` ("loop", "vectorized", "vmap"), if metagrad says."""
    try:
        from metagrad.algorithms.paths import resolve_path

        return resolve_path(model, "auto")
    except (ImportError, ValueError):  # pragma: no cover - depends on metagrad internals
        return "unknown"


PEERS = {
    "l2l": (L2LImpl, None),
    "higher": (HigherImpl, "higher"),
    "torchopt": (TorchoptMetaSGDImpl, "torchopt"),
    "torchopt-func": (TorchoptFuncImpl, "torchopt"),
}


# A vectorised path in chunks of N tasks, e.g. "metagrad-vec-grouped-c4": built only when named
# exactly (a chunk sweep for the memory goal), never by a wildcard.
CHUNKED = re.compile(r"metagrad-vec-(\w+)-c(\d+)")


def metagrad_variants(
    setting: Setting, patterns: list[str] | None = None
) -> list[tuple[str, str, str | None, dict]]:
    """``(name, path, conv, MAML options)`` of every metagrad variant of a training setting;
    conv kernels read from CONV_IMPLS now; chunked variants only as named in ``patterns``."""
    variants: list[tuple[str, str, str | None, dict]] = [("metagrad-loop", "loop", None, {})]
    if setting.recompute:
        variants.append(("metagrad-loop-recompute", "loop", None, {"recompute_inner": True}))
    if not setting.batched:
        return variants
    if setting.net == "cnn":
        variants += [(f"metagrad-vec-{c}", "vectorized", c, {}) for c in kernels.CONV_IMPLS]
    else:
        variants.append(("metagrad-vec", "vectorized", None, {}))
    for pattern in patterns or ():
        if (m := CHUNKED.fullmatch(pattern)) and m[1] in kernels.CONV_IMPLS:
            variants.append((pattern, "vectorized", m[1], {"chunk_size": int(m[2])}))
    return [*variants, ("metagrad-auto", "auto", None, {})]


def selected(name: str, patterns: list[str] | None) -> bool:
    """Whether ``name`` matches one of the ``fnmatch`` patterns (all when none given)."""
    return not patterns or any(fnmatch.fnmatch(name, p) for p in patterns)


def build_implementations(
    setting: Setting, pool: str, reference: nn.Module, patterns: list[str] | None = None
) -> tuple[list[Implementation], dict[str, str]]:
    """All implementations of ``setting`` that can run here, from ``reference``'s weights.

    Args:
        setting: the benchmark setting.
        pool: the model variant ("max", "stride" or "mlp").
        reference: the metagrad model whose initial weights every implementation copies.
        patterns: ``fnmatch`` patterns of implementation names to keep (None: all).

    Returns:
        The implementations (``metagrad-loop`` first, the reference the others are checked
        against) and, for each one left out, why.
    """
    if setting.mode == "test":
        from benchmarks.episodes import build_episodes  # it imports this module

        return build_episodes(setting, pool, reference, patterns)
    impls: list[Implementation] = []
    skipped: dict[str, str] = {}
    for name, path, conv, options in metagrad_variants(setting, patterns):
        if name == "metagrad-loop" or selected(name, patterns):
            model = copy.deepcopy(reference)
            impls.append(MetagradImpl(name, model, setting, path, conv, **options))
    for name in setting.peers:
        if not selected(name, patterns):
            continue
        cls, module = PEERS[name]
        if module is not None and importlib.util.find_spec(module) is None:
            skipped[name] = f"{module} not installed (pip install -e '.[bench]')"
        elif name == "torchopt" and setting.first_order:
            skipped[name] = "MetaSGD has no first-order mode (see torchopt-func)"
        else:
            try:
                names = [n for n, _ in reference.named_parameters()]
                impls.append(cls(name, twin(reference, setting, pool), setting, names))
            except (FileNotFoundError, ImportError, ValueError) as e:
                skipped[name] = str(e)
    return impls, skipped


def build_one(setting: Setting, pool: str, name: str, seed: int = 0) -> Implementation:
    """The implementation ``name`` of :func:`build_implementations` alone (for a process of its
    own, see ``benchmarks.memory``)."""
    reference = metagrad_model(setting, pool, seed)
    impls, skipped = build_implementations(setting, pool, reference, [name])
    found = [i for i in impls if i.name == name]
    if not found:
        raise ValueError(f"implementation {name!r} cannot run here: {skipped.get(name, 'unknown')}")
    return found[0]

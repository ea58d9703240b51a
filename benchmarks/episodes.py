"""Test episodes: adapt to each task's support set, then predict its queries (no meta-gradient).

What ``metagrad test`` does per episode, against learn2learn doing the same. Adaptation is first
order in every implementation (no prediction is differentiated, so a second-order graph would
only cost memory; ``metagrad.evaluate`` always adapts so):

- ``metagrad-loop``: ``MAML.adapt`` then ``MAML.predict`` per task, the public deployment API:
  the inner steps and one forward pass of the queries, the same work as the peer. It is the
  reference the others' predictions are checked against, and whose FLOPs are counted.
- ``metagrad-test``: :func:`metagrad.evaluate.evaluate` called as ``metagrad test`` calls it
  (``metagrad.train.testing.evaluate_split``: path ``auto``, the test's inner steps and rate,
  ``EvalConfig``'s default ``score_every``). It scores the queries after every inner step
  (metagrad test's per-step table), so it runs ``steps`` more query forward passes than the
  others: what the per-step report costs.
- ``l2l``: learn2learn's ``MAML(first_order=True)``: ``clone()``, ``adapt()`` per step, then the
  query forward pass under ``torch.no_grad()``.

Each one's :meth:`~EpisodeImpl.outputs` is what the harness checks: per task the query loss and
accuracy after the last step, and the query logits where the implementation exposes them
(``metagrad.evaluate`` reports only the loss and the accuracy).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

import metagrad
from benchmarks.l2l_loader import load_l2l_maml
from benchmarks.models import twin
from benchmarks.peers import Implementation, resolved_path, selected
from benchmarks.settings import Setting
from metagrad import TaskBatch
from metagrad.config import EvalConfig
from metagrad.evaluate import evaluate


def scores(logits: Tensor, labels: Tensor, loss) -> dict[str, Tensor]:
    """Per-task query loss and accuracy of ``logits [tasks, n_query, ways]`` (as
    ``metagrad.evaluate`` computes them), with the logits themselves."""
    losses = torch.stack([loss(out, y) for out, y in zip(logits, labels)])  # [tasks]
    accuracy = (logits.argmax(-1) == labels).float().mean(-1)  # [tasks]
    return {"loss": losses, "accuracy": accuracy, "logits": logits}


class EpisodeImpl(Implementation):
    """One way of running test episodes; ``step(batch)`` runs one episode per task."""

    def predictions(self, batch: TaskBatch) -> dict[str, Tensor]:
        """Adapt to every task's support set and score its queries (see :func:`scores`)."""
        raise NotImplementedError

    def step(self, batch: TaskBatch) -> None:
        self.prepare()
        self.predictions(batch)

    def outputs(self, batch: TaskBatch) -> dict[str, Tensor]:
        self.prepare()
        return self.predictions(batch)


class MetagradAdaptImpl(EpisodeImpl):
    """``MAML.adapt`` + ``MAML.predict`` per task (the per-task loop, first order)."""

    def __init__(self, name: str, model: nn.Module, setting: Setting) -> None:
        super().__init__(name, "metagrad", model, setting)
        self.maml = metagrad.MAML(
            model,
            self.loss,
            inner_lr=setting.inner_lr,
            inner_steps=setting.steps,
            first_order=True,
            path="loop",
        )
        self.detail = "MAML.adapt + MAML.predict per task"

    def predictions(self, batch: TaskBatch) -> dict[str, Tensor]:
        logits = torch.stack(
            [self.maml.predict(self.maml.adapt(t.support_x, t.support_y), t.query_x) for t in batch]
        )  # [tasks, n_query, ways]
        return scores(logits, batch.query_y, self.loss)


class MetagradTestImpl(EpisodeImpl):
    """:func:`metagrad.evaluate.evaluate` on one episode per task, as ``metagrad test`` runs it."""

    def __init__(self, name: str, model: nn.Module, setting: Setting) -> None:
        super().__init__(name, "metagrad", model, setting)
        self.maml = metagrad.MAML(
            model, self.loss, inner_lr=setting.inner_lr, inner_steps=setting.steps, path="auto"
        )
        self.score_every = EvalConfig().score_every
        model.eval()  # as evaluate_split: test-time behaviour (no-op for batch statistics)
        self.detail = (
            f"metagrad.evaluate as metagrad test, path=auto (resolves to {resolved_path(model)}), "
            f"queries scored every {self.score_every} step(s)"
        )

    def predictions(self, batch: TaskBatch) -> dict[str, Tensor]:
        inner = self.maml.inner_loop(self.setting.steps, self.setting.inner_lr)
        result = evaluate(
            self.maml.executor_for(batch),
            self.maml.loss,
            self.maml.params,
            [batch],
            inner,
            classification=True,
            score_every=self.score_every,
        )
        return {
            "loss": torch.from_numpy(result.losses[-1]),  # [tasks], after the last step
            "accuracy": torch.from_numpy(result.accuracies[-1]),
        }


class L2LEpisodeImpl(EpisodeImpl):
    """learn2learn 0.2.0: ``clone()``, ``adapt(loss)`` per step, queries under ``no_grad``."""

    def __init__(self, name: str, model: nn.Module, setting: Setting, names=None) -> None:
        super().__init__(name, "peer", model, setting, names)
        self.maml = load_l2l_maml()(model, lr=setting.inner_lr, first_order=True)
        self.detail = "MAML(first_order=True).clone() / adapt()"

    def predictions(self, batch: TaskBatch) -> dict[str, Tensor]:
        logits = []
        for task in batch:
            learner = self.maml.clone()
            for _ in range(self.setting.steps):
                learner.adapt(self.loss(learner(task.support_x), task.support_y))
            with torch.no_grad():
                logits.append(learner(task.query_x))  # [n_query, ways]
        return scores(torch.stack(logits), batch.query_y, self.loss)


def build_episodes(
    setting: Setting, pool: str, reference: nn.Module, patterns: list[str] | None = None
) -> tuple[list[Implementation], dict[str, str]]:
    """The test-episode implementations of ``setting`` (as
    :func:`benchmarks.peers.build_implementations`; ``metagrad-loop`` first)."""
    impls: list[Implementation] = [
        MetagradAdaptImpl("metagrad-loop", copy.deepcopy(reference), setting)
    ]
    skipped: dict[str, str] = {}
    if selected("metagrad-test", patterns):
        impls.append(MetagradTestImpl("metagrad-test", copy.deepcopy(reference), setting))
    for name in setting.peers:
        if not selected(name, patterns):
            continue
        if name != "l2l":
            skipped[name] = "no test-episode implementation (learn2learn only)"
            continue
        try:
            names = [n for n, _ in reference.named_parameters()]
            impls.append(L2LEpisodeImpl(name, twin(reference, setting, pool), setting, names))
        except (FileNotFoundError, ImportError, ValueError) as e:
            skipped[name] = str(e)
    return impls, skipped

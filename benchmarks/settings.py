"""The named benchmark settings and the random episodes they run on.

Every implementation of a setting runs the same network from the same initial weights on the
same meta-batch: random tensors shaped like Omniglot / miniImageNet episodes (the values do not
change the amount of work) or sinusoid regression points.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from metagrad import TaskBatch

ALL_PEERS = ("l2l", "higher", "torchopt", "torchopt-func")


@dataclass(frozen=True)
class Setting:
    """One benchmark configuration.

    Attributes:
        name: key used by ``--settings``.
        description: one line for the report.
        net: ``"conv4"`` or ``"mlp"`` (the sinusoid regressor 1-40-40-1).
        pools: the Conv4 variants to run (``"max"``: the peers' max-pool Conv4; ``"stride"``:
            the MAML paper's strided Conv4); ``("mlp",)`` for the regressor.
        ways: classes per task (classification).
        shots: support examples per class (per task for regression).
        queries: query examples per class (per task for regression).
        tasks: meta-batch size.
        steps: inner gradient steps.
        first_order: FOMAML instead of second-order MAML.
        inner_lr: inner SGD learning rate.
        channels: image channels.
        size: image height = width.
        filters: Conv4 channels.
        peers: the peer libraries this setting runs (metagrad always runs).
        outer_lr: Adam learning rate of the outer step.
    """

    name: str
    description: str
    net: str = "conv4"
    pools: tuple[str, ...] = ("max", "stride")
    ways: int = 5
    shots: int = 1
    queries: int = 15
    tasks: int = 32
    steps: int = 1
    first_order: bool = False
    inner_lr: float = 0.4
    channels: int = 1
    size: int = 28
    filters: int = 64
    peers: tuple[str, ...] = ALL_PEERS
    outer_lr: float = 1e-3

    @property
    def classification(self) -> bool:
        """Whether the loss is cross-entropy over ``ways`` classes (else mean squared error)."""
        return self.net != "mlp"

    def replace(self, **changes) -> Setting:
        """A copy with some fields changed (e.g. a smaller meta-batch for a smoke run)."""
        return dataclasses.replace(self, **changes)


_REF = Setting(
    "reference", "Omniglot 5-way 1-shot, 15 queries/class, Conv4 64 filters 28x28, k1, SO"
)

SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        _REF,
        _REF.replace(name="k5", description="reference with 5 inner steps", steps=5),
        _REF.replace(name="fo", description="reference, first order (FOMAML)", first_order=True),
        _REF.replace(
            name="20w1s",
            description="Omniglot 20-way 1-shot, 15 queries/class, k5, SO",
            ways=20,
            tasks=16,
            steps=5,
            inner_lr=0.1,
        ),
        _REF.replace(name="q1", description="reference with 1 query per class", queries=1),
        Setting(
            "sinusoid",
            "sinusoid regression, MLP 1-40-40-1, K=10 support, 10 query, k1, SO",
            net="mlp",
            pools=("mlp",),
            ways=1,
            shots=10,
            queries=10,
            tasks=25,
            inner_lr=0.01,
            peers=("l2l", "higher"),
        ),
        Setting(
            "mini",
            "miniImageNet 5-way 1-shot, 15 queries/class, 3x84x84, 32 filters, k5, SO",
            pools=("max",),
            tasks=4,
            steps=5,
            inner_lr=0.01,
            channels=3,
            size=84,
            filters=32,
        ),
    )
}


def select_settings(spec: str) -> list[Setting]:
    """Settings named by a comma-separated list (``"all"`` for every one).

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    names = list(SETTINGS) if spec.strip() == "all" else [s.strip() for s in spec.split(",")]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        raise ValueError(f"unknown settings {unknown}: expected some of {list(SETTINGS)} or all")
    return [SETTINGS[n] for n in names]


def make_batch(setting: Setting, seed: int = 0) -> TaskBatch:
    """A random meta-batch shaped like the setting's episodes (float32, labels int64)."""
    g = torch.Generator().manual_seed(seed)
    t = setting.tasks
    if not setting.classification:
        n_s, n_q = setting.shots, setting.queries
        amp = torch.rand(t, 1, 1, generator=g) * 4.9 + 0.1
        phase = torch.rand(t, 1, 1, generator=g) * torch.pi
        xs = torch.rand(t, n_s, 1, generator=g) * 10 - 5
        xq = torch.rand(t, n_q, 1, generator=g) * 10 - 5
        return TaskBatch(xs, amp * torch.sin(xs + phase), xq, amp * torch.sin(xq + phase))
    image = (setting.channels, setting.size, setting.size)
    n_s, n_q = setting.ways * setting.shots, setting.ways * setting.queries
    ys = torch.arange(setting.ways).repeat_interleave(setting.shots).repeat(t, 1)
    yq = torch.arange(setting.ways).repeat_interleave(setting.queries).repeat(t, 1)
    return TaskBatch(
        torch.randn(t, n_s, *image, generator=g), ys, torch.randn(t, n_q, *image, generator=g), yq
    )

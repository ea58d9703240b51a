"""The named benchmark settings and the random episodes they run on.

Every implementation of a setting runs the same network from the same initial weights on the
same meta-batch: random tensors shaped like Omniglot / miniImageNet episodes (the values do not
change the amount of work) or sinusoid regression points.

A setting is a training iteration (``mode="train"``: meta-gradient and Adam step) or a test
episode (``mode="test"``: adapt to the support set, predict the queries; no meta-gradient).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

import torch

from metagrad import TaskBatch
from metagrad.models.resnet12 import WIDTHS as RESNET12_WIDTHS  # MMFewShot's 64-160-320-640

ALL_PEERS = ("l2l", "higher", "torchopt", "torchopt-func")
MODES = ("train", "test")


@dataclass(frozen=True)
class Setting:
    """One benchmark configuration.

    Attributes:
        name: key used by ``--settings``.
        description: one line for the report.
        net: ``"cnn"`` (image classification by the models of ``pools``) or ``"mlp"`` (the
            sinusoid regressor 1-40-40-1).
        pools: the models to run (``"max"``: the peers' max-pool Conv4; ``"stride"``: the MAML
            paper's strided Conv4; ``"resnet12"``: ResNet12 of ``widths``); ``("mlp",)`` for
            the regressor.
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
        widths: ResNet12's channels per stage.
        mode: ``"train"`` (one meta-iteration) or ``"test"`` (one test episode per task:
            ``steps`` first-order inner steps on the support set, then the query predictions).
        batched: also run metagrad's batched paths (``vectorized`` per conv kernel, ``auto``);
            False where the meta-batch has one task, so there is nothing to batch.
        recompute: also run metagrad with ``recompute_inner=True`` (checkpointed inner loop).
    """

    name: str
    description: str
    net: str = "cnn"
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
    widths: tuple[int, ...] = RESNET12_WIDTHS
    mode: str = "train"
    batched: bool = True
    recompute: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"setting {self.name!r}: mode {self.mode!r} is not one of {MODES}")

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

# MMFewShot's MAML protocol at 84x84 RGB (shared/NATURAL_IMAGES.md), meta-batch 1: its Conv4
# (64 filters, max-pool) and ResNet12 (64-160-320-640). Only learn2learn as peer: these
# iterations take tens of seconds for ResNet12, and the harness runs every implementation
# several times (check, timing, memory in a fresh process).
_MMFEWSHOT = Setting(
    "mmfewshot",
    "MMFewShot's protocol at 84x84 RGB",
    pools=("max", "resnet12"),
    tasks=1,
    inner_lr=0.01,
    channels=3,
    size=84,
    filters=64,
    peers=("l2l",),
    batched=False,  # one task: auto resolves to the loop for both models (preferred_path)
)
_B105 = _MMFEWSHOT.replace(
    name="b105",
    description="MMFewShot's b105 training episode: 5-way 5-shot, 16 queries/class, k2, SO",
    shots=5,
    queries=16,
    steps=2,
    recompute=True,
)
_TEST = _MMFEWSHOT.replace(
    name="test", description="MMFewShot's test episode", mode="test", steps=5, first_order=True
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
        # The MAML paper's own Omniglot settings (queries per class = shots, as its code), on
        # its strided Conv4 alone: issue 19's rows.
        _REF.replace(
            name="5w1s-q1",
            description="MAML paper Omniglot 5-way 1-shot, 1 query/class, strided Conv4, k1, SO",
            pools=("stride",),
            queries=1,
        ),
        _REF.replace(
            name="20w1s-q1",
            description="MAML paper Omniglot 20-way 1-shot, 1 query/class, strided Conv4, k5, SO",
            pools=("stride",),
            ways=20,
            queries=1,
            tasks=16,
            steps=5,
            inner_lr=0.1,
        ),
        _REF.replace(
            name="5w5s-q5",
            description="MAML paper Omniglot 5-way 5-shot, 5 queries/class, strided Conv4, k1, SO",
            pools=("stride",),
            shots=5,
            queries=5,
        ),
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
        _B105,
        _B105.replace(
            name="b105-fo",
            description="MMFewShot's b105 training episode, first order (FOMAML)",
            first_order=True,
            recompute=False,
        ),
        _TEST.replace(
            name="test-5w1s",
            description="MMFewShot test episode, 5-way 1-shot, 15 queries/class, adapt 5 steps, "
            "predict",
            shots=1,
        ),
        _TEST.replace(
            name="test-5w5s",
            description="MMFewShot test episode, 5-way 5-shot, 15 queries/class, adapt 5 steps, "
            "predict",
            shots=5,
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


def wanted(pool: str, models: str | None) -> bool:
    """Whether ``--models`` (a comma list, None: all) asks for ``pool``; the MLP runs always
    (its settings have no other model)."""
    return models is None or pool == "mlp" or pool in [m.strip() for m in models.split(",")]


def check_models(models: str | None, settings: list[Setting]) -> None:
    """Refuse a ``--models`` name that no selected setting runs (a typo would run nothing).

    Raises:
        ValueError: naming the unknown models and the ones the settings have.
    """
    have = {p for s in settings for p in s.pools}
    unknown = sorted({m.strip() for m in (models or "").split(",") if m.strip()} - have)
    if unknown:
        raise ValueError(f"--models {unknown}: the selected settings run only {sorted(have)}")


OVERRIDES = ("tasks", "size", "filters", "widths")  # what the CLIs may override


def add_override_args(parser: argparse.ArgumentParser) -> None:
    """The CLIs' ``--tasks``, ``--size``, ``--filters``, ``--widths`` (a tiny smoke run of a
    full-size setting, or another meta-batch)."""
    parser.add_argument("--tasks", type=int, default=None, help="override the meta-batch size")
    parser.add_argument("--size", type=int, default=None, help="override the image size")
    parser.add_argument("--filters", type=int, default=None, help="override Conv4's filters")
    parser.add_argument(
        "--widths", type=widths, default=None, help="override ResNet12's widths, e.g. 4,8,8,8"
    )


def widths(text: str) -> tuple[int, ...]:
    """``"4,8,8,8"`` -> ``(4, 8, 8, 8)``: ResNet12's four stage widths."""
    try:
        values = tuple(int(w) for w in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"got {text!r}: expected four positive channel counts, e.g. 4,8,8,8"
        )
    return values


def overridden(settings: list[Setting], args: argparse.Namespace) -> list[Setting]:
    """``settings`` with the overrides of :func:`add_override_args` that were given."""
    given = {k: getattr(args, k) for k in OVERRIDES if getattr(args, k, None) is not None}
    return [s.replace(**given) for s in settings] if given else settings


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

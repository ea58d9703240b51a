"""The ``[train]`` and ``[eval]`` sections: the outer loop, its device and precision, and
meta-testing.

Unlike ``[task]``, ``[model]`` and ``[algorithm]`` these are plain sections, not tagged unions:
one class each, whatever the experiment. Devices and precisions are checked against the
installed torch when a config is read, so a run never starts on hardware it cannot use.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from metagrad.config.rules import Problem, at_least, learning_rate, positive
from metagrad.config.section import Section, config_class

DEVICES = ("cpu", "cuda", "mps", "auto")  # and "cuda:N"


def device_missing(device: str) -> str | None:
    """Why the installed torch cannot run on ``device`` (None if it can; ``"auto"`` always can).

    Checked when the config is read: a CUDA device on a CPU-only torch used to pass validation
    and kill the run at its first tensor with an AssertionError.
    """
    import torch

    fix = 'use train.device = "cpu" or "auto" (--set train.device=cpu)'
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return (
                f"{device!r} is not available: this torch ({torch.__version__}) has no CUDA; {fix}"
            )
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            return (
                f"{device!r} is not available: this machine has {torch.cuda.device_count()} CUDA "
                f"device(s), cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
    if device == "mps" and not torch.backends.mps.is_available():
        return f"'mps' is not available: this torch ({torch.__version__}) has no MPS; {fix}"
    return None


def precision_missing(precision: str, device: str) -> str | None:
    """Why ``precision`` (``"bf16"``, ``"fp16"``) cannot autocast on ``device`` (None if it can).

    CPU autocast runs bf16 and fp16; CUDA runs fp16 everywhere and bf16 from Ampere on (or
    emulated, which torch reports as supported); MPS runs both from torch 2.5 on.
    """
    import torch

    if precision == "fp32" or device == "auto":  # "auto" resolves to a device that autocasts
        return None
    kind = device.partition(":")[0]
    if not torch.amp.is_autocast_available(kind):
        return f'torch {torch.__version__} has no autocast on {kind!r}; use precision = "fp32"'
    if kind == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        return 'this GPU has no bfloat16: use precision = "fp16" or "fp32"'
    return None


@config_class
class TrainConfig(Section):
    """The outer (meta-)training loop."""

    iterations: int  # outer steps (meta-batches) to train for
    meta_batch_size: int  # tasks per outer step
    outer_lr: float = 1e-3  # outer optimizer step size
    optimizer: Literal["adam", "sgd"] = "adam"  # outer optimizer
    # "linear": anneal to 0 over train.iterations (Reptile); "cosine": cosine-anneal to
    # min_outer_lr over train.iterations (MAML++'s CA)
    outer_lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    min_outer_lr: float = 0.0  # where "cosine" ends (MAML++: 1e-5)
    # The schedules (outer_lr_schedule, and MAML++'s MSL weights and DA) move once every N
    # iterations, holding their value from the start of each block of N: MAML++'s code moves
    # them once per 500-iteration epoch; 1 = every iteration.
    schedule_every: int = 1
    grad_clip: float | None = None  # clip the meta-gradient norm to this (None = no clipping)
    val_every: int = 1000  # validate every N iterations (0 = never)
    val_tasks: int = 100  # tasks per validation
    # What picks the "best" checkpoint from a validation run with the test's protocol: "last",
    # the query score after the test's last inner step (what classification tables report);
    # "mean", its mean over the test's adapted steps 1..K (the sinusoid table reports steps
    # 1 / 5 / 10, the RL tables 1-3); "auto": "last" for classification, "mean" otherwise.
    val_metric: Literal["auto", "last", "mean"] = "auto"
    log_every: int = 100  # append a line to metrics.jsonl every N iterations
    checkpoint_every: int = 1000  # save the "last" checkpoint every N iterations (0 = at end)
    # Stop once the training steps (validation and saves not counted) have taken this many
    # seconds on budget_clock, then test as at train.iterations (None = no budget). Resumes
    # continue the count; a resume may raise it.
    time_budget_s: float | None = None
    # What measures that time: "wall" (elapsed) or "cpu" (this process's CPU time, all its
    # threads: immune to pauses and to other jobs on the machine).
    budget_clock: Literal["wall", "cpu"] = "wall"
    # torch device: "cpu", "cuda", "cuda:N", "mps", or "auto" (CUDA, else MPS, else the CPU;
    # RL runs sample on the CPU). Under torchrun, "cuda" and "auto" give each process the GPU
    # of its local rank.
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads (None = torch's default)
    # The dtype of the model's parameters, and so of the whole computation (float64: for
    # reference runs).
    dtype: Literal["float32", "float64"] = "float32"
    # Mixed precision: "bf16" / "fp16" run the meta-training steps under torch.autocast (the
    # parameters and the optimiser stay float32; validation and test run in full precision).
    # Not exact, and fp16 has no loss scaling here: prefer bf16 where the device has it.
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # Several processes (torchrun): "all_reduce" sums the ranks' shares of the meta-gradient
    # in one all_reduce (equal to one process's up to rounding); "ordered" gathers each task's
    # gradient and sums them in the meta-batch's order (bit-identical for any number of
    # processes, each task's gradient computed alone; more communication).
    reduce: Literal["all_reduce", "ordered"] = "all_reduce"
    # Several processes: a process that waits this long on another (dead or hung) stops the run.
    dist_timeout_s: float = 300.0

    def problems(self) -> Iterator[Problem]:
        yield from at_least(self, 1, "iterations", "meta_batch_size", "val_tasks", "log_every")
        yield from at_least(self, 1, "threads", "schedule_every")
        yield from at_least(self, 0, "val_every", "checkpoint_every")
        yield from positive(self, "outer_lr", "grad_clip")
        if not 0.0 <= self.min_outer_lr < self.outer_lr:
            shown = f"[0, outer_lr = {self.outer_lr})"
            yield "min_outer_lr", f"must be in {shown}, got {self.min_outer_lr!r}"
        elif self.min_outer_lr and self.outer_lr_schedule != "cosine":
            yield "min_outer_lr", 'is where outer_lr_schedule "cosine" ends; set that, or remove it'
        yield from positive(self, "dist_timeout_s", "time_budget_s")
        device = self.device
        if not (device in DEVICES or device.removeprefix("cuda:").isdigit()):
            yield "device", f'must be "cpu", "cuda", "cuda:N", "mps" or "auto", got {device!r}'
        elif (missing := device_missing(device)) is not None:
            yield "device", missing
        elif (missing := precision_missing(self.precision, device)) is not None:
            yield "precision", missing
        if self.precision != "fp32" and self.dtype == "float64":
            message = f'autocasts float32 to {self.precision}; with dtype = "float64" use "fp32"'
            yield "precision", message


@config_class
class EvalConfig(Section):
    """Meta-testing: adapt to held-out tasks and report query performance."""

    tasks: int = 600  # test tasks to average over (600 as in MAML)
    inner_steps: int | None = None  # test-time adaptation steps (None = as in training)
    inner_lr: float | tuple[float, ...] | None = None  # test-time step size(s) (None = training's)
    shots: int | None = None  # support examples (per class) at test time (None = as training)
    queries: int | None = None  # query examples (per class) at test time (None = as training)
    seed: int = 1234  # seeds the test task stream, independent of the training seed
    transductive: bool = True  # normalise with the query batch's statistics (as MAML does)
    chunk_size: int | None = None  # test tasks adapted at once (None = algorithm's)
    inner_batch_size: int | None = None  # support examples per test inner step (None = training's)
    # Score the query set after inner steps 0, n, 2n, ... and the last. Non-transductive scoring
    # costs queries x (support + 1) forward passes per scored step: the Reptile 20-way 1-shot
    # test (50 steps) took 4.5 min scoring 2 steps and had not finished in 36 scoring all 51.
    score_every: int = 1

    def problems(self) -> Iterator[Problem]:
        yield from at_least(
            self, 1, "tasks", "shots", "queries", "chunk_size", "inner_batch_size", "score_every"
        )
        yield from at_least(self, 0, "inner_steps", "seed")
        yield from learning_rate(self, "inner_lr")

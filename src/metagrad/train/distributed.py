"""Several processes, one run: the process group and what its processes say to each other.

Under ``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``: torch's ``env://`` rendezvous, across machines through torchrun's c10d
rendezvous) a run starts one process per rank. They join one process group: gloo for CPU
tensors and, where CUDA is available, NCCL for CUDA tensors, chosen by each tensor's device.
Every exchange is an explicit collective on plain tensors (no pickle: a state travels as
safetensors bytes, an object as JSON), and a collective that fails, because another process
died or stopped answering within ``train.dist_timeout_s``, becomes one :class:`RankFailure`.

Who says what: rank 0 alone prints, writes the run directory and reports an error; the other
processes stop with :class:`OtherRank` (silently, with the same exit code) when the error is
one every process met together (:func:`settle`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import safetensors.torch
import torch
import torch.distributed as dist
from torch import Tensor

from metagrad.errors import UsageError
from metagrad.train.io import CheckpointError, flatten_state, unflatten_state
from metagrad.train.rundir import WriteFailure, config_hash, flat_config

if TYPE_CHECKING:
    from metagrad.config import ExperimentConfig

T = TypeVar("T")


def launched() -> bool:
    """Whether a launcher started this process as one of several (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def leading() -> bool:
    """Whether this process speaks for its run: it is rank 0, or the run's only process."""
    return int(os.environ.get("RANK", "0") or 0) == 0 or not launched()


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of a run.

    Attributes:
        rank: this process's rank, ``0 .. world - 1``.
        world: the number of processes.
        local_rank: its rank on its machine (picks its GPU).
        timeout_s: how long a collective waits for the others (``train.dist_timeout_s``).
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    timeout_s: float = 300.0

    @property
    def leader(self) -> bool:
        """Rank 0: the process that prints and writes the run directory."""
        return self.rank == 0

    @property
    def many(self) -> bool:
        return self.world > 1

    def counts(self, tasks: int) -> list[int]:
        """How many of ``tasks`` consecutive tasks each rank takes: the first ``tasks % world``
        ranks one more than the others."""
        base, extra = divmod(tasks, self.world)
        return [base + (r < extra) for r in range(self.world)]

    def block(self, tasks: int) -> slice:
        """This rank's consecutive share of ``tasks`` tasks (see :meth:`counts`)."""
        counts = self.counts(tasks)
        start = sum(counts[: self.rank])
        return slice(start, start + counts[self.rank])

    def owns(self, chunk: int) -> bool:
        """Whether this rank scores evaluation chunk ``chunk`` (round robin)."""
        return chunk % self.world == self.rank


ONE = Ranks()  # a run of one process: no process group, no exchange


class RankFailure(RuntimeError):
    """Another process of the run died or stopped answering: this one stops too (a runtime
    failure; the run resumes from its last checkpoint with any number of processes)."""


class OtherRank(Exception):
    """The run stops for ``error``, which rank 0 reports: raised on the other processes, which
    exit with the same code and say nothing more."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


@contextlib.contextmanager
def process_group(timeout_s: float) -> Iterator[Ranks]:
    """Join the launcher's process group (if launched and not joined yet) for the block.

    Rank 0's standard output is the run's; the others' goes to ``os.devnull`` meanwhile.

    Raises:
        RankFailure: the others did not all arrive within ``timeout_s`` seconds.
    """
    if not launched():
        yield ONE
        return
    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise UsageError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} says this is one of several processes, but "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: start them "
            "with torchrun (or set RANK, MASTER_ADDR and MASTER_PORT as it does)"
        )
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    ranks = Ranks(rank, world, local, timeout_s)
    joined = dist.is_initialized()
    if not joined:
        # CPU tensors through gloo, CUDA tensors through NCCL: each collective by its device.
        nccl = torch.cuda.is_available() and dist.is_nccl_available()
        backend = "cpu:gloo,cuda:nccl" if nccl else "gloo"
        with failing(ranks, "joining the other processes"):
            dist.init_process_group(
                backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s)
            )
    quiet = contextlib.nullcontext() if ranks.leader else _silenced_stdout()
    finished = False
    try:
        with quiet:
            yield ranks
        finished = True
    finally:
        if not joined:
            with contextlib.suppress(RuntimeError, ValueError):
                if finished:
                    # Tear down together: a process that destroyed its group while another
                    # still used it aborted at exit ("terminate called without an active
                    # exception", 1 run in 4 of a 2-process torchrun here).
                    dist.barrier()
                dist.destroy_process_group()


@contextlib.contextmanager
def _silenced_stdout() -> Iterator[None]:
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


@contextlib.contextmanager
def failing(ranks: Ranks, what: str) -> Iterator[None]:
    """Turn a failed collective (a dead, hung or unreachable process) into one
    :class:`RankFailure` line; keep the block to the collective itself."""
    try:
        yield
    except RankFailure:
        raise
    except (RuntimeError, ValueError) as e:  # torch's DistBackendError, DistStoreError, ...
        # torch's first sentence, without the source location gloo puts in front of it.
        detail = re.sub(r"^\[[^\]]*\]\s*", "", (str(e).strip().splitlines() or [""])[0])
        detail = detail.split(". ")[0][:160] or type(e).__name__
        raise RankFailure(
            f"{what} failed: another of the {ranks.world} processes died or did not answer "
            f"within train.dist_timeout_s = {ranks.timeout_s:g} s ({detail}); this process "
            "stops too; the run continues from its last checkpoint with `torchrun ... -m "
            "metagrad train --resume RUN_DIR`, on any number of processes"
        ) from None


# --------------------------------------------------------------------------- collectives
def all_sum(ranks: Ranks, flat: Tensor) -> Tensor:
    """Sum ``flat`` over every process, in place (every process gets the same bits)."""
    if not ranks.many:
        return flat
    with failing(ranks, "summing the meta-gradient"):
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    return flat


def gather_rows(ranks: Ranks, rows: Tensor, counts: list[int]) -> Tensor:
    """Every process's ``rows [counts[rank], ...]``, concatenated in rank order, everywhere."""
    if not ranks.many:
        return rows
    most = max(counts)
    padded = rows.new_zeros(most, *rows.shape[1:])
    padded[: rows.shape[0]] = rows
    parts = [torch.empty_like(padded) for _ in range(ranks.world)]
    with failing(ranks, "gathering the tasks' results"):
        dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, counts, strict=True)])


def gather_json(ranks: Ranks, obj: Any) -> list[Any]:
    """Every process's JSON-able ``obj``, in rank order, everywhere."""
    data = torch.frombuffer(bytearray(json.dumps(obj).encode()), dtype=torch.uint8)
    size = torch.tensor([data.numel()])
    sizes = [torch.zeros_like(size) for _ in range(ranks.world)]
    with failing(ranks, "comparing the processes"):
        dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    rows = gather_rows(ranks, data, counts)
    starts = [sum(counts[:r]) for r in range(ranks.world)]
    return [json.loads(bytes(rows[s : s + n].tolist())) for s, n in zip(starts, counts)]


def broadcast_bytes(ranks: Ranks, data: bytes | None) -> bytes:
    """Rank 0's ``data``, on every process (the others pass None)."""
    size = torch.tensor([len(data) if ranks.leader else 0])
    with failing(ranks, "receiving rank 0's state"):
        dist.broadcast(size, 0)
        buffer = torch.zeros(int(size), dtype=torch.uint8)
        if ranks.leader:
            buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        dist.broadcast(buffer, 0)
    return bytes(buffer.numpy())


def share(ranks: Ranks, make: Callable[[], T]) -> T:
    """What rank 0's ``make()`` returns (tensors, numbers, strings, nested in dicts, lists and
    tuples), on every process; it travels as safetensors bytes, so nothing received can run
    code. If ``make`` raises on rank 0, every process stops with it (:func:`settle`)."""
    if not ranks.many:
        return make()
    data = None
    if ranks.leader:
        try:
            tensors, tree = flatten_state(make())
        except Exception as e:
            settle(ranks, e)
            raise  # pragma: no cover - settle raised
        settle(ranks, None)
        data = safetensors.torch.save(tensors, metadata={"tree": json.dumps(tree)})
    else:
        settle(ranks, None)
    data = broadcast_bytes(ranks, data)
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])  # safetensors' own
    return unflatten_state(safetensors.torch.load(data), json.loads(header["__metadata__"]["tree"]))


# ------------------------------------------------------------------- failing together
# The errors a process re-raises by name when another process met them (else RankFailure).
KNOWN_ERRORS: dict[str, type[BaseException]] = {
    e.__name__: e
    for e in (
        UsageError,
        CheckpointError,
        WriteFailure,
        FileNotFoundError,
        FileExistsError,
        PermissionError,
        NotADirectoryError,
        IsADirectoryError,
        FloatingPointError,
        RankFailure,
        OSError,
    )
}


def _named(kinds: list[str], message: str) -> BaseException:
    for kind in kinds:  # the error's class and its bases, nearest first
        if kind in KNOWN_ERRORS:
            return KNOWN_ERRORS[kind](message)
    return RankFailure(message)


def settle(ranks: Ranks, error: BaseException | None) -> None:
    """Every process says whether it met an error; if any did, all stop.

    Rank 0 raises its own error, else the first failing rank's (its message prefixed with
    ``rank N:``, its class by name); every other process raises :class:`OtherRank` around its
    own error or that one. A run of one process raises ``error`` itself.

    Raises:
        BaseException: as above, on every process, when any process passed an error.
    """
    if not ranks.many:
        if error is not None:
            raise error
        return
    said = None
    if error is not None:
        kinds = [c.__name__ for c in type(error).__mro__]
        said = {"kinds": kinds, "message": str(error)}
    reports = gather_json(ranks, said)
    failed = [(r, s) for r, s in enumerate(reports) if s is not None]
    if not failed:
        return
    if error is None:
        r, s = failed[0]
        error = _named(s["kinds"], f"rank {r}: {s['message']}")
    if ranks.leader:
        raise error
    raise OtherRank(error) from error


@contextlib.contextmanager
def together(ranks: Ranks) -> Iterator[None]:
    """A block every process runs, with no collective inside: if it raises on any process,
    every process stops with :func:`settle`'s error."""
    try:
        yield
    except Exception as e:
        settle(ranks, e)
        raise  # pragma: no cover - settle raised
    settle(ranks, None)


def same_config(
    ranks: Ranks, cfg: ExperimentConfig | None, problem: BaseException | None = None
) -> None:
    """Check at start-up that every process has the same config (compared by hash), or stop
    them all: with ``problem``, the error that kept this process from reading its config.

    Raises:
        UsageError: (rank 0; :class:`OtherRank` on the others) a process has no config, or
            one that differs from rank 0's (naming the keys).
    """
    settle(ranks, problem)
    if not ranks.many:
        return
    flat = {k: repr(v) for k, v in flat_config(cfg).items()}
    reports = gather_json(ranks, {"hash": config_hash(flat), "config": flat})
    first = reports[0]["config"]
    for r, report in enumerate(reports[1:], start=1):
        if report["hash"] != reports[0]["hash"]:
            other = report["config"]
            keys = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
            shown = ", ".join(
                f"{k} {first.get(k, '?')} (rank 0) vs {other.get(k, '?')}" for k in keys[:3]
            )
            raise echo(
                ranks,
                UsageError(
                    f"the processes were started with different configs: rank {r} differs "
                    f"from rank 0 in {shown}: give every process the same CONFIG and --set"
                ),
            )


def echo(ranks: Ranks, error: BaseException) -> BaseException:
    """``error``, met by every process alike (a diverged meta-batch): rank 0 raises it, the
    others :class:`OtherRank` around it."""
    return error if ranks.leader else OtherRank(error)


def stop_agreed(ranks: Ranks, *asked: bool) -> tuple[bool, ...]:
    """Whether any process was asked each of the ``asked`` stops (Ctrl-C or SIGTERM; a spent
    training-time budget, which each process measures on its own clock), in one exchange: all
    processes stop after the same step."""
    if not ranks.many:
        return asked
    flags = torch.tensor([int(a) for a in asked])
    with failing(ranks, "agreeing on a stop"):
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return tuple(bool(f) for f in flags)


__all__ = [
    "ONE",
    "OtherRank",
    "RankFailure",
    "Ranks",
    "all_sum",
    "broadcast_bytes",
    "echo",
    "gather_json",
    "gather_rows",
    "launched",
    "leading",
    "process_group",
    "same_config",
    "settle",
    "share",
    "stop_agreed",
    "together",
]

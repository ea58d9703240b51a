"""The run directory as a unit: what counts as a run, who may write to it, and what a resume
may change.

- :func:`holds_run` / :func:`check_new_run`: any config, metrics or checkpoint file means the
  directory holds a run, which ``train --out`` never replaces unless ``--overwrite`` says so;
- :func:`run_lock`: one process writes to a run directory at a time (a ``filelock`` lock, which
  the operating system releases when its holder dies, so a killed run never blocks the next);
- :func:`config_identity` / :func:`check_same_config`: what a checkpoint's steps were computed
  with, so a resume refuses a changed ``config.toml`` (by ``--set`` or by hand);
- :func:`stop_requests`: Ctrl-C and SIGTERM ask the loop to stop after the current step, which
  then saves ``last``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, asdict, fields, is_dataclass
from pathlib import Path
from typing import Any

import filelock

from metagrad.config import ExperimentConfig
from metagrad.errors import UsageError

CONFIG_FILE = "config.toml"
LOCK_FILE, HOLDER_FILE = ".lock", ".lock.holder"
# What a resume may change: the budget, the bookkeeping and what changes only rounding (the
# execution path, the chunking, the device, how processes sum the meta-gradient), never what
# the steps compute. The single list: the config hash of a checkpoint leaves these out, and
# `--resume --set` accepts only these. (The number of processes is no config value: a run
# resumes on any.)
RESUMABLE = (
    "name",
    "train.iterations",
    "train.time_budget_s",
    "train.*_every",
    "train.threads",
    "train.device",
    "train.reduce",
    "train.dist_timeout_s",
    "eval.*",
    "algorithm.path",
    "algorithm.chunk_size",
    "algorithm.memory_budget",
)


def resumable(key: str) -> bool:
    """Whether a resume may change the flat config key ``key`` (see :data:`RESUMABLE`)."""
    for pattern in RESUMABLE:
        head, _, tail = pattern.partition("*")
        if key == pattern or ("*" in pattern and key.startswith(head) and key.endswith(tail)):
            return True
    return False


def flat_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """Every value of ``cfg`` by its ``section.key`` (top-level values by their own key)."""
    flat: dict[str, Any] = {}
    for field in fields(cfg):
        part = getattr(cfg, field.name)
        if is_dataclass(part):
            flat.update({f"{field.name}.{k}": v for k, v in asdict(part).items()})
        else:
            flat[field.name] = part
    return flat


def config_identity(cfg: ExperimentConfig) -> dict[str, str]:
    """The values that decide what the steps compute (all but :data:`RESUMABLE`), as text."""
    return {k: repr(v) for k, v in sorted(flat_config(cfg).items()) if not resumable(k)}


def flat_defaults(cfg: ExperimentConfig) -> dict[str, str]:
    """The default of every key of ``cfg`` that has one, as :func:`config_identity` shows it."""
    out = {}
    for field in fields(cfg):
        part = getattr(cfg, field.name)
        for f in fields(part) if is_dataclass(part) else ():
            if f.default is not MISSING:
                out[f"{field.name}.{f.name}"] = repr(f.default)
            elif f.default_factory is not MISSING:
                out[f"{field.name}.{f.name}"] = repr(f.default_factory())
    return out


def config_hash(identity: Mapping[str, str]) -> str:
    """The sha256 of a :func:`config_identity`."""
    return hashlib.sha256(json.dumps(dict(identity), sort_keys=True).encode()).hexdigest()


def check_same_config(run_dir: Path, cfg: ExperimentConfig, state: Mapping[str, Any]) -> None:
    """Refuse to resume ``state`` (a checkpoint's) with a config that computes other steps.

    Raises:
        UsageError: ``cfg`` (the run's ``config.toml``, hand-edited or with ``--set``) differs
            from the config the checkpoint was trained with, naming the keys.
    """
    saved = state.get("config_hash")
    if saved is None:  # saved before checkpoints recorded their config
        return
    identity = config_identity(cfg)
    if config_hash(identity) == saved:
        return
    old = state.get("config") if isinstance(state.get("config"), dict) else {}
    defaults = flat_defaults(cfg)
    changed = sorted(
        k
        for k in set(identity) | set(old)
        if identity.get(k) != old.get(k)
        # A key metagrad added after the checkpoint was saved, at its default, computes what
        # the older version did; a key that a resume may now change no longer counts.
        and not (k not in old and old and identity[k] == defaults.get(k))
        and not (k not in identity and resumable(k))
    )
    if old and not changed:
        return
    shown = ", ".join(f"{k} {old.get(k, '?')} -> {identity.get(k, '?')}" for k in changed[:4])
    raise UsageError(
        f"{run_dir / CONFIG_FILE} differs from the config its checkpoint was trained with "
        f"({shown or 'hash mismatch'}): restore it, or start a new run with another --out"
    )


# ----------------------------------------------------------------- what counts as a run
def run_files(run_dir: Path) -> list[Path]:
    """The files and folders of a run in ``run_dir`` (config, metrics, checkpoints, results,
    TensorBoard events); the lock files are not part of a run."""
    if not run_dir.is_dir():
        return []
    names = ("config.toml", "preprocessing.json", "path.json", "metrics.jsonl", "tensorboard")
    names += ("results.json",)
    found = [run_dir / n for n in names if (run_dir / n).exists()]
    found += sorted(run_dir.glob("last*")) + sorted(run_dir.glob("best*"))
    found += sorted(run_dir.glob("results-*.json")) + sorted(run_dir.glob(".last*.tmp"))
    found += sorted(run_dir.glob(".best*.tmp"))
    return found


def holds_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds (part of) a run: any config, metrics or checkpoint file."""
    return bool(run_files(run_dir))


def check_out_dir(run_dir: Path) -> None:
    """Refuse an ``--out`` that cannot be a run directory (a file, an unwritable place).

    Raises:
        UsageError: naming the problem.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--out {run_dir} is a file, not a directory: give a directory path")
    parent = run_dir
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"--out {run_dir} is inside {parent}, a file: give a directory path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(
            f"--out {run_dir}: {parent} is not writable (permission denied): give a directory "
            "you can write to"
        )


def check_new_run(run_dir: Path, overwrite: bool = False) -> None:
    """Refuse to start a run in a directory that holds one, unless ``overwrite``, which then
    deletes that run's files (and only those).

    Raises:
        FileExistsError: ``run_dir`` holds a run, naming both ways out.
    """
    files = run_files(run_dir)
    if not files:
        return
    if not overwrite:
        what = ", ".join(p.name for p in files[:3]) + (" ..." if len(files) > 3 else "")
        raise FileExistsError(
            f"{run_dir} already holds a run ({what}): continue it with `metagrad train "
            f"--resume {run_dir}`, or replace it with --overwrite (deletes it)"
        )
    for path in files:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    print(f"--overwrite: deleted the run in {run_dir}", flush=True)


# ------------------------------------------------------------------------------ locking
@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock while writing to it; refuse at once if another process holds it.

    The lock is an OS file lock (``filelock``): the kernel drops it when the holder exits or is
    killed, so a lock file left behind by a dead process never blocks. The holder's pid, host,
    command and start time go to a file beside it, for the refusal's message.

    Raises:
        UsageError: another process (or another rank) writes to ``run_dir``, naming it.
    """
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the run directory {run_dir} ({e.strerror})") from None
    lock = filelock.FileLock(run_dir / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise UsageError(
            f"{run_dir} is in use by {_holder(run_dir)}: wait for it to finish or stop it "
            "(Ctrl-C saves its progress), or train into another --out"
        ) from None
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(["metagrad", *sys.argv[1:]])[:200],
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    with contextlib.suppress(OSError):  # the description is a courtesy; the lock is the lock
        (run_dir / HOLDER_FILE).write_text(json.dumps(holder))
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            (run_dir / HOLDER_FILE).unlink()
        lock.release()
        if created and not holds_run(run_dir):  # refused or failed before writing anything
            with contextlib.suppress(OSError):
                (run_dir / LOCK_FILE).unlink()
                run_dir.rmdir()


def _holder(run_dir: Path) -> str:
    try:
        h = json.loads((run_dir / HOLDER_FILE).read_text())
        return f"pid {h['pid']} on {h['host']} ({h['command']}) since {h['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


class WriteFailure(RuntimeError):
    """A run could not write to its directory (a full disk, a denied write): a runtime failure.
    The message names what is intact and how to continue."""


# -------------------------------------------------------------------- stopping cleanly
class StopRequest:
    """Set by the first Ctrl-C or SIGTERM; a second one interrupts at once."""

    def __init__(self) -> None:
        self.signal: str | None = None


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """Within the block, Ctrl-C (SIGINT) and SIGTERM set ``request.signal`` instead of killing
    the process, so the loop stops between two steps and saves them; a second signal raises
    ``KeyboardInterrupt`` at once. Outside the main thread signals cannot be caught: no-op."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: Any) -> None:
        if request.signal is not None:
            raise KeyboardInterrupt
        request.signal = signal.Signals(signum).name

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)

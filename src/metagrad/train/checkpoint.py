"""Checkpoints as one consistent, verifiable unit, with no code execution on load.

A checkpoint ``NAME`` (``"last"``, ``"best"``) in a run directory is four files:

* ``NAME.safetensors``: the model weights;
* ``NAME.state.safetensors`` + ``NAME.state.json``: the training state (step, optimizer state,
  RNG states, sampler state, best metric, ...) split into tensors and JSON by
  :func:`metagrad.train.io.flatten_state`;
* ``NAME.json``: the manifest, written last: format, step, and the size and sha256 of each file
  and the dtype and shape of each tensor.

Saving writes every new file under a temporary name first, then moves the current checkpoint to
``NAME.prev.*`` (if it verifies), moves the new files into place and commits by renaming the
manifest. The previous checkpoint therefore stays loadable, as ``NAME`` or ``NAME.prev``,
whatever moment a crash interrupts a save. Because a manifest identifies its files by hash, the
loader accepts each file under its own name or its sibling's (``NAME.x`` <-> ``NAME.prev.x``),
which covers a crash halfway through moving a checkpoint aside.

Loading reads only safetensors and JSON (never pickle), checks every hash, size, dtype and shape,
and raises :class:`CheckpointError` naming the file, the problem and an intact alternative.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import Tensor

from metagrad.train.io import (
    PathLike,
    StateError,
    flatten_state,
    fsync_dir,
    tensor_copy,
    unflatten_state,
    write_temp,
)

FORMAT, VERSION = "metagrad-checkpoint", 1
FILES = {"weights": ".safetensors", "state_tensors": ".state.safetensors", "state": ".state.json"}
_NAME = re.compile(r"[A-Za-z0-9_-]+(\.prev)?")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be saved or loaded; the message says why and what to do instead.

    Attributes:
        alternative: The name of an intact checkpoint in the same run directory, if any.
    """

    def __init__(self, message: str, alternative: str | None = None) -> None:
        super().__init__(message)
        self.alternative = alternative


class CheckpointWriteError(RuntimeError):
    """Writing a checkpoint failed (a full disk, a denied write): a runtime failure, exit 1.
    The message names the checkpoints still intact."""


# ------------------------------------------------------------------------------ RNG state
def capture_rng_state(generators: Mapping[str, np.random.Generator] | None = None) -> dict:
    """Snapshot every random number generator training draws from.

    Args:
        generators: NumPy ``Generator`` objects by name (e.g. the task sampler's).

    Returns:
        Python ``random``'s state, NumPy's legacy global state, each named generator's
        ``bit_generator.state``, torch's CPU state and, if CUDA is available, every GPU's.
        It can go into a checkpoint state as is.
    """
    state = {
        "python": random.getstate(),
        "numpy_global": np.random.get_state(),
        "numpy": {name: g.bit_generator.state for name, g in (generators or {}).items()},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(
    state: Mapping[str, Any], generators: Mapping[str, np.random.Generator] | None = None
) -> None:
    """Restore a :func:`capture_rng_state` snapshot, in place, into the global RNGs and
    into ``generators`` (each name must be in the snapshot).

    Raises:
        CheckpointError: a generator has no saved state, or a saved state does not fit it.
    """
    random.setstate(state["python"])
    np.random.set_state(state["numpy_global"])
    torch.set_rng_state(state["torch"])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])
    saved = state.get("numpy", {})
    for name, generator in (generators or {}).items():
        if name not in saved:
            known = ", ".join(map(repr, saved)) or "none"
            raise CheckpointError(f"no saved state for numpy generator {name!r} (saved: {known})")
        try:
            generator.bit_generator.state = saved[name]
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"cannot restore numpy generator {name!r}: {e}") from e


# ------------------------------------------------------------------------- save and load
def _check_name(name: str, saving: bool) -> None:
    if not _NAME.fullmatch(name) or (saving and name.endswith(".prev")):
        kind = "letters, digits, '_' and '-'" + ("" if saving else ", optionally + '.prev'")
        raise CheckpointError(f"bad checkpoint name {name!r}: use {kind}, e.g. 'last' or 'best'")


def _describe(tensors: Mapping[str, Tensor]) -> dict[str, list]:
    return {k: [str(t.dtype).removeprefix("torch."), list(t.shape)] for k, t in tensors.items()}


def save_checkpoint(
    run_dir: PathLike, name: str, weights: Mapping[str, Tensor], state: Mapping[str, Any]
) -> Path:
    """Save a checkpoint as one unit; a crash at any moment leaves the previous one loadable.

    Args:
        run_dir: The run directory (created if missing).
        name: ``"last"``, ``"best"`` or another ``[A-Za-z0-9_-]+`` name.
        weights: The model's ``state_dict()``.
        state: The training state: ``"step"`` (int, required) and by convention ``"optimizer"``
            (``optimizer.state_dict()``), ``"rng"`` (:func:`capture_rng_state`), ``"sampler"``
            (a JSON-able dict) and ``"best_metric"``; anything :func:`flatten_state` accepts.

    Returns:
        The manifest path ``run_dir/NAME.json``.

    Raises:
        CheckpointError: bad arguments.
        CheckpointWriteError: the disk writes failed (the previous checkpoint, as ``NAME`` or
            ``NAME.prev``, is then still intact).
    """
    _check_name(name, saving=True)
    step = state.get("step")
    if not isinstance(step, int) or isinstance(step, bool):
        raise CheckpointError(f"state['step'] must be the int training step, got {step!r}")
    run = Path(run_dir)
    weight_tensors = {}
    for key, t in weights.items():
        if not isinstance(t, Tensor):
            raise CheckpointError(f"weights[{key!r}] is a {type(t).__name__}, not a tensor")
        weight_tensors[key] = tensor_copy(t)
    try:
        state_tensors, tree = flatten_state(dict(state))
    except StateError as e:
        raise CheckpointError(f"cannot save checkpoint {name!r}: {e}") from e
    blobs = {
        "weights": safetensors.torch.save(weight_tensors),
        "state_tensors": safetensors.torch.save(state_tensors),
        "state": json.dumps(tree).encode("utf-8"),
    }
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "name": name,
        "step": step,
        "files": {
            role: {"file": name + FILES[role], "bytes": len(data), "sha256": _sha256(data)}
            for role, data in blobs.items()
        },
        "tensors": {
            "weights": _describe(weight_tensors),
            "state_tensors": _describe(state_tensors),
        },
    }
    run.mkdir(parents=True, exist_ok=True)
    for stale in run.glob(f".{name}.*.tmp"):  # left by a save that was killed
        stale.unlink(missing_ok=True)
    temps: dict[str, Path] = {}
    try:
        for role, data in blobs.items():
            temps[role] = write_temp(run / (name + FILES[role]), data)
        temps["manifest"] = write_temp(
            run / f"{name}.json", json.dumps(manifest, indent=1).encode()
        )
        if _intact(run, name):
            _move_aside(run, name)
        for role in FILES:
            os.replace(temps[role], run / (name + FILES[role]))
            del temps[role]
        os.replace(temps["manifest"], run / f"{name}.json")  # the commit point
        del temps["manifest"]
        fsync_dir(run)
    except OSError as e:
        for tmp in temps.values():  # free the space first: the listing below reads the files
            with contextlib.suppress(OSError):
                tmp.unlink()
        temps.clear()
        kept = intact_checkpoints(run)
        hint = (
            "intact: " + ", ".join(f"{n!r} (step {s})" for n, s in kept.items())
            if kept
            else "no checkpoint of this run is intact"
        )
        raise CheckpointWriteError(
            f"saving checkpoint {name!r} in {run} failed ({e.strerror or e}); {hint}"
        ) from e
    finally:
        for tmp in temps.values():
            with contextlib.suppress(OSError):
                tmp.unlink()
    return run / f"{name}.json"


def _move_aside(run: Path, name: str) -> None:
    for suffix in (*FILES.values(), ".json"):  # manifest last: until then NAME still loads
        src = run / (name + suffix)
        if src.exists():
            os.replace(src, run / f"{name}.prev{suffix}")
    fsync_dir(run)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Broken(Exception):
    """Internal: file ``file`` of a checkpoint has ``problem``."""

    def __init__(self, file: str, problem: str) -> None:
        super().__init__(f"{file} {problem}")
        self.file, self.problem = file, problem


def _sibling(name: str) -> str:
    return name.removesuffix(".prev") if name.endswith(".prev") else f"{name}.prev"


def _read_manifest(run: Path, name: str) -> dict[str, Any]:
    path = run / f"{name}.json"
    try:
        manifest = json.loads(path.read_bytes())
    except FileNotFoundError:
        orphans = [name + s for s in FILES.values() if (run / (name + s)).exists()]
        why = f" ({', '.join(orphans)} exist without it: a save was interrupted)" if orphans else ""
        raise _Broken(path.name, f"is missing{why}") from None
    except ValueError:  # bad UTF-8 or JSON
        raise _Broken(path.name, "is not valid JSON (truncated or corrupt)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _Broken(path.name, "is not a metagrad checkpoint manifest")
    if manifest.get("version") != VERSION:
        raise _Broken(path.name, f"has format version {manifest.get('version')!r}, not {VERSION}")
    return manifest


def _read_file(run: Path, name: str, role: str, entry: Mapping[str, Any]) -> bytes:
    """The file's bytes, from its own name or its sibling's, whichever matches the manifest."""
    problem = "is missing"
    for candidate in (name, _sibling(name)):
        path = run / (candidate + FILES[role])
        if not path.exists():
            continue
        data = path.read_bytes()
        if len(data) == entry["bytes"] and _sha256(data) == entry["sha256"]:
            return data
        if candidate == name:
            size, want = len(data), entry["bytes"]
            problem = (
                f"is truncated ({size} of {want} bytes)"
                if size < want
                else f"is corrupt (its sha256 does not match {name}.json)"
                if size == want
                else f"has {size} bytes where {name}.json says {want}"
            )
    raise _Broken(name + FILES[role], problem)


def _tensors(data: bytes, described: Any, file: str) -> dict[str, Tensor]:
    try:
        tensors = safetensors.torch.load(data)
    except Exception as e:
        raise _Broken(file, f"is not a readable safetensors file ({e})") from None
    if _describe(tensors) != described:
        raise _Broken(file, "holds tensors whose names, dtypes or shapes differ from the manifest")
    return tensors


def _load(run: Path, name: str) -> tuple[dict[str, Any], dict[str, Tensor], Any]:
    manifest = _read_manifest(run, name)
    try:
        files = {role: _read_file(run, name, role, manifest["files"][role]) for role in FILES}
        described = manifest["tensors"]["weights"], manifest["tensors"]["state_tensors"]
    except (KeyError, TypeError):
        raise _Broken(f"{name}.json", "lacks the entries of a complete manifest") from None
    weights = _tensors(files["weights"], described[0], name + FILES["weights"])
    state_tensors = _tensors(files["state_tensors"], described[1], name + FILES["state_tensors"])
    try:
        state = unflatten_state(state_tensors, json.loads(files["state"]))
    except (ValueError, KeyError, TypeError, StateError) as e:
        raise _Broken(name + FILES["state"], f"does not decode ({e})") from None
    return manifest, weights, state


def _intact(run: Path, name: str) -> bool:
    try:
        _load(run, name)
    except _Broken:
        return False
    return True


def intact_checkpoints(run_dir: PathLike) -> dict[str, int]:
    """The checkpoints in ``run_dir`` that load and verify, by name, with their steps."""
    run, found = Path(run_dir), {}
    for manifest in sorted(run.glob("*.json")):
        name = manifest.name.removesuffix(".json")
        if _NAME.fullmatch(name):
            with contextlib.suppress(_Broken):
                found[name] = _load(run, name)[0]["step"]
    return found


def _error(run: Path, name: str, broken: _Broken) -> CheckpointError:
    message = f"cannot load checkpoint {name!r} from {run}: {broken.file} {broken.problem}."
    intact = {n: s for n, s in intact_checkpoints(run).items() if n != name}
    order = sorted(intact, key=lambda n: (n != _sibling(name), n))
    if not order:
        return CheckpointError(f"{message} No intact checkpoint is left in this run directory.")
    first = order[0]
    which = f"The previous {name!r} checkpoint" if first == f"{name}.prev" else "Checkpoint"
    message += f" {which} {first!r} (step {intact[first]}) is intact: load it instead"
    message += f" (e.g. --checkpoint {first})"
    others = [f"{n!r} (step {intact[n]})" for n in order[1:]]
    message += f"; also intact: {', '.join(others)}." if others else "."
    return CheckpointError(message, alternative=first)


def load_checkpoint(
    run_dir: PathLike, name: str = "last", *, expected: Mapping[str, Tensor] | None = None
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Load and verify a checkpoint saved by :func:`save_checkpoint`. Never executes code.

    Args:
        run_dir: The run directory.
        name: ``"last"``, ``"best"``, or ``"last.prev"`` for the one before ``"last"``.
        expected: The model's ``state_dict()``, to check that the weights' names and shapes fit.

    Returns:
        ``(weights, state)``: CPU tensors by name, and the state as it was saved (tuples,
        int keys and tensor dtypes intact), ready for ``load_state_dict`` and
        :func:`restore_rng_state`.

    Raises:
        CheckpointError: a file is missing, truncated or corrupt, or the weights do not fit
            ``expected``. The message names the file, the problem and an intact alternative,
            also given as ``error.alternative``.
    """
    _check_name(name, saving=False)
    run = Path(run_dir)
    if not run.is_dir():
        raise CheckpointError(f"cannot load checkpoint {name!r}: no run directory {run}")
    try:
        _, weights, state = _load(run, name)
    except _Broken as broken:
        raise _error(run, name, broken) from None
    if expected is not None:
        _check_fit(name, weights, expected)
    return weights, state


def _check_fit(name: str, weights: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> None:
    problems = [f"missing {k!r}" for k in expected if k not in weights]
    problems += [f"unexpected {k!r}" for k in weights if k not in expected]
    problems += [
        f"{k!r} is {list(weights[k].shape)} here but {list(t.shape)} in the model"
        for k, t in expected.items()
        if k in weights and weights[k].shape != t.shape
    ]
    if problems:
        raise CheckpointError(
            f"checkpoint {name!r} does not fit the model: {'; '.join(problems[:5])}"
            f"{' ...' if len(problems) > 5 else ''}. Build the model from the run's config.toml"
        )

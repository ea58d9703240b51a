"""Checkpoints as one consistent, verifiable unit of two files, with no code execution on load.

A checkpoint ``NAME`` (``"last"``, ``"best"``) in a run directory is two safetensors files:

* ``NAME.safetensors``: the model weights (a plain safetensors file any tool can read);
* ``NAME.state.safetensors``: the training state's tensors (optimizer moments, RNG states),
  whose metadata holds the rest of the state as JSON (step, sampler, best metric, the config's
  hash; split by :func:`metagrad.train.io.flatten_state`), the sha256 and size of the weights
  file, and a checksum of its own tensors and JSON. It is written last: the commit marker.

Saving writes both under temporary names, moves the current checkpoint to ``NAME.prev.*`` (if
it verifies), moves the weights and then the state into place. The previous checkpoint
therefore stays loadable, as ``NAME`` or ``NAME.prev``, whatever moment a crash interrupts a
save; because the state identifies its weights by hash, the loader accepts the weights under
their own name or their sibling's, which covers a crash halfway through moving a checkpoint
aside. ``last`` keeps ``last.prev``; any other name (``best``) deletes its ``.prev`` once the
new one is committed, so a run directory holds at most ``last``, ``last.prev`` and ``best``.

Loading reads only safetensors and JSON (never pickle), checks every hash and size, and raises
:class:`CheckpointError` naming the file, the problem and an intact alternative.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor

from metagrad.train.io import (  # the errors are re-exported: they belong to checkpoints
    CheckpointError,
    CheckpointWriteError,
    PathLike,
    StateError,
    flatten_state,
    fsync_dir,
    tensor_copy,
    unflatten_state,
    write_temp,
)
from metagrad.train.rng import capture_rng_state, restore_rng_state

__all__ = [
    "CheckpointError",
    "CheckpointWriteError",
    "capture_rng_state",
    "intact_checkpoints",
    "load_checkpoint",
    "on_device",
    "restore_rng_state",
    "save_checkpoint",
    "state_file",
]

FORMAT, VERSION = "metagrad-checkpoint", 2
WEIGHTS, STATE = ".safetensors", ".state.safetensors"
_NAME = re.compile(r"[A-Za-z0-9_-]+(\.prev)?")
KEEPS_PREVIOUS = ("last",)  # checkpoints that keep their predecessor as NAME.prev


# ------------------------------------------------------------------------- save and load
def _check_name(name: str, saving: bool) -> None:
    if not _NAME.fullmatch(name) or (saving and name.endswith(".prev")):
        kind = "letters, digits, '_' and '-'" + ("" if saving else ", optionally + '.prev'")
        raise CheckpointError(f"bad checkpoint name {name!r}: use {kind}, e.g. 'last' or 'best'")


def state_digest(tensors: Mapping[str, Tensor], tree_json: str) -> str:
    """The checksum a state file carries of its own content: its tensors (names, dtypes,
    shapes, bytes) and its JSON tree."""
    h = hashlib.sha256(tree_json.encode())
    for key in sorted(tensors):
        t = tensors[key].detach().to("cpu").reshape(-1).contiguous()
        h.update(f"\0{key}\0{t.dtype}\0{list(tensors[key].shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def state_file(
    name: str, step: int, state_tensors: Mapping[str, Tensor], tree: Any, weights_blob: bytes
) -> bytes:
    """The bytes of ``NAME.state.safetensors`` for a state split into tensors and a tree."""
    tree_json = json.dumps(tree)
    metadata = {
        "format": FORMAT,
        "version": str(VERSION),
        "name": name,
        "step": str(step),
        "tree": tree_json,
        "weights_bytes": str(len(weights_blob)),
        "weights_sha256": _sha256(weights_blob),
        "state_sha256": state_digest(state_tensors, tree_json),
    }
    return safetensors.torch.save(dict(state_tensors), metadata=metadata)


def slim_state(state: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint kept only to be tested or adapted from needs of its training
    ``state``: the step and the learner's own state (e.g. Meta-SGD's rates). Optimiser
    moments, random states and the sampler go (a third of a training checkpoint's size):
    shipped initialisations and finished result runs keep their ``best`` this way."""
    return {"step": state["step"], "learner": state.get("learner", {})}


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
        The state file ``run_dir/NAME.state.safetensors``, the checkpoint's commit marker.

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
    weights_blob = safetensors.torch.save(
        weight_tensors, metadata={"format": "metagrad-weights", "name": name, "step": str(step)}
    )
    blobs = {
        WEIGHTS: weights_blob,
        STATE: state_file(name, step, state_tensors, tree, weights_blob),
    }
    run.mkdir(parents=True, exist_ok=True)
    for stale in run.glob(f".{name}.*.tmp"):  # left by a save that was killed
        stale.unlink(missing_ok=True)
    temps: dict[str, Path] = {}
    try:
        for suffix, data in blobs.items():
            temps[suffix] = write_temp(run / (name + suffix), data)
        if _intact(run, name):
            _move_aside(run, name)
        for suffix in blobs:  # the state last: the commit point
            os.replace(temps[suffix], run / (name + suffix))
            del temps[suffix]
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
    if name not in KEEPS_PREVIOUS:  # committed: the predecessor is no longer needed
        for suffix in (STATE, WEIGHTS):
            with contextlib.suppress(OSError):
                (run / f"{name}.prev{suffix}").unlink(missing_ok=True)
    return run / (name + STATE)


def _move_aside(run: Path, name: str) -> None:
    for suffix in (WEIGHTS, STATE):  # the state last: until then NAME still loads
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


def _parse(data: bytes, file: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors and metadata of a safetensors file's bytes, or why they are unreadable."""
    size = len(data)
    n = int.from_bytes(data[:8], "little") if size >= 8 else None
    if n is None or n > size - 8:
        raise _Broken(file, f"is truncated ({size} bytes, not even its header)")
    try:
        header = json.loads(data[8 : 8 + n])
        ends = [e["data_offsets"][1] for k, e in header.items() if k != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise _Broken(file, "is corrupt (its header is not valid JSON)") from None
    want = 8 + n + max(ends, default=0)
    if size < want:
        raise _Broken(file, f"is truncated ({size} of {want} bytes)")
    if size > want:
        raise _Broken(file, f"is corrupt ({size - want} bytes after its end)")
    try:
        tensors = safetensors.torch.load(data)
    except Exception as e:
        raise _Broken(file, f"is corrupt (not a readable safetensors file: {e})") from None
    metadata = header.get("__metadata__") or {}
    return tensors, metadata if isinstance(metadata, dict) else {}


def _read_weights(run: Path, name: str, size: int, sha256: str) -> bytes:
    """The weights' bytes, from their own name or their sibling's, whichever the state names."""
    problem = "is missing"
    for candidate in (name, _sibling(name)):
        path = run / (candidate + WEIGHTS)
        if not path.exists():
            continue
        data = path.read_bytes()
        if len(data) == size and _sha256(data) == sha256:
            return data
        if candidate == name:
            problem = (
                f"is truncated ({len(data)} of {size} bytes)"
                if len(data) < size
                else f"is corrupt (its sha256 does not match {name}{STATE})"
                if len(data) == size
                else f"has {len(data)} bytes where {name}{STATE} says {size}"
            )
    raise _Broken(name + WEIGHTS, problem)


def _load(run: Path, name: str) -> tuple[int, dict[str, Tensor], Any]:
    path = run / (name + STATE)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        orphan = (run / (name + WEIGHTS)).exists()
        why = f" ({name}{WEIGHTS} exists without it: a save was interrupted)" if orphan else ""
        raise _Broken(path.name, f"is missing{why}") from None
    state_tensors, meta = _parse(data, path.name)
    if meta.get("format") != FORMAT:
        raise _Broken(path.name, "is not a metagrad checkpoint state")
    if meta.get("version") != str(VERSION):
        raise _Broken(path.name, f"has format version {meta.get('version')!r}, not {VERSION}")
    try:
        tree_json, step = meta["tree"], int(meta["step"])
        size, sha256 = int(meta["weights_bytes"]), meta["weights_sha256"]
        own = meta["state_sha256"]
    except (KeyError, ValueError):
        raise _Broken(path.name, "lacks the entries of a checkpoint state") from None
    if state_digest(state_tensors, tree_json) != own:
        raise _Broken(path.name, "is corrupt (its checksum does not match its content)")
    weights, _ = _parse(_read_weights(run, name, size, sha256), name + WEIGHTS)
    try:
        state = unflatten_state(state_tensors, json.loads(tree_json))
    except (ValueError, KeyError, TypeError, AttributeError, StateError) as e:
        raise _Broken(path.name, f"holds a state that does not decode ({e})") from None
    if not isinstance(state, dict) or state.get("step") != step:
        raise _Broken(path.name, "holds a state whose step differs from its metadata")
    return step, weights, state


def _intact(run: Path, name: str) -> bool:
    try:
        _load(run, name)
    except _Broken:
        return False
    return True


def intact_checkpoints(run_dir: PathLike) -> dict[str, int]:
    """The checkpoints in ``run_dir`` that load and verify, by name, with their steps."""
    run, found = Path(run_dir), {}
    for path in sorted(run.glob("*" + STATE)):
        name = path.name.removesuffix(STATE)
        if _NAME.fullmatch(name):
            with contextlib.suppress(_Broken):
                found[name] = _load(run, name)[0]
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


def on_device(state: Any, device: torch.device | str) -> Any:
    """``state`` (as loaded: CPU tensors, nested in dicts, lists and tuples) with its tensors
    on ``device``: a checkpoint is device-independent, a CUDA run's resumes on the CPU and the
    reverse."""
    if isinstance(state, Tensor):
        return state.to(device)
    if isinstance(state, dict):
        return {k: on_device(v, device) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(on_device(v, device) for v in state)
    return state


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

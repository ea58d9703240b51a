"""A meta-batch split over processes (issue 18), proven equal to one process.

Real gloo runs on this CPU, one thread per process, spawned here as ``torchrun`` spawns them
(``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``): the same config trained by 2
processes and by one (``train.reduce = "ordered"``: bit for bit; the default all_reduce: to
1e-10 in float64, the first meta-gradient to 1e-5 in float32), a run of 3 processes resumed
by 2, sharded validation and test, a ``torchrun --standalone`` smoke run, and the failures: a
bad input on one line from rank 0 with nothing written, a dead or hung process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

import metagrad
from metagrad.cli.main import main
from metagrad.config import load_config
from metagrad.train.build import build_experiment
from metagrad.train.testing import evaluate_split
from metagrad.train.trainer import resume_run, train

ROOT = Path(__file__).resolve().parents[2]
SINE = ROOT / "configs" / "sinusoid" / "maml_10shot.toml"
REPTILE = ROOT / "configs" / "sinusoid" / "reptile_10shot.toml"
OMNIGLOT = ROOT / "configs" / "omniglot" / "maml_5w1s.toml"
DATA = ROOT.parent / "shared" / "data" / "omniglot"
SRC = Path(metagrad.__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("dist_worker.py")
# 4 steps of 6 tasks, validated at steps 2 and 4 and tested on 10 tasks in chunks of 4 (so
# both processes score chunks).
SMALL = [
    "train.iterations=4",
    "train.meta_batch_size=6",
    "train.log_every=2",
    "train.checkpoint_every=2",
    "train.val_every=2",
    "train.val_tasks=10",
    "eval.tasks=10",
    "eval.chunk_size=4",
    "eval.inner_steps=3",
]
ORDERED = [*SMALL, "train.reduce=ordered"]
FLOAT64 = [*SMALL, "train.dtype=float64"]
OMNI = [
    f"task.root={DATA}",
    "train.iterations=3",
    "train.meta_batch_size=4",
    "train.val_every=0",
    "train.log_every=1",
    "train.reduce=ordered",
]
REPTILE_EVAL = ["eval.inner_batch_size=2", "eval.chunk_size=3", "train.meta_batch_size=4"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Launch:
    """``world`` processes of one run, each running ``argv(rank)`` with the launcher's
    variables; their output goes to files in ``where``."""

    def __init__(self, where: Path, world: int, argv, extra_env: dict | None = None) -> None:
        where.mkdir(parents=True, exist_ok=True)
        self.where, port = where, _free_port()
        path = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
        self.procs = []
        for rank in range(world):
            env = {
                **os.environ,
                "RANK": str(rank),
                "WORLD_SIZE": str(world),
                "LOCAL_RANK": str(rank),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "OMP_NUM_THREADS": "1",
                "PYTHONPATH": path,
                **(extra_env or {}),
            }
            out = open(where / f"rank{rank}.out", "w")  # noqa: SIM115 - closed by the process
            err = open(where / f"rank{rank}.err", "w")  # noqa: SIM115
            command = [sys.executable, *(argv(rank) if callable(argv) else argv)]
            self.procs.append(subprocess.Popen(command, env=env, stdout=out, stderr=err))

    def wait(self, timeout: float = 240) -> list[int]:
        deadline = time.monotonic() + timeout
        try:
            return [p.wait(max(1.0, deadline - time.monotonic())) for p in self.procs]
        finally:
            for p in self.procs:
                if p.poll() is None:
                    p.kill()

    def out(self, rank: int) -> str:
        return (self.where / f"rank{rank}.out").read_text()

    def err(self, rank: int) -> str:
        return (self.where / f"rank{rank}.err").read_text()


def _worker(where: Path, world: int, jobs: list[dict]) -> Launch:
    return Launch(where, world, [str(WORKER), json.dumps(jobs)])


def _cli(*args: str) -> list[str]:
    return ["-m", "metagrad", *args]


def _weights(run: Path, name: str = "last") -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(run / f"{name}.safetensors")


def _records(run: Path) -> list[dict]:
    """metrics.jsonl without its clock readings."""
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [
        {k: v for k, v in r.items() if k not in ("wall_s", "train_s", "tasks_per_s")} for r in lines
    ]


def _assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every multi-process run of the equality tests (3 processes, then 2 running all the
    other jobs in one process group) and their one-process references, computed here
    meanwhile."""
    base = tmp_path_factory.mktemp("dist")

    def job(kind: str, out: str, config: Path = SINE, **more) -> dict:
        return {"kind": kind, "out": str(base / out), "config": str(config), **more}

    first = job("train", "3-2", overrides=[*ORDERED, "train.iterations=2"])
    three = _worker(base / "three", 3, [first])
    assert three.wait() == [0, 0, 0], three.err(0) + three.err(1) + three.err(2)
    jobs = [
        job("resume", "3-2", overrides=["train.iterations=4"]),
        job("train", "ordered", overrides=ORDERED, test=True),
        job("train", "float64", overrides=FLOAT64),
        job("gradient", "grad.safetensors", overrides=SMALL, reduce="all_reduce"),
        job("evaluate", "reptile.npy", REPTILE, overrides=REPTILE_EVAL, tasks=10),
        job("train", "auto", overrides=ORDERED, seconds={"loop": 1.0, "vectorized": 2.0}),
    ]
    if DATA.exists():
        jobs.append(job("train", "omniglot", OMNIGLOT, overrides=OMNI))
    two = _worker(base / "two", 2, jobs)
    # The references, one process, while the two run.
    ref = base / "ref"
    train(load_config(SINE, ORDERED), ref / "ordered", test=True)
    train(load_config(SINE, FLOAT64), ref / "float64", test=False)
    train(load_config(SINE, [*ORDERED, "algorithm.path=loop"]), ref / "loop", test=False)
    if DATA.exists():
        train(load_config(OMNIGLOT, OMNI), ref / "omniglot", test=False)
    assert two.wait() == [0, 0], two.err(0) + two.err(1)
    return base, ref, two


def test_ordered_reduction_is_bit_identical_for_any_number_of_processes(runs):
    base, ref, _ = runs
    for name in ("last", "best"):
        _assert_identical(_weights(base / "ordered", name), _weights(ref / "ordered", name))
    # Validation and test shard their chunks of tasks and gather the scores: the same numbers.
    assert _records(base / "ordered") == _records(ref / "ordered")
    results = [json.loads((r / "ordered" / "results.json").read_text()) for r in (base, ref)]
    assert results[0] == results[1]
    if not DATA.exists():
        pytest.skip("the Omniglot data of ../shared/data is not here (sinusoid checked)")
    _assert_identical(_weights(base / "omniglot"), _weights(ref / "omniglot"))


def test_rank_0_decides_the_auto_path_for_every_process(runs):
    """Rank 0 measures (by an injected clock preferring the loop; the other rank's clock
    fails if asked), records its decision and every process runs it: the run equals, bit for
    bit, one process forced onto the loop."""
    base, ref, _ = runs
    run = base / "auto"
    (decision,) = json.loads((run / "path.json").read_text())["decisions"]
    assert (decision["path"], decision["chunk_size"]) == ("loop", None)
    plans = [json.loads((run / f"plans-rank{r}.json").read_text()) for r in (0, 1)]
    assert plans[0] == plans[1] and list(plans[0].values()) == ["loop"]
    _assert_identical(_weights(run), _weights(ref / "loop"))


def test_all_reduce_in_float64_agrees_with_one_process_to_1e10(runs):
    base, ref, _ = runs
    two, one = _weights(base / "float64"), _weights(ref / "float64")
    assert all(t.dtype == torch.float64 for t in one.values())
    for k in one:
        assert (two[k] - one[k]).abs().max().item() <= 1e-10 * max(1.0, one[k].abs().max())
    assert any(not torch.equal(two[k], one[k]) for k in one)  # summed in another order


def test_first_float32_meta_gradient_of_two_processes_agrees_to_1e5(runs):
    base, _, _ = runs
    two = safetensors.torch.load_file(base / "grad.safetensors")
    exp = build_experiment(load_config(SINE, SMALL))
    exp.learner.backward(exp.train_tasks.sample(6))
    one = {k: p.grad for k, p in exp.model.named_parameters()}
    assert two.keys() == one.keys()
    assert all(g.dtype == torch.float32 for g in two.values())
    scale = torch.cat([g.flatten() for g in one.values()]).norm()
    for k in one:
        assert (two[k] - one[k]).norm() <= 1e-5 * scale, k


def test_three_processes_resumed_as_two_end_equal_to_an_uninterrupted_run(runs):
    base, ref, _ = runs
    _assert_identical(_weights(base / "3-2"), _weights(ref / "ordered"))


def test_rank_0_alone_writes_the_run_directory_once(runs):
    base, ref, two = runs
    run = base / "ordered"
    names = sorted(p.name for p in run.iterdir() if p.name != ".lock")
    assert names == sorted(p.name for p in (ref / "ordered").iterdir() if p.name != ".lock")
    steps = [(r["split"], r["step"]) for r in _records(run)]
    assert steps == [("train", 2), ("val", 2), ("train", 4), ("val", 4)]  # each logged once
    assert two.out(1) == "" and two.err(1) == ""  # the other process says nothing
    assert two.out(0).count("meta-test of") == 1


def test_sharded_evaluation_draws_every_chunks_minibatches_as_one_process(runs):
    base, _, _ = runs
    # Reptile's test adapts on mini-batches of 2 of the 5 support points, drawn from one
    # generator chunk after chunk: a process skipping a chunk must still draw its order.
    cfg = load_config(REPTILE, REPTILE_EVAL)
    one = evaluate_split(build_experiment(cfg), "test", 10).losses
    two = np.load(base / "reptile.npy")
    assert one.shape == two.shape == (11, 10)
    np.testing.assert_array_equal(two, one)


def test_ordered_on_one_process_is_the_task_by_task_run_bit_for_bit(tmp_path):
    # What "ordered" equals with one process: the ordinary run where it backpropagates task by
    # task (the loop path); elsewhere (the MLP's vectorised default) only to rounding.
    tiny = ["train.iterations=3", "train.val_every=0", "algorithm.path=loop"]
    train(load_config(SINE, tiny), tmp_path / "plain", test=False)
    train(load_config(SINE, [*tiny, "train.reduce=ordered"]), tmp_path / "ordered", test=False)
    _assert_identical(_weights(tmp_path / "ordered"), _weights(tmp_path / "plain"))


# ------------------------------------------------------------------------ command line
SMOKE = [
    "--set",
    "train.iterations=2",
    "--set",
    "train.meta_batch_size=4",
    "--set",
    "train.val_every=2",
    "--set",
    "train.val_tasks=4",
    "--set",
    "eval.tasks=4",
]


def test_torchrun_standalone_trains_on_two_processes(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip(f"no torchrun beside {sys.executable}")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    run = tmp_path / "run"
    command = [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "metagrad"]
    done = subprocess.run(
        [*command, "train", str(SINE), *SMOKE, "--out", str(run)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("training sinusoid-maml-10shot into") == 1
    assert done.stdout.count("meta-test of") == 1
    # `metagrad test` shares out the chunks of test tasks too: the numbers of one process.
    again = ["test", str(run), "--set", "eval.tasks=7", "--set", "eval.chunk_size=2"]
    done = subprocess.run([*command, *again], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    two = json.loads((run / "results-best-eval.tasks=7-eval.chunk_size=2.json").read_text())
    assert main(again) == 0
    one = json.loads((run / "results-best-eval.tasks=7-eval.chunk_size=2.json").read_text())
    assert two == one and one["tasks"] == 7


def _one_line_on_rank_0(launch: Launch, code: int, *words: str) -> None:
    assert launch.wait(120) == [code, code], launch.err(0) + launch.err(1)
    lines = launch.err(0).strip().splitlines()
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0]
    assert launch.err(1) == "" and launch.out(1) == ""


@pytest.mark.parametrize(
    ("case", "extra", "words"),
    [
        ("device", ["train.device=cuda"], ["'cuda' is not available", "train.device"]),
        ("world", ["train.meta_batch_size=1"], ["2 processes cannot split", "meta_batch_size = 1"]),
        ("mismatch", [], ["rank 1 differs from rank 0", "train.outer_lr"]),
    ],
)
def test_bad_input_is_one_line_on_rank_0_and_nothing_is_written(tmp_path, case, extra, words):
    if case == "device" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    run = tmp_path / "run"
    settings = [a for x in extra for a in ("--set", x)]

    def argv(rank: int) -> list[str]:
        other = ["--set", "train.outer_lr=0.01"] if case == "mismatch" and rank == 1 else []
        return _cli("train", str(SINE), *SMOKE, *settings, *other, "--out", str(run))

    _one_line_on_rank_0(Launch(tmp_path / "logs", 2, argv), 2, *words)
    assert not run.exists()


def _training(tmp_path: Path, timeout: int) -> tuple[Launch, Path]:
    """Two processes training for long, after their first checkpoint."""
    run = tmp_path / "run"
    settings = ["train.iterations=100000", "train.log_every=5", "train.checkpoint_every=5"]
    settings += ["train.val_every=0", f"train.dist_timeout_s={timeout}"]
    argv = _cli("train", str(SINE), *[a for s in settings for a in ("--set", s)], "--out", str(run))
    launch = Launch(tmp_path / "logs", 2, argv)
    deadline = time.monotonic() + 120
    while not (run / "last.state.safetensors").exists():
        assert time.monotonic() < deadline and launch.procs[0].poll() is None, launch.err(0)
        time.sleep(0.2)
    return launch, run


def _resumes(run: Path) -> None:
    from metagrad.train.trainer import read_step

    step = read_step(run)
    result = resume_run(run, test=False, max_steps=step + 2)
    assert result.steps == step + 2


def test_a_hung_process_stops_the_others_within_the_timeout_and_the_run_resumes(tmp_path):
    launch, run = _training(tmp_path, timeout=10)
    os.kill(launch.procs[1].pid, signal.SIGSTOP)  # hangs: alive, silent
    start = time.monotonic()
    try:
        code = launch.procs[0].wait(60)
    finally:
        launch.procs[1].kill()
    waited = time.monotonic() - start
    lines = launch.err(0).strip().splitlines()
    assert code == 1 and len(lines) == 1, lines
    assert "did not answer within train.dist_timeout_s = 10 s" in lines[0]
    assert 8 < waited < 10 + 15, waited  # the timeout, plus a loaded machine's exit
    _resumes(run)


def test_a_dead_process_stops_the_others_at_once(tmp_path):
    launch, run = _training(tmp_path, timeout=300)
    launch.procs[1].kill()
    start = time.monotonic()
    assert launch.procs[0].wait(60) == 1
    assert time.monotonic() - start < 30  # not the 300 s timeout: the connection closed
    lines = launch.err(0).strip().splitlines()
    assert len(lines) == 1 and "died or did not answer" in lines[0], lines
    shutil.rmtree(tmp_path / "logs", ignore_errors=True)
    _resumes(run)


# ---------------------------------------------------------------------- other devices
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_a_cuda_run_resumes_on_the_cpu_and_equals_its_steps(tmp_path):
    cfg = load_config(SINE, [*SMALL, "train.device=cuda", "train.val_every=0"])
    train(cfg, tmp_path / "run", test=False, max_steps=2)
    resume_run(tmp_path / "run", ["train.device=cpu"], test=False)
    weights = _weights(tmp_path / "run")
    assert all(t.device.type == "cpu" and torch.isfinite(t).all() for t in weights.values())


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="fewer than 2 CUDA devices")
def test_two_processes_on_two_gpus_use_nccl_and_agree(tmp_path):
    launch = Launch(
        tmp_path / "logs",
        2,
        _cli("train", str(SINE), *SMOKE, "--set", "train.device=cuda", "--out", str(tmp_path)),
    )
    assert launch.wait() == [0, 0], launch.err(0)


@pytest.mark.skipif(not torch.backends.mps.is_available(), reason="no MPS device (not a Mac)")
def test_an_mps_run_trains_and_resumes_on_the_cpu(tmp_path):
    cfg = load_config(SINE, [*SMALL, "train.device=mps", "train.val_every=0"])
    train(cfg, tmp_path / "run", test=False, max_steps=2)
    resume_run(tmp_path / "run", ["train.device=cpu"], test=False)

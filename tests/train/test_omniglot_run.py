"""Omniglot end to end on the real data: a 20-iteration training and a meta-test; download."""

from __future__ import annotations

import hashlib
import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from metagrad.cli.main import main
from metagrad.config import load_config
from metagrad.train.trainer import train

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "omniglot"
pytestmark = pytest.mark.skipif(
    not (DATA / "images_background.npz").exists(),
    reason="the Omniglot data of ../shared/data is not here",
)
SMOKE = [
    f"task.root={DATA}",
    "train.iterations=20",
    "train.meta_batch_size=4",
    "train.val_every=10",
    "train.val_tasks=10",
    "train.log_every=5",
    "train.checkpoint_every=10",
    "eval.tasks=20",
]


@pytest.mark.parametrize("config", ["maml_5w1s", "reptile_5w1s"])
def test_twenty_iterations_then_meta_test(tmp_path, config):
    extra = [] if config.startswith("maml") else ["eval.inner_steps=5", "train.iterations=10"]
    cfg = load_config(ROOT / "configs" / "omniglot" / f"{config}.toml", [*SMOKE, *extra])
    result = train(cfg, tmp_path / "run")
    steps = cfg.eval.inner_steps + 1
    assert result.test.accuracies.shape == (steps, 20)
    assert np.all((result.test.accuracies >= 0) & (result.test.accuracies <= 1))
    report = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "accuracy" in report["steps"][-1]


def test_validation_episodes_are_shaped_as_the_test_episodes():
    from metagrad.train.build import build_experiment

    # Reptile trains on 10 shots per class and is tested on 1: validating on 10 shots scored
    # 97% where the test scored 82%, so validation must use the test's shots and queries.
    cfg = load_config(ROOT / "configs" / "omniglot" / "reptile_5w1s.toml", SMOKE)
    assert (cfg.task.shots, cfg.eval.shots) == (10, 1)
    exp = build_experiment(cfg)
    val, test = exp.fixed("val", 0, 2), exp.fixed("test", 0, 2)
    assert val.support_x.shape[1:] == test.support_x.shape[1:] == (5, 1, 28, 28)
    assert val.query_x.shape[1] == test.query_x.shape[1] == 5
    assert exp.train_tasks.sample(2).support_x.shape[1] == 50


def test_evaluation_resolves_the_auto_path_by_the_test_tasks_sizes(monkeypatch):
    from metagrad.train import testing
    from metagrad.train.build import build_experiment

    paths = []

    def spy(executor, *args, **kwargs):
        paths.append(executor.path)
        return real(executor, *args, **kwargs)

    real = testing.evaluate
    monkeypatch.setattr(testing, "evaluate", spy)
    # Reptile trains on 10-shot episodes (55 images: the loop) and is tested on 1-shot ones
    # (10 images: the vectorised path, 1.5x faster here for its 50 test steps).
    cfg = load_config(ROOT / "configs" / "omniglot" / "reptile_5w1s.toml", SMOKE)
    assert cfg.algorithm.path == "auto"
    exp = build_experiment(cfg)
    assert exp.learner.executor_for(exp.train_tasks.sample(2)).path == "loop"
    testing.evaluate_split(exp, "test", 3)
    assert paths == ["vectorized"]


def test_non_transductive_meta_test(tmp_path):
    cfg = load_config(
        ROOT / "configs" / "omniglot" / "maml_5w1s.toml",
        [*SMOKE, "eval.transductive=false", "eval.tasks=6"],
    )
    result = train(cfg, tmp_path / "run", max_steps=2, test=False)
    assert result.steps == 2
    assert main(["test", str(tmp_path / "run"), "--checkpoint", "last"]) == 0


def test_data_download_command_fetches_and_verifies(tmp_path, monkeypatch):
    from metagrad.data import omniglot

    served = tmp_path / "served"
    served.mkdir()
    zips = {}
    for half, small in (("background", "small1"), ("evaluation", "small2")):
        data = (DATA / f"images_background_{small}.zip").read_bytes()
        (served / f"{half}.zip").write_bytes(data)
        zips[half] = hashlib.md5(data).hexdigest()
    handler = partial(SimpleHTTPRequestHandler, directory=str(served))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        monkeypatch.setattr(
            omniglot, "OMNIGLOT_ZIPS", {h: (base + f"{h}.zip", md5) for h, md5 in zips.items()}
        )
        assert main(["data", "download", "omniglot", "--root", str(tmp_path / "d")]) == 0
        for half in zips:
            got = (tmp_path / "d" / f"images_{half}.zip").read_bytes()
            assert hashlib.md5(got).hexdigest() == zips[half]
        # A wrong checksum is a clear error and leaves nothing under the final name.
        monkeypatch.setattr(
            omniglot, "OMNIGLOT_ZIPS", {"background": (base + "background.zip", "0" * 32)}
        )
        assert (
            main(["data", "download", "omniglot", "--root", str(tmp_path / "e")]) == 1
        )  # a failed download: a runtime failure (README, "When things go wrong")
        assert not (tmp_path / "e" / "images_background.zip").exists()
    finally:
        server.shutdown()

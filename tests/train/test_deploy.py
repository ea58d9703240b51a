"""metagrad.load, Learner.adapt, Adapted.predict / save, meta_test: round trips and contracts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import metagrad
from adapt_fixtures import FOLDER, RGB_RUN, ROOT, SINE, untrained_run
from metagrad.config import load_config
from metagrad.errors import UsageError
from metagrad.tasks.preprocess import omniglot
from metagrad.train.adapted import Adapted
from metagrad.train.build import INPUTS, TASK_BUILDERS, build_experiment
from metagrad.train.deploy import Learner
from metagrad.train.pretrained import PRETRAINED, PretrainedInit
from metagrad.train.testing import evaluate_split


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return untrained_run(tmp_path_factory.mktemp("adapt") / "run")


def drawings(n: int, seed: int = 0) -> list[Image.Image]:
    """``n`` distinct 105x105 1-bit drawings (random ink blocks on paper)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        paper = np.ones((105, 105), bool)
        for _ in range(5):
            r, c = rng.integers(0, 90, 2)
            paper[r : r + 15, c : c + rng.integers(4, 15)] = False
        out.append(Image.fromarray(paper))
    return out


def test_load_a_run_directory_and_its_checkpoint_file(run):
    learner = metagrad.load(run)
    assert isinstance(learner, Learner)
    assert learner.preprocessing == omniglot(28)  # read back from preprocessing.json
    assert type(learner.algorithm).__name__ == "MAML" and not learner.model.training
    assert "best at step 0" in learner.source
    by_file = metagrad.load(run / "best.safetensors")
    for (k, a), b in zip(learner.model.state_dict().items(), by_file.model.state_dict().values()):
        assert torch.equal(a, b), k
    # A run without the record gets its family's preprocessing from the config.
    (run / "preprocessing.json").rename(run / "moved.json")
    try:
        assert metagrad.load(run).preprocessing == omniglot(28)
    finally:
        (run / "moved.json").rename(run / "preprocessing.json")


def test_loading_leaves_the_global_random_state_alone(run):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    metagrad.load(run)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("ways", [3, 5, 20, 30])
def test_adapt_to_any_number_of_classes_then_predict(run, ways):
    learner = metagrad.load(run)
    images = drawings(ways, seed=ways)
    names = [f"class{i:02d}" for i in range(ways)][::-1]  # given in reverse: units are sorted
    for steps in (0, 1):
        adapted = learner.adapt(images, names, inner_steps=steps)
        assert adapted.classes == tuple(sorted(names))
        assert adapted.about == {
            "head": "trained" if ways == 5 else "prototypes",
            "inner_steps": steps,
            "source": learner.source,
        }
        p = adapted.predict(images)
        assert p.probabilities.shape == (ways, ways)
        torch.testing.assert_close(p.probabilities.sum(1), torch.ones(ways))
        if ways != 5 and steps == 0:  # one drawing per class: each nearest to its prototype
            assert p.classes == names


def test_one_image_is_answered_as_in_a_batch_under_the_default_mode(run):
    adapted = metagrad.load(run).adapt(drawings(5), list("abcde"), head="zero", inner_steps=2)
    queries = drawings(6, seed=9)
    batched = adapted.predict(queries)
    for i, image in enumerate(queries):
        alone = adapted.predict(image)
        torch.testing.assert_close(alone.probabilities[0], batched.probabilities[i])
        assert alone.classes == [batched.classes[i]]
    # Transductively, one image alone is normalised to nothing: the answer is another.
    one = adapted.predict(queries[:1], batch_norm="transductive").probabilities
    assert not torch.allclose(one[0], batched.probabilities[0], atol=1e-3)


def test_save_and_load_round_trip(run, tmp_path):
    adapted = metagrad.load(run).adapt(drawings(3), ["x", "y", "z"], head="prototypes")
    adapted.save(tmp_path / "adapted.safetensors")
    again = metagrad.load(tmp_path / "adapted.safetensors")
    assert isinstance(again, Adapted)
    assert again.classes == ("x", "y", "z") and again.preprocessing == adapted.preprocessing
    assert again.about == adapted.about and again.batch_norm == "support"
    queries = drawings(4, seed=3)
    assert torch.equal(again.predict(queries).outputs, adapted.predict(queries).outputs)
    header = (tmp_path / "adapted.safetensors").read_bytes()[:8]
    assert int.from_bytes(header, "little") < 100_000  # a safetensors header: JSON, no pickle
    with pytest.raises(UsageError, match="does not exist"):
        adapted.save(tmp_path / "missing" / "a.safetensors")


def test_tensors_and_integer_labels(run):
    learner = metagrad.load(run)
    x = learner.preprocessing.batch(drawings(4))
    adapted = learner.adapt(x, torch.tensor([7, 3, 7, 3]), head="zero")
    assert adapted.classes == (3, 7)
    assert adapted.predict(x[0]).probabilities.shape == (1, 2)  # one example, no batch dim
    with pytest.raises(UsageError, match=r"shape \(3, 28, 28\) but example 0 has \(1, 28, 28\)"):
        adapted.predict([x[0], torch.zeros(3, 28, 28)])
    with pytest.raises(UsageError, match=r"the model takes \(1, 28, 28\)"):
        adapted.predict(torch.zeros(2, 1, 32, 32))


@pytest.mark.parametrize(
    ("labels", "words"),
    [
        (["a", "a", "a", "a"], r"one class only \(a\)"),
        (["a", "b"], "4 examples but 2 labels"),
        (["a", 1, "b", 2], r"all names \(str\) or all numbers"),
    ],
)
def test_bad_labels_are_one_line(run, labels, words):
    with pytest.raises(UsageError, match=words):
        metagrad.load(run).adapt(drawings(4), labels)


def test_a_colour_model_takes_grey_and_colour_images_alike(tmp_path):
    learner = metagrad.load(untrained_run(tmp_path / "rgb", FOLDER, RGB_RUN))
    assert learner.preprocessing.channels == 3 and learner.preprocessing.resize == 32
    grey = drawings(2)
    colour = [g.convert("RGB") for g in drawings(2, seed=1)]
    adapted = learner.adapt(grey + colour, list("abab"))
    assert adapted.support_x.shape == (4, 3, 28, 28)
    # A grey image reaches the colour model as grey RGB: its three channels are equal.
    pixels = learner.preprocessing.pixels(grey[0])  # [28, 28, 3] before normalisation
    assert (pixels == pixels[..., :1]).all()
    assert adapted.predict(grey[0]).probabilities.shape == (1, 2)


def test_a_regression_run_adapts_tensors(tmp_path):
    run = untrained_run(tmp_path / "sine", config=SINE, overrides=[])
    learner = metagrad.load(run)
    assert learner.preprocessing is None and not learner.classification
    x = torch.linspace(-3, 3, 5).unsqueeze(1)
    adapted = learner.adapt(x, torch.sin(x), inner_steps=2)
    p = adapted.predict(x)
    assert p.outputs.shape == (5, 1) and p.probabilities is None and p.classes is None
    with pytest.raises(UsageError, match="head 'prototypes' is for classifiers"):
        learner.adapt(x, torch.sin(x), head="prototypes")
    with pytest.raises(UsageError, match="inputs are not images"):
        learner.adapt(drawings(2), torch.zeros(2, 1))


def test_meta_test_is_metagrad_tests_protocol(tmp_path):
    run = untrained_run(tmp_path / "sine", config=SINE, overrides=[])
    cfg = load_config(run / "config.toml", ["eval.tasks=8", "eval.inner_steps=3"])
    learner = metagrad.load(run)
    exp = build_experiment(cfg)
    exp.model.load_state_dict(learner.model.state_dict())
    expected = evaluate_split(exp, "test", 8)
    got = metagrad.meta_test(learner, exp.fixed("test", 0, 8).chunks(3), inner_steps=3)
    np.testing.assert_array_equal(got.losses, expected.losses)
    assert got.loss(3).mean == expected.loss(3).mean


def test_meta_test_with_per_task_heads(run):
    learner = metagrad.load(run)
    x = learner.preprocessing.batch(drawings(6))
    batch = metagrad.TaskBatch(x[None], torch.arange(6)[None], x[None], torch.arange(6)[None])
    result = metagrad.meta_test(learner, batch, head="prototypes", batch_norm="support")
    assert result.accuracy(0).mean == 1.0  # the queries are the support images
    assert result.accuracies.shape == (learner.test_inner()[0].inner_steps + 1, 1)
    with pytest.raises(UsageError, match="head of 5 classes, but the tasks have 6: use head="):
        metagrad.meta_test(learner, batch)  # the trained head cannot score a 6th class


def test_models_are_looked_up_as_paths_first_then_as_pretrained_names(run, monkeypatch):
    entry = PretrainedInit("omniglot-test-5w", "x", "Omniglot, official background", 5, "-")
    monkeypatch.setattr(PretrainedInit, "path", property(lambda self: run))
    monkeypatch.setitem(PRETRAINED._entries, entry.name, entry)
    assert isinstance(metagrad.load("omniglot-test-5w"), Learner)
    with pytest.raises(UsageError, match="did you mean 'omniglot-test-5w'"):
        metagrad.load("omniglot-tset-5w")
    with pytest.raises(UsageError, match="no file, folder or pretrained initialisation named"):
        metagrad.load("nothing-like-it")
    with pytest.raises(UsageError, match="not a safetensors file"):
        metagrad.load(run / "config.toml")


def test_every_supervised_task_family_says_its_inputs():
    # A family's runs can be reloaded only if INPUTS knows it: a new family needs an entry.
    supervised = [f for f in TASK_BUILDERS if f not in ("rl",)]
    assert set(supervised) <= set(INPUTS), sorted(set(supervised) - set(INPUTS))


def test_a_reptile_run_adapts_with_its_carried_adam_moments_and_mini_batches(tmp_path):
    config = ROOT / "configs" / "omniglot" / "reptile_5w1s.toml"
    run = untrained_run(tmp_path / "reptile", config=config, overrides=["model.filters=8"])
    learner = metagrad.load(run)
    inner, batch_size = learner.test_inner()
    assert inner.optimizer.betas == (0.0, 0.999) and batch_size == 5  # eval.inner_batch_size
    params = learner.algorithm.params
    learner.algorithm.carried = {  # moments as a trained Reptile carries them into testing
        "m": {k: torch.full_like(v, 1e-3) for k, v in params.items()},
        "v": {k: torch.full_like(v, 1e-6) for k, v in params.items()},
        "t": {"steps": torch.tensor(100.0)},
    }
    images = drawings(12)
    # 3 classes: the carried head moments do not fit a 3-unit head and start from zero.
    three = learner.adapt(images, [c for c in "abc" for _ in range(4)])
    assert three.params["head.weight"].shape[0] == 3
    assert three.predict(images).probabilities.shape == (12, 3)
    five = learner.adapt(images[:10], [c for c in "abcde" for _ in range(2)])
    assert five.about["head"] == "trained"


def test_metagrad_pretrained_prints_one_line_per_initialisation_name_first(cli, monkeypatch):
    monkeypatch.setattr(PRETRAINED, "_entries", {})
    assert "no pretrained initialisations are shipped" in cli("pretrained").out
    entry = PretrainedInit(
        "omniglot-maml-20w", "x", "Omniglot, official background split", 20, "95.1% ± 0.3"
    )
    monkeypatch.setitem(PRETRAINED._entries, entry.name, entry)
    out = cli("pretrained")
    assert out.code == 0
    assert out.out.splitlines() == [
        "omniglot-maml-20w  Omniglot, official background split; 20-way; test 95.1% ± 0.3"
    ]

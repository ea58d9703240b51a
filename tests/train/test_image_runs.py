"""Every natural-image config trains and tests end to end on fixture data in the real formats
(shrunk with --set), and a run prepares its cache from task.root by itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAMILIES = ("cub", "mini-imagenet", "tiered-imagenet", "cifar-fs", "fc100")
CONFIGS = sorted(p for f in FAMILIES for p in (ROOT / "configs" / f).glob("*.toml"))
SHRINK = [
    "task.ways=2",
    "task.shots=1",
    "task.queries=1",
    "algorithm.inner_steps=1",
    "train.iterations=1",
    "train.meta_batch_size=1",
    "train.val_every=1",
    "train.val_tasks=2",
    "eval.tasks=2",
    "eval.shots=1",
    "eval.queries=1",
    "eval.inner_steps=1",
]


def sets(*overrides: str) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def test_the_twelve_mmfewshot_rows_the_papers_and_the_familys_configs_are_shipped():
    names = {f"{p.parent.name}/{p.stem}" for p in CONFIGS}
    mmfewshot = {
        f"{d}/maml_{b}_1xb105_{d}_5way-{k}shot"
        for d in ("cub", "mini-imagenet", "tiered-imagenet")
        for b in ("conv4", "resnet12")
        for k in (1, 5)
    }
    paper = {f"mini-imagenet/{a}_conv4-32_5w{k}s" for a in ("maml", "fomaml") for k in (1, 5)}
    cifar = {f"{d}/maml_conv4-32_5w{k}s" for d in ("cifar-fs", "fc100") for k in (1, 5)}
    family = {
        f"{d}/{a}_conv4_1xb105_{d}_5way-1shot"
        for d in ("cub", "mini-imagenet", "tiered-imagenet")
        for a in ("anil", "boil", "metasgd", "mamlpp")
    }
    assert names == mmfewshot | paper | cifar | family


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_natural_config_trains_and_tests(config, natural_cache, cli, tmp_path):
    out = tmp_path / "run"
    r = cli("train", config, "--out", out, *sets(f"task.cache={natural_cache}", *SHRINK))
    assert r.code == 0, r.err
    results = json.loads((out / "results.json").read_text())
    assert results["tasks"] == 2 and [s["step"] for s in results["steps"]] == [0, 1]
    r = cli("test", out)
    assert r.code == 0, r.err
    assert "| 1 |" in r.out and "(2 tasks, mean ± 95% interval)" in r.out


def test_a_run_prepares_its_cache_from_task_root_once(cli, tmp_path):
    from natural_fixtures import write_cifar100

    write_cifar100(tmp_path / "data", per_class=1)
    args = ["train", "cifar-fs/maml_conv4-32_5w1s", "--no-test"]
    shrink = sets(f"task.root={tmp_path / 'data'}", f"task.cache={tmp_path / 'cache'}", *SHRINK)
    r = cli(*args, "--out", tmp_path / "a", *shrink)
    assert r.code == 0, r.err
    assert "[data] preparing cifar-fs" in r.out and (tmp_path / "cache/cifar-fs/meta.json").exists()
    r = cli(*args, "--out", tmp_path / "b", *shrink)
    assert r.code == 0 and "[data] preparing" not in r.out  # the second run reads the cache


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            [],
            "fc100 is not prepared in {cache}/fc100; run `metagrad data prepare fc100 --root "
            "DIR` first (--cache DIR if you prepared elsewhere), or set task.root=DIR",
        ),
        (
            ["task.ways=61"],
            "fc100: ways=61 but the train split has 60 classes; choose ways <= 60 (keys "
            "task.ways, task.shots, task.queries)",
        ),
        (
            ["eval.shots=2", "eval.queries=1"],
            "fc100: shots=2 + queries=1 distinct images per class are needed but class bear of "
            "the val split has 2; choose shots >= 1 and shots + queries <= 2 (keys task.ways, "
            "eval.shots, eval.queries)",
        ),
        (["model.in_channels=1"], "model.in_channels: is 1 but fc100 images have 3 channel(s)"),
    ],
    ids=["not prepared", "ways beyond the split", "shots beyond a class", "channels"],
)
def test_bad_natural_inputs_are_one_clear_line(overrides, message, natural_cache, cli, tmp_path):
    cache = tmp_path / "empty" if not overrides else natural_cache
    shrink = [s for s in SHRINK if s.split("=")[0] not in {o.split("=")[0] for o in overrides}]
    r = cli(
        "train",
        "fc100/maml_conv4-32_5w1s",
        "--out",
        tmp_path / "run",
        *sets(f"task.cache={cache}", *shrink, *overrides),
    )
    assert r.code == 2
    assert message.format(cache=cache) in r.err and len(r.err.strip().splitlines()) == 1


def test_a_resumed_image_run_sees_the_same_augmented_episodes(natural_cache, tmp_path):
    import torch

    from metagrad.config import load_config
    from metagrad.train.checkpoint import load_checkpoint
    from metagrad.train.trainer import resume_run, train

    shrink = [s for s in SHRINK if not s.startswith(("train.iterations", "train.meta_batch"))]
    longer = ["train.iterations=4", "train.meta_batch_size=2", "train.checkpoint_every=2"]
    cfg = load_config(
        ROOT / "configs/cifar-fs/maml_conv4-32_5w1s.toml",
        [f"task.cache={natural_cache}", *shrink, *longer, "train.val_every=2"],
    )
    assert cfg.task.augment
    train(cfg, tmp_path / "straight", test=False)
    train(cfg, tmp_path / "cut", test=False, max_steps=2)
    resume_run(tmp_path / "cut", test=False)
    a, b = (load_checkpoint(tmp_path / r, "last")[0] for r in ("straight", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_folder_template_trains_and_tests_on_a_users_folder(cli, tmp_path):
    from natural_fixtures import write_folder

    d = write_folder(tmp_path / "my classes", classes=8, per_class=3)
    out = tmp_path / "run"
    r = cli(
        "train",
        "folder/maml_conv4_5w1s",
        "--out",
        out,
        *sets(f"task.root={d}", f"task.cache={tmp_path / 'cache'}", "task.image_size=32", *SHRINK),
    )
    assert r.code == 0, r.err
    assert "[data] preparing" in r.out
    assert json.loads((out / "results.json").read_text())["tasks"] == 2

"""`metagrad adapt` on a run of the folder family: RGB photos of every size and mode, trained
and then adapted to through the same preprocessing record."""

from __future__ import annotations

import csv
import dataclasses
import json

import torch
from PIL import Image

import metagrad
from metagrad.tasks.augment import MMFEWSHOT
from natural_fixtures import write_folder

TINY = [
    "task.image_size=28",
    "task.ways=2",
    "task.queries=1",
    "model.filters=8",
    "algorithm.inner_steps=1",
    "train.iterations=2",
    "train.meta_batch_size=1",
    "train.val_every=0",
    "eval.inner_steps=2",
]


def test_a_folder_run_adapts_to_photos_of_every_mode(cli, tmp_path):
    data = write_folder(tmp_path / "my classes", classes=8, per_class=3)
    run = tmp_path / "run"
    sets = [f"task.root={data}", f"task.cache={tmp_path / 'cache'}", *TINY]
    argv = ["train", "folder/maml_conv4_5w1s", "--out", run, "--no-test"]
    assert cli(*argv, *(a for s in sets for a in ("--set", s))).code == 0
    record = json.loads((run / "preprocessing.json").read_text())
    assert (record["size"], record["channels"], record["resize"]) == (28, 3, 32)
    # The record turns a stored training image into what the test transform made of it.
    stored = torch.randint(0, 256, (1, 32, 32, 3), dtype=torch.uint8)
    record_of_run = metagrad.load(run).preprocessing
    expected = dataclasses.replace(MMFEWSHOT, size=28, resize=32)
    image = Image.fromarray(stored[0].numpy())
    assert torch.equal(record_of_run.tensor(image), expected.test(stored)[0])
    # Three of the user's classes (RGB, grey, 1-bit, RGBA and palette images) as support.
    support = tmp_path / "support"
    support.mkdir()
    for name in ("class_00", "class_01", "class_02"):
        (data / name).rename(support / name)
    out = cli(
        "adapt",
        run,
        "--support",
        support,
        "--query",
        data / "class_03",
        "--out",
        tmp_path / "p.csv",
    )
    assert out.code == 0, out.err
    rows = list(csv.reader((tmp_path / "p.csv").open()))
    assert rows[0] == ["path", "predicted_class", "p_class_00", "p_class_01", "p_class_02"]
    assert len(rows) == 4 and "head prototypes" in out.out  # 3 classes, a 2-way model

"""ResNet12: MMFewShot's architecture and size, per-task and batched forwards agree, DropBlock."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from conftest import assert_rel_close
from metagrad.functional import split_state
from metagrad.models.resnet12 import DropBlock, ResNet12


def test_size_and_shapes_are_mmfewshots():
    torch.manual_seed(0)
    model = ResNet12(5)
    params = sum(p.numel() for p in model.parameters())
    assert 12.3e6 < params < 12.5e6  # "about 12.4 M"
    assert not any(m.bias is not None for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    x = torch.randn(2, 3, 84, 84)
    sizes = []
    h = x
    for stage in model.features:
        h = stage(h)
        sizes.append(tuple(h.shape[1:]))
    assert sizes == [(64, 42, 42), (160, 21, 21), (320, 10, 10), (640, 5, 5)]
    assert model(x).shape == (2, 5)
    assert model.preferred_path(105) == "loop"


def test_batched_forward_with_per_task_weights_equals_each_task_alone():
    torch.manual_seed(0)
    model = ResNet12(3, widths=(2, 3, 4, 5)).double()
    params = split_state(model).params
    tasks = 3
    x = torch.randn(tasks, 4, 3, 16, 16, dtype=torch.float64)
    per_task = {k: torch.stack([v + 0.01 * t for t in range(tasks)]) for k, v in params.items()}
    batched = functional_call(model, per_task, (x,))  # [tasks, 4, 3]
    for t in range(tasks):
        alone = functional_call(model, {k: v[t] for k, v in per_task.items()}, (x[t],))
        assert_rel_close(batched[t], alone, 1e-12, f"task {t}")


def test_dropblock_is_off_in_eval_and_at_rate_zero_and_drops_blocks_in_training():
    x = torch.ones(4, 8, 10, 10)
    block = DropBlock(0.2, block_size=3)
    assert torch.equal(block.eval()(x), x) and torch.equal(DropBlock(0.0).train()(x), x)
    torch.manual_seed(0)
    out = block.train()(x)
    dropped = (out == 0).float().mean().item()
    assert 0.1 < dropped < 0.3  # about drop_rate of the units
    assert out.mean().item() == pytest.approx(1.0, rel=1e-5)  # rescaled: same expectation
    torch.manual_seed(0)
    assert torch.equal(block(x), out)  # seeded: the same blocks
    with pytest.raises(ValueError, match="drop_rate"):
        DropBlock(1.0)
    with pytest.raises(ValueError, match="widths"):
        ResNet12(5, widths=(64, 160))


def test_a_resnet12_config_trains_and_tests_on_omniglot(tmp_path):
    from pathlib import Path

    from metagrad.config import load_config
    from metagrad.train.trainer import train

    root = Path(__file__).resolve().parents[2]
    data = root.parent / "shared" / "data" / "omniglot"
    if not (data / "images_background.npz").exists():
        pytest.skip("the Omniglot data of ../shared/data is not here")
    cfg = load_config(
        root / "configs" / "omniglot" / "maml_5w1s.toml",
        [
            f"task.root={data}",
            "task.ways=2",
            "model.name=resnet12",
            "model.in_channels=1",
            "model.widths=[4, 4, 8, 8]",
            "train.iterations=2",
            "train.meta_batch_size=2",
            "train.val_every=0",
            "eval.tasks=2",
        ],
    )
    result = train(cfg, tmp_path / "run")
    assert result.steps == 2 and result.test.accuracies.shape == (4, 2)

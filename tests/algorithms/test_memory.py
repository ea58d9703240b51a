"""The meta-gradient frees each chunk's graph before building the next one."""

from __future__ import annotations

import weakref

import pytest
import torch
import torch.nn.functional as F

from conftest import image_batch
from metagrad import MAML
from metagrad.algorithms.maml import maml_objective, meta_gradient
from metagrad.models import Conv4


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 2])
def test_a_chunks_graph_is_freed_before_the_next_chunk_is_built(first_order, chunk_size):
    # After the backward pass a graph holds no activations, but its nodes stay allocated for
    # as long as the loss is referenced: about 0.3 MB per task for the strided Conv4 with 5
    # inner steps, which made the loop's peak memory grow with the meta-batch (BENCHMARKS.md).
    maml = MAML(
        Conv4(3, filters=4, image_size=8),
        inner_lr=0.1,
        inner_steps=2,
        first_order=first_order,
        path="loop",
    )
    batch = image_batch(tasks=4, dtype=torch.float32)
    executor, inner = maml.executor_for(batch), maml.inner_loop()
    losses: list[weakref.ref] = []
    alive_at_each_chunk = []

    def objective(chunk):
        alive_at_each_chunk.append(sum(ref() is not None for ref in losses))
        out = maml_objective(executor, F.cross_entropy, maml.params, chunk, inner)
        losses.append(weakref.ref(out.loss))
        return out

    _, out = meta_gradient(objective, maml.params, batch, chunk_size)
    assert alive_at_each_chunk == [0] * (4 // chunk_size)
    assert out.loss.grad_fn is None and out.task_losses.shape == (4,)

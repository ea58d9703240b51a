"""Meta reinforcement learning: MAML-TRPO on 2D navigation and MuJoCo locomotion.

The pieces, each usable alone::

    from metagrad.rl import GaussianMLPPolicy, rollout, meta_iteration, evaluate_adaptation
    from metagrad.rl.envs import get_family, make_batched_env

    family = get_family("navigation-2d")
    env = make_batched_env("navigation-2d")
    policy = GaussianMLPPolicy(env.obs_dim, env.act_dim)
    theta = dict(policy.named_parameters())
    g = torch.Generator().manual_seed(0)
    for _ in range(iterations):
        tasks = family.sample_tasks(20, g)
        theta, stats = meta_iteration(env, policy, theta, tasks, MAMLTRPOConfig(), g)

Importing this package never imports gymnasium or MuJoCo (the ``[rl]`` extra): only the
MuJoCo environment modules do, when a MuJoCo family is first used.
"""

from metagrad.rl import baseline
from metagrad.rl.envs import FAMILIES, TaskFamily, get_family, make_batched_env, make_env
from metagrad.rl.maml_trpo import (
    MAMLTRPOConfig,
    evaluate_adaptation,
    meta_iteration,
    trpo_update,
)
from metagrad.rl.objectives import (
    Batch,
    adapt_policy,
    old_policy,
    process,
    reinforce_loss,
    surrogate_and_kl,
)
from metagrad.rl.policy import (
    GaussianMLPPolicy,
    distribution,
    entropy,
    kl_divergence,
    log_prob,
    sample,
)
from metagrad.rl.returns import discounted_returns, gae, normalize
from metagrad.rl.sampler import per_task, rollout
from metagrad.rl.trajectories import Trajectories
from metagrad.rl.trpo import conjugate_gradient, hessian_vector_product, line_search

__all__ = [
    "FAMILIES",
    "Batch",
    "GaussianMLPPolicy",
    "MAMLTRPOConfig",
    "TaskFamily",
    "Trajectories",
    "adapt_policy",
    "baseline",
    "conjugate_gradient",
    "discounted_returns",
    "distribution",
    "entropy",
    "evaluate_adaptation",
    "gae",
    "get_family",
    "hessian_vector_product",
    "kl_divergence",
    "line_search",
    "log_prob",
    "make_batched_env",
    "make_env",
    "meta_iteration",
    "normalize",
    "old_policy",
    "per_task",
    "process",
    "reinforce_loss",
    "rollout",
    "sample",
    "surrogate_and_kl",
    "trpo_update",
]

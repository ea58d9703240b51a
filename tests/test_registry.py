"""Registries: names resolve to constructors, unknown names say what was probably meant, and
every config variant has a builder (a new one is an entry, never a branch)."""

from __future__ import annotations

import pytest

from metagrad.config import ALGORITHM_CONFIGS, MODEL_CONFIGS, TASK_CONFIGS
from metagrad.models import MODELS
from metagrad.registry import Registry, UnknownName
from metagrad.train.build import LEARNER_BUILDERS, MODEL_BUILDERS, TASK_BUILDERS


def test_unknown_name_lists_the_names_and_the_closest():
    reg: Registry[int] = Registry("model")
    reg.add("conv4", 4)
    reg.add("mlp", 1)
    assert reg["conv4"] == 4 and list(reg) == ["conv4", "mlp"] and len(reg) == 2
    with pytest.raises(UnknownName) as info:
        reg["conv5"]
    assert (
        str(info.value)
        == "unknown model 'conv5': expected one of ['conv4', 'mlp']; did you mean 'conv4'?"
    )
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    with pytest.raises(UnknownName, match=r"\['conv4', 'mlp'\]$"):
        reg["resnet"]


def test_a_name_is_registered_once():
    reg: Registry[int] = Registry("algorithm")

    @reg.register("maml")
    def maml():
        return 1

    reg.add("maml", maml)  # the same entry again is fine
    with pytest.raises(ValueError, match="algorithm 'maml' is registered already"):
        reg.add("maml", lambda: 2)


def _supervised(registry, kind_of) -> set[str]:
    return {name for name, cls in registry.items() if kind_of(cls) != "rl"}


def test_every_supervised_config_variant_has_a_builder():
    assert _supervised(TASK_CONFIGS, lambda c: c.kind) == set(TASK_BUILDERS)
    assert _supervised(MODEL_CONFIGS, lambda c: "rl" if "state" in c.modalities else "") == set(
        MODEL_BUILDERS
    )
    rl_algorithms = {"maml_trpo", "pretrained_rl"}
    assert set(ALGORITHM_CONFIGS) - rl_algorithms == set(LEARNER_BUILDERS)
    assert set(MODEL_BUILDERS) == set(MODELS)  # each built-in model is buildable from a config


def test_every_rl_config_variant_has_an_environment_and_an_iteration():
    from metagrad.rl.envs import FAMILIES, get_family
    from metagrad.train.rl_build import ITERATIONS

    rl_tasks = {name for name, cls in TASK_CONFIGS.items() if cls.kind == "rl"}
    assert rl_tasks == set(FAMILIES)
    assert set(ALGORITHM_CONFIGS) - set(LEARNER_BUILDERS) == set(ITERATIONS)
    with pytest.raises(KeyError, match="did you mean 'ant-dir'"):
        get_family("ant_dir")

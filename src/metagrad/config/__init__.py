"""Typed experiment configs: one TOML file per experiment, checked against a dataclass schema.

Typical use::

    cfg = load_config("configs/sinusoid_maml.toml", ["train.outer_lr=3e-4"])
    (run_dir / "config.toml").write_text(config_to_toml(cfg))

See :mod:`metagrad.config.schema` for every section and field and how to add variants, and
:mod:`metagrad.config.overrides` for the ``--set`` rules.
"""

from metagrad.config.build import config_from_dict
from metagrad.config.checks import (
    EvalSettings,
    config_problems,
    resolve_eval,
    selection_score,
    val_metric,
)
from metagrad.config.errors import ConfigError
from metagrad.config.image_schema import IMAGE_FAMILIES, ImageTaskConfig
from metagrad.config.loader import load_config, read_toml
from metagrad.config.overrides import Override, apply_overrides, parse_override
from metagrad.config.rl_schema import (
    GaussianMLPConfig,
    MAMLTRPOAlgorithmConfig,
    PretrainedRLConfig,
    RLTaskConfig,
)
from metagrad.config.schema import (
    ALGORITHM_CONFIGS,
    MODEL_CONFIGS,
    SECTIONS,
    TASK_CONFIGS,
    AlgorithmConfig,
    Conv4Config,
    EvalConfig,
    ExperimentConfig,
    FOMAMLConfig,
    MAMLConfig,
    MeanConfig,
    MLPConfig,
    ModelConfig,
    OmniglotTaskConfig,
    PretrainedConfig,
    ReptileConfig,
    ResNet12Config,
    SinusoidTaskConfig,
    TaskConfig,
    TrainConfig,
    Variants,
)
from metagrad.config.toml_writer import config_to_dict, config_to_toml

__all__ = [
    "ALGORITHM_CONFIGS",
    "IMAGE_FAMILIES",
    "MODEL_CONFIGS",
    "SECTIONS",
    "TASK_CONFIGS",
    "AlgorithmConfig",
    "ConfigError",
    "Conv4Config",
    "EvalConfig",
    "EvalSettings",
    "ExperimentConfig",
    "FOMAMLConfig",
    "GaussianMLPConfig",
    "ImageTaskConfig",
    "MAMLConfig",
    "MAMLTRPOAlgorithmConfig",
    "MLPConfig",
    "MeanConfig",
    "ModelConfig",
    "OmniglotTaskConfig",
    "Override",
    "PretrainedConfig",
    "PretrainedRLConfig",
    "RLTaskConfig",
    "ReptileConfig",
    "ResNet12Config",
    "SinusoidTaskConfig",
    "TaskConfig",
    "TrainConfig",
    "Variants",
    "apply_overrides",
    "config_from_dict",
    "config_problems",
    "config_to_dict",
    "config_to_toml",
    "load_config",
    "parse_override",
    "read_toml",
    "resolve_eval",
    "selection_score",
    "val_metric",
]

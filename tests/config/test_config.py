"""Tests of the typed config system: schema, loading, errors, overrides, TOML round trip."""

from __future__ import annotations

import dataclasses
import math
import sys
import textwrap

import pytest

from metagrad.config import (
    ALGORITHM_CONFIGS,
    SECTIONS,
    ConfigError,
    Conv4Config,
    EvalConfig,
    ExperimentConfig,
    FOMAMLConfig,
    MAMLConfig,
    MeanConfig,
    MLPConfig,
    OmniglotTaskConfig,
    PretrainedConfig,
    ReptileConfig,
    SinusoidTaskConfig,
    TrainConfig,
    Variants,
    apply_overrides,
    config_from_dict,
    config_to_toml,
    load_config,
    parse_override,
    resolve_eval,
)
from metagrad.config.coerce import field_types, is_optional, is_supported

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SINE = """\
name = "sine"
seed = 3

[task]
family = "sinusoid"

[model]
name = "mlp"

[algorithm]
name = "maml"
inner_lr = 0.01

[train]
iterations = 100
meta_batch_size = 4
"""

OMNI = """\
name = "omni"

[task]
family = "omniglot"
ways = 5

[model]
name = "conv4"

[algorithm]
name = "maml"
inner_lr = 0.4

[train]
iterations = 10
meta_batch_size = 2
"""


def write(tmp_path, text: str, name: str = "x.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_text(tmp_path, text: str, overrides=()) -> ExperimentConfig:
    return load_config(write(tmp_path, text), overrides)


def error_of(tmp_path, text: str, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, overrides)
    return str(info.value)


# ------------------------------------------------------------------------------- schema
def all_variant_classes():
    for spec in SECTIONS.values():
        yield from spec.registry.values() if isinstance(spec, Variants) else [spec]


@pytest.mark.parametrize("cls", list(all_variant_classes()), ids=lambda c: c.__name__)
def test_schema_invariants_hold_for_every_registered_class(cls):
    assert dataclasses.is_dataclass(cls)
    assert cls.__dataclass_params__.frozen, f"{cls.__name__} must be frozen"
    for f in dataclasses.fields(cls):
        tp = field_types(cls)[f.name]
        assert is_supported(tp), f"{cls.__name__}.{f.name}: unsupported type {tp}"
        if is_optional(tp):  # TOML has no null: omitting the key must mean None
            assert f.default is None, f"{cls.__name__}.{f.name} is optional but not None by default"


def test_registries_are_keyed_by_each_class_tag():
    for section, spec in SECTIONS.items():
        if isinstance(spec, Variants):
            for tag, cls in spec.registry.items():
                assert getattr(cls, spec.tag) == tag, (section, tag)
                assert spec.tag not in {f.name for f in dataclasses.fields(cls)}


def test_minimal_file_gets_schema_defaults(tmp_path):
    cfg = load_text(tmp_path, SINE)
    assert cfg.name == "sine" and cfg.seed == 3
    assert cfg.task == SinusoidTaskConfig()
    assert cfg.task.phase == (0.0, math.pi)
    assert cfg.model == MLPConfig() and cfg.model.hidden == (40, 40)
    assert cfg.algorithm == MAMLConfig(inner_lr=0.01)
    assert cfg.train == TrainConfig(iterations=100, meta_batch_size=4)
    assert cfg.eval == EvalConfig()
    assert cfg.algorithm.name == "maml" and cfg.task.family == "sinusoid"


def test_omniglot_conv4_defaults(tmp_path):
    cfg = load_text(tmp_path, OMNI)
    assert cfg.task == OmniglotTaskConfig(ways=5)
    assert (cfg.task.split, cfg.task.shots, cfg.task.queries) == ("maml", 1, 15)
    assert cfg.model == Conv4Config()
    assert (cfg.model.pool, cfg.model.norm, cfg.model.filters) == ("stride", "transductive", 64)


def test_config_is_frozen_and_hashable(tmp_path):
    cfg = load_text(tmp_path, SINE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 4  # type: ignore[misc]
    assert hash(cfg) == hash(load_text(tmp_path, SINE))


# --------------------------------------------------------------------------- round trip
def rich_configs() -> list[ExperimentConfig]:
    train = TrainConfig(
        iterations=7, meta_batch_size=3, outer_lr=1e-5, grad_clip=10.0, threads=2, device="cpu"
    )
    return [
        ExperimentConfig(
            name='odd "name" ünïcödé',
            seed=123,
            task=SinusoidTaskConfig(shots=5, amplitude=(0.5, 2.5), phase=(0.0, math.pi / 3)),
            model=MLPConfig(hidden=(64, 32, 16), activation="tanh"),
            algorithm=MAMLConfig(inner_lr=(0.1, 0.05, 1 / 3), inner_steps=3, chunk_size=8),
            train=train,
            eval=EvalConfig(inner_steps=2, inner_lr=0.123456789, shots=20, transductive=True),
        ),
        ExperimentConfig(
            name="omni",
            task=OmniglotTaskConfig(
                ways=20, split="vinyals", download=True, root='C:\\"o"\t\n\x7f'
            ),
            model=Conv4Config(pool="max", norm="running", filters=32),
            algorithm=FOMAMLConfig(inner_lr=0.4, inner_steps=5, path="vectorized"),
            train=TrainConfig(iterations=1, meta_batch_size=1, optimizer="sgd"),
            eval=EvalConfig(inner_lr=(0.1, 0.2, 0.3), inner_steps=3, transductive=False),
        ),
        ExperimentConfig(
            name="reptile",
            task=OmniglotTaskConfig(),
            model=MLPConfig(norm="transductive"),
            algorithm=ReptileConfig(inner_lr=1e-3, inner_optimizer="adam", inner_batch_size=10),
            train=TrainConfig(iterations=1, meta_batch_size=1, outer_lr_schedule="linear"),
        ),
        ExperimentConfig(
            name="pre",
            task=SinusoidTaskConfig(),
            model=MLPConfig(),
            algorithm=PretrainedConfig(inner_lr=0.02),
            train=TrainConfig(iterations=1, meta_batch_size=1),
            eval=EvalConfig(inner_steps=10),
        ),
        ExperimentConfig(
            name="mean",
            task=SinusoidTaskConfig(),
            model=MLPConfig(),
            algorithm=MeanConfig(),
            train=TrainConfig(iterations=1, meta_batch_size=1),
        ),
    ]


@pytest.mark.parametrize("cfg", rich_configs(), ids=lambda c: c.algorithm.name)
def test_toml_round_trip_is_exact(cfg, tmp_path):
    text = config_to_toml(cfg)
    assert config_from_dict(tomllib.loads(text)) == cfg
    path = tmp_path / "config.toml"
    path.write_text(config_to_toml(cfg, header="written by a test\nsecond line"), "utf-8")
    assert load_config(path) == cfg


def test_toml_output_is_flat_with_sections_and_tags_first():
    text = config_to_toml(rich_configs()[1])
    sections = [line for line in text.splitlines() if line.startswith("[")]
    assert sections == ["[task]", "[model]", "[algorithm]", "[train]", "[eval]"]
    assert text.split("[task]\n")[1].startswith('family = "omniglot"\n')
    assert "chunk_size" not in text.split("[eval]")[0]  # None is written by leaving the key out


# ------------------------------------------------------------------------- unknown keys
def test_unknown_key_in_section_suggests_close_match(tmp_path):
    msg = error_of(tmp_path, SINE.replace("iterations", "iteratons"))
    assert msg == (
        f"unknown key 'train.iteratons' in {tmp_path / 'x.toml'}; did you mean 'train.iterations'?"
    )


def test_unknown_key_in_section_without_close_match_lists_valid_keys(tmp_path):
    msg = error_of(tmp_path, SINE + "zzzzzz = 1\n")
    assert "unknown key 'train.zzzzzz'" in msg
    assert "valid keys are: train.iterations, train.meta_batch_size, train.outer_lr" in msg


def test_unknown_top_level_key_suggests_close_match(tmp_path):
    msg = error_of(tmp_path, "nmae = 'x'\n" + SINE)
    assert "unknown key 'nmae'" in msg and "did you mean 'name'?" in msg


def test_unknown_top_level_key_without_match_lists_keys(tmp_path):
    msg = error_of(tmp_path, "qqqqqqq = 1\n" + SINE)
    assert "valid keys are: name, seed, task, model, algorithm, train, eval" in msg


def test_misspelt_section_suggests_the_section(tmp_path):
    msg = error_of(tmp_path, SINE.replace("[train]", "[trian]"))
    assert "unknown key 'trian'" in msg and "did you mean 'train'?" in msg


def test_key_of_another_variant_names_that_variant(tmp_path):
    msg = error_of(tmp_path, SINE.replace('family = "sinusoid"', 'family = "sinusoid"\nways = 5'))
    assert "unknown key 'task.ways'" in msg
    assert "task 'sinusoid' has no field 'ways', only task 'omniglot'" in msg


# ---------------------------------------------------------------------------- bad types
@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("iterations = 100", 'iterations = "abc"', "train.iterations: expected int, got str 'abc'"),
        ("iterations = 100", "iterations = 1e4", "train.iterations: expected int, got float"),
        ("iterations = 100", "iterations = true", "train.iterations: expected int, got bool"),
        ("inner_lr = 0.01", "inner_lr = true", "algorithm.inner_lr: expected float or list of"),
        ("inner_lr = 0.01", 'inner_lr = [0.1, "a"]', "expected float or list of floats, got list"),
        ('name = "mlp"', 'name = "mlp"\nhidden = [40, "a"]', "model.hidden[1]: expected int"),
        ('family = "sinusoid"', 'family = "sinusoid"\nx_range = [1.0]', "expected list of 2"),
        ('name = "mlp"', 'name = "mlp"\nactivation = "elu"', "expected one of 'relu', 'tanh'"),
        ('name = "sine"', "name = 5", "name: expected str, got int 5"),
        ("meta_batch_size = 4", "meta_batch_size = 4\ngrad_clip = [1]", "train.grad_clip"),
    ],
)
def test_wrong_type_names_key_expected_and_given(tmp_path, old, new, expected):
    assert old in SINE
    assert expected in error_of(tmp_path, SINE.replace(old, new))


def test_section_that_is_not_a_table(tmp_path):
    text = "train = 5\n" + SINE.split("[train]")[0]
    assert error_of(tmp_path, text).startswith("train in ")
    assert "expected a table [train] of keys, got int 5" in error_of(tmp_path, text)


def test_int_is_accepted_where_float_is_expected(tmp_path):
    cfg = load_text(tmp_path, SINE.replace("inner_lr = 0.01", "inner_lr = 1"))
    assert cfg.algorithm.inner_lr == 1.0 and isinstance(cfg.algorithm.inner_lr, float)


def test_unknown_variant_lists_choices(tmp_path):
    msg = error_of(tmp_path, SINE.replace('name = "mlp"', 'name = "conv5"'))
    assert msg.startswith("model.name 'conv5' in ")
    assert msg.endswith("expected one of conv4, gaussian_mlp, mlp, resnet12; did you mean 'conv4'?")
    msg = error_of(tmp_path, SINE.replace('"sinusoid"', '"xyz"'))
    assert "task.family 'xyz'" in msg and "navigation-2d, omniglot, sinusoid" in msg


def test_bad_toml_names_file_line_and_column(tmp_path):
    path = write(tmp_path, SINE.replace("iterations = 100", "iterations 100"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    line = SINE.splitlines().index("iterations = 100") + 1
    assert msg.startswith(f"{path}:{line}:")
    assert "invalid TOML" in msg and "iterations 100" in msg and "^" in msg


def test_missing_file_and_non_utf8(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.toml"):
        load_config(tmp_path / "nope.toml")
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


# ----------------------------------------------------------------------------- required
@pytest.mark.parametrize(
    ("drop", "expected"),
    [
        ('name = "sine"\n', "missing required key 'name'"),
        ('family = "sinusoid"\n', "missing required key 'task.family'"),
        ("inner_lr = 0.01\n", "missing required key 'algorithm.inner_lr'"),
        ("iterations = 100\n", "missing required key 'train.iterations'"),
        ('[model]\nname = "mlp"\n', "missing required section [model]"),
    ],
)
def test_missing_required_key_is_named(tmp_path, drop, expected):
    assert drop in SINE
    assert expected in error_of(tmp_path, SINE.replace(drop, ""))


def test_missing_tag_lists_the_variants(tmp_path):
    msg = error_of(tmp_path, SINE.replace('name = "maml"\n', ""))
    assert "missing required key 'algorithm.name'" in msg
    assert "anil, boil, fomaml, maml, maml_trpo, mamlpp, mean, metasgd, pretrained" in msg


# ---------------------------------------------------------------------------- semantics
@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("iterations = 100", "iterations = 0", "train.iterations: must be >= 1, got 0"),
        ("inner_lr = 0.01", "inner_lr = -0.1", "algorithm.inner_lr: must be a finite number > 0"),
        ("inner_lr = 0.01", "inner_lr = [0.1, 0.2]", "algorithm.inner_lr: lists 2 per-step"),
        ('"sinusoid"', '"sinusoid"\nx_range = [1.0, -1.0]', "task.x_range: must be [low, high]"),
        ('"mlp"', '"mlp"\nhidden = []', "model.hidden: must be a non-empty list"),
        ('"mlp"', '"conv4"', "model 'conv4' takes image inputs, but task family 'sinusoid'"),
        ('"maml"', '"fomaml"\nfirst_order = false', "algorithm.first_order: is always true"),
        ("meta_batch_size = 4", 'meta_batch_size = 4\ndevice = "gpu"', "train.device: must be"),
        ('name = "sine"', 'name = "a/b"', "name: must be a non-empty name without slashes"),
        ('name = "sine"', 'name = "a\\nb"', "or control characters, got 'a\\nb'"),
        ("seed = 3", "seed = -1", "seed: must be >= 0"),
    ],
)
def test_semantic_checks(tmp_path, old, new, expected):
    assert old in SINE
    msg = error_of(tmp_path, SINE.replace(old, new, 1))
    assert msg.startswith(f"invalid config in {tmp_path / 'x.toml'}: ")
    assert "\n" not in msg  # one line (issue 14)
    assert expected in msg


def test_semantic_checks_on_omniglot(tmp_path):
    assert "task.ways: must be >= 2, got 1" in error_of(
        tmp_path, OMNI.replace("ways = 5", "ways = 1")
    )
    msg = error_of(tmp_path, OMNI.replace('"maml"\ninner_lr = 0.4', '"mean"'))
    assert "'mean' works only on regression tasks" in msg
    # Non-transductive evaluation with batch-statistics BatchNorm is Reptile's protocol (each
    # query example normalised together with the support set only), so it is accepted.
    path = tmp_path / "nt.toml"
    path.write_text(OMNI + "\n[eval]\ntransductive = false\n")
    assert load_config(path).eval.transductive is False


def test_semantic_problems_are_all_listed_at_once(tmp_path):
    msg = error_of(tmp_path, SINE.replace("100", "0").replace("= 4", "= 0"))
    assert "train.iterations" in msg and "train.meta_batch_size" in msg


def test_eval_checks_and_fallbacks(tmp_path):
    text = SINE.replace('"maml"\ninner_lr = 0.01', '"pretrained"\ninner_lr = 0.01')
    assert "eval.inner_steps: must be set for algorithm 'pretrained'" in error_of(tmp_path, text)
    cfg = load_text(tmp_path, text + "\n[eval]\ninner_steps = 10\n")
    assert resolve_eval(cfg) == resolve_eval(cfg)  # pure
    assert (resolve_eval(cfg).inner_steps, resolve_eval(cfg).inner_lr) == (10, 0.01)
    assert (resolve_eval(cfg).shots, resolve_eval(cfg).queries) == (10, 10)
    lists = SINE.replace("inner_lr = 0.01", "inner_lr = [0.1, 0.2]\ninner_steps = 2")
    msg = error_of(tmp_path, lists + "\n[eval]\ninner_steps = 3\n")
    assert "eval.inner_lr: test-time adaptation runs 3 step(s) but algorithm.inner_lr" in msg
    cfg = load_text(tmp_path, lists + "\n[eval]\ninner_steps = 3\ninner_lr = 0.5\nshots = 5\n")
    assert resolve_eval(cfg).inner_lr == 0.5 and resolve_eval(cfg).shots == 5
    mean = load_text(tmp_path, SINE.replace('"maml"\ninner_lr = 0.01', '"mean"'))
    assert (resolve_eval(mean).inner_steps, resolve_eval(mean).inner_lr) == (0, None)


# ---------------------------------------------------------------------------- overrides
def test_parse_override():
    o = parse_override("train.outer_lr=3e-4")
    assert (o.key, o.value, o.text) == ("train.outer_lr", 3e-4, "3e-4")
    assert parse_override("model.pool=max").value == "max"
    assert parse_override("algorithm.inner_lr=[0.1,0.05]").value == [0.1, 0.05]
    assert parse_override(" name = my run ").value == "my run"
    for bad in ["train.iterations", "=3", "train..x=1", "1abc=2", "a b=1"]:
        with pytest.raises(ConfigError, match=r"bad override .*expected KEY=VALUE"):
            parse_override(bad)


def test_overrides_are_typed_against_the_schema(tmp_path):
    cfg = load_text(
        tmp_path,
        SINE,
        [
            "train.outer_lr=3e-4",
            "algorithm.inner_lr=[0.1,0.05]",
            "algorithm.inner_steps=2",
            "name=2024",
            "seed=7",
            "model.hidden=[8]",
            "train.grad_clip=.5",
        ],
    )
    assert cfg.train.outer_lr == 3e-4 and cfg.algorithm.inner_lr == (0.1, 0.05)
    assert cfg.name == "2024" and cfg.seed == 7 and cfg.model.hidden == (8,)
    assert cfg.train.grad_clip == 0.5
    assert load_text(tmp_path, OMNI, ["model.pool=max"]).model.pool == "max"


def test_override_none_resets_an_optional_key(tmp_path):
    text = SINE.replace("meta_batch_size = 4", "meta_batch_size = 4\ngrad_clip = 1.0")
    assert load_text(tmp_path, text).train.grad_clip == 1.0
    assert load_text(tmp_path, text, ["train.grad_clip=none"]).train.grad_clip is None


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.iterations=abc", "train.iterations: expected int, got str 'abc' (from --set"),
        ("train.iteratons=5", "unknown key 'train.iteratons' in --set train.iteratons=5; did you"),
        ("train.zzzzzz=5", "valid keys are: train.iterations"),
        ("model.pool=max", "model 'mlp' has no field 'pool', only model 'conv4'"),
        ("model.name=conv5", "model.name 'conv5' (from --set model.name=conv5): expected one of"),
        ("train=5", "'train' is a section; set its keys one at a time"),
        ("train.a.b=1", "unknown key 'train.a.b'"),
        ("nmae=x", "did you mean 'name'?"),
        ("seed=none", "seed: expected int, got str 'none'"),
        ("model.activation=elu", "expected one of 'relu', 'tanh', 'gelu', 'silu', got str 'elu'"),
    ],
)
def test_override_errors(tmp_path, override, expected):
    assert expected in error_of(tmp_path, SINE, [override])


def test_switching_variant_drops_defaults_and_keeps_the_rest(tmp_path):
    text = SINE.replace('"sinusoid"', '"sinusoid"\nshots = 10\nqueries = 7')
    cfg = load_text(tmp_path, text, ["task.family=omniglot", "model.name=conv4"])
    # shots = 10 is sinusoid's default: dropped, omniglot's default 1 applies; queries = 7 kept
    assert cfg.task == OmniglotTaskConfig(shots=1, queries=7)
    assert cfg.model == Conv4Config()


def test_switching_variant_with_a_set_key_the_new_one_lacks_is_an_error(tmp_path):
    text = SINE.replace('"sinusoid"', '"sinusoid"\namplitude = [1.0, 2.0]')
    msg = error_of(tmp_path, text, ["task.family=omniglot", "model.name=conv4"])
    assert msg.startswith("--set task.family=omniglot: ")
    assert "sets task.amplitude = [1.0, 2.0] for task 'sinusoid', but task 'omniglot' has" in msg
    default_only = SINE.replace('"sinusoid"', '"sinusoid"\namplitude = [0.1, 5.0]')
    assert load_text(tmp_path, default_only, ["task.family=omniglot", "model.name=conv4"])


def test_variant_switch_applies_before_other_overrides(tmp_path):
    a = load_text(tmp_path, SINE, ["task.ways=10", "task.family=omniglot", "model.name=conv4"])
    b = load_text(tmp_path, SINE, ["task.family=omniglot", "model.name=conv4", "task.ways=10"])
    assert a == b and a.task.ways == 10
    cfg = load_text(tmp_path, SINE, ["algorithm.name=fomaml"])
    assert cfg.algorithm == FOMAMLConfig(inner_lr=0.01) and cfg.algorithm.first_order
    cfg = load_text(tmp_path, SINE, ["algorithm.name=reptile", "algorithm.inner_optimizer=adam"])
    assert cfg.algorithm == ReptileConfig(inner_lr=0.01, inner_optimizer="adam")
    supervised = {"maml", "fomaml", "reptile", "pretrained", "mean"}
    supervised |= {"anil", "boil", "metasgd", "mamlpp"}  # the MAML family
    assert set(ALGORITHM_CONFIGS) == supervised | {"maml_trpo", "pretrained_rl"}


def test_later_override_wins_and_input_is_not_modified():
    data = tomllib.loads(SINE)
    before = repr(data)
    out = apply_overrides(data, ["train.iterations=5", "train.iterations=6", "eval.tasks=9"])
    assert out["train"]["iterations"] == 6 and out["eval"] == {"tasks": 9}
    assert repr(data) == before
    assert config_from_dict(out).train.iterations == 6

"""Step options: one typed pipeline parameter per step, generated from its config dataclass."""

from __future__ import annotations

import dataclasses

import pytest

from components.common.config import ConfigError
from components.common.options import StepOptions
from components.evaluate.config import EVALUATE_OPTIONS, EvaluateConfig
from components.extract.config import EXTRACT_OPTIONS, ExtractConfig
from components.train.config import TRAIN_OPTIONS, TrainConfig

ALL = (TRAIN_OPTIONS, EXTRACT_OPTIONS, EVALUATE_OPTIONS)


@pytest.mark.parametrize("step", ALL, ids=lambda s: s.parameter)
def test_every_field_but_the_pipelines_is_an_option_with_the_dataclass_default(step: StepOptions) -> None:
    fields = {f.name: f for f in dataclasses.fields(step.config_cls)}
    plumbing = set(step.pipeline_fields) | {n for n in fields if n.startswith("mlflow_")}
    assert set(step.names) == set(fields) - plumbing
    for name, value in step.defaults().items():
        default = fields[name].default
        assert value == (list(default) if isinstance(default, tuple) else default), name


def test_train_options_reach_all_training_settings() -> None:
    names = set(TRAIN_OPTIONS.names)
    # What the README's results need, unreachable from the pipeline before.
    assert {"optimizer", "lr", "warmup_epochs", "eval_every", "color_jitter", "anchor_init"} <= names
    assert not names & {"dataset", "output", "split", "mlflow_tracking_uri", "mlflow_parent_run_id"}


def test_parse_types_values_as_the_cli_flags_do() -> None:
    parsed = TRAIN_OPTIONS.parse(["lr=0.01", "steps=300", "augment=false", "optimizer=sgd", "weights="])
    assert parsed == {"lr": 0.01, "steps": 300, "augment": False, "optimizer": "sgd", "weights": ""}
    assert type(parsed["steps"]) is int and type(parsed["lr"]) is float


def test_coerce_undoes_protobuf_struct_doubles() -> None:
    # A dict parameter reaches a pod as a protobuf Struct: every number a double.
    coerced = TRAIN_OPTIONS.coerce({"steps": 300.0, "lr": 1.0, "batch_size": 32.0, "augment": True})
    assert coerced == {"steps": 300, "lr": 1.0, "batch_size": 32, "augment": True}
    assert type(coerced["steps"]) is int and type(coerced["lr"]) is float


def test_build_fills_the_pipeline_fields_and_defaults_the_rest() -> None:
    config = TRAIN_OPTIONS.build({"lr": 0.02, "steps": 7.0}, dataset="d", output="o", split=3)
    assert config == TrainConfig(dataset="d", output="o", split=3, lr=0.02, steps=7)
    extract = EXTRACT_OPTIONS.build({"pooling": "mean"}, dataset="d", model="m", output="f.parquet")
    assert extract == ExtractConfig(dataset="d", model="m", output="f.parquet", pooling="mean")
    evaluate = EVALUATE_OPTIONS.build({"max_rank": 50.0}, dataset="d", features="f", output="o")
    assert evaluate == EvaluateConfig(dataset="d", features="f", output="o", max_rank=50)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lr": -1}, r"train_options\.lr: must be >= 0"),
        ({"optimizer": "adam"}, r"train_options\.optimizer: .*invalid choice: 'adam'"),
        ({"steps": 1.5}, r"train_options\.steps: .*invalid int value: '1\.5'"),
        ({"stepz": 10}, r"train_options\.stepz: unknown option; the options are: objective, "),
        ({"dataset": "s3://x"}, r"train_options\.dataset: set by the pipeline, not an option"),
        ({"mlflow_tracking_uri": "x"}, r"train_options\.mlflow_tracking_uri: set by the pipeline"),
        ({"backbone": "mobilenet_v1", "weights": "imagenet"}, r"train_options\.weights: "),
        ({"augment": "maybe"}, r"train_options\.augment: .*expected a boolean"),
    ],
)
def test_a_bad_option_fails_naming_the_parameter_and_field(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TRAIN_OPTIONS.validate(values)


def test_validate_returns_every_effective_value() -> None:
    effective = TRAIN_OPTIONS.validate({"lr": 0.01})
    assert effective == {**TRAIN_OPTIONS.defaults(), "lr": 0.01}
    assert EVALUATE_OPTIONS.validate({}) == EVALUATE_OPTIONS.defaults()


def test_parse_refuses_a_pair_without_equals() -> None:
    with pytest.raises(ConfigError, match=r"train_options: expected FIELD=VALUE, got 'lr'"):
        TRAIN_OPTIONS.parse(["lr"])


def test_a_non_object_is_refused() -> None:
    with pytest.raises(ConfigError, match="train_options: expected a JSON object, got list"):
        TRAIN_OPTIONS.coerce([["lr", 1]])  # type: ignore[arg-type]


def test_pipeline_fields_must_exist_and_options_need_defaults() -> None:
    with pytest.raises(TypeError, match="no field"):
        StepOptions("x", TrainConfig, frozenset({"no_such_field"}))
    # TrainConfig.dataset has no default: it can only be a pipeline field.
    with pytest.raises(TypeError, match="needs a default"):
        StepOptions("x", TrainConfig, frozenset({"output"})).defaults()

"""TrainConfig: validation names the field, per-dataset defaults, CLI round trip, no torch import."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from components.common import config as config_lib
from components.common.config import ConfigError
from components.train.config import (
    TrainConfig,
    dataset_key,
    resolve_lr,
    resolve_optimizer,
    resolve_steps,
    resolve_warmup_epochs,
)

BASE = {"dataset": "/data/ds", "output": "/runs/r1"}


def test_defaults_follow_the_reference_release() -> None:
    config = TrainConfig(**BASE)
    assert (config.image_height, config.image_width, config.batch_size) == (224, 112, 64)
    assert (config.weight_decay, config.clip_value, config.ema_decay) == (4e-5, 2.0, 0.9999)
    assert (config.margin, config.eta, config.objective) == (0.5, 0.5, "dal")
    assert (config.backbone, config.weights) == ("mobilenet_v2", "imagenet")  # bundled ImageNet init


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dataset", " "),
        ("output", ""),
        ("split", -1),
        ("backbone", "vgg16"),
        ("backbone", "timm:"),
        ("image_height", 8),
        ("image_width", 4096),
        ("batch_size", 1),
        ("steps", -5),
        ("lr", -0.1),
        ("warmup_epochs", -0.5),
        ("margin", 0.0),
        ("anchor_init_frames", -1),
        ("eta", 0.0),
        ("eta", 1.5),
        ("weight_decay", -1e-4),
        ("clip_value", -1.0),
        ("ema_decay", 1.0),
        ("color_jitter", -0.1),
        ("color_jitter", 1.5),
        ("checkpoint_every", 0),
        ("keep_checkpoints", 0),
        ("seed", -1),
        ("workers", -1),
        ("shuffle_buffer_row_groups", 0),
        ("log_every", 0),
    ],
)
def test_invalid_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}: "):
        TrainConfig(**{**BASE, field: value})


def test_imagenet_weights_only_where_bundled() -> None:
    with pytest.raises(
        ConfigError, match=r"^weights: no ImageNet weights are bundled for backbone 'mobilenet_v1'"
    ):
        TrainConfig(**BASE, backbone="mobilenet_v1")  # weights default: imagenet
    TrainConfig(**BASE, backbone="mobilenet_v1", weights="s3://models/mobilenet_v1_imagenet.pt")
    TrainConfig(**BASE, backbone="resnet50", weights="")  # random init


def test_valid_edge_values() -> None:
    TrainConfig(
        **BASE, backbone="timm:resnet18", weights="", warmup_epochs=0, clip_value=0, ema_decay=0.0, eta=1.0
    )


def test_rank_batch_size_must_split_evenly() -> None:
    config = TrainConfig(**BASE, batch_size=64)
    assert config.rank_batch_size(4) == 16
    with pytest.raises(ConfigError, match="batch_size: 64 does not split evenly over 3 ranks"):
        config.rank_batch_size(3)


@pytest.mark.parametrize(
    ("name", "optimizer", "lr", "steps", "warmup"),
    [
        ("mars", "sgd", 0.01, 100_000, 1.0),
        ("MARS", "sgd", 0.01, 100_000, 1.0),
        ("prid2011", "rmsprop", 0.045, 20_000, 2.0),
        ("iLIDS-VID", "rmsprop", 0.045, 20_000, 2.0),
        ("synthetic", "rmsprop", 0.045, 20_000, 2.0),
    ],
)
def test_dataset_defaults(name: str, optimizer: str, lr: float, steps: int, warmup: float) -> None:
    config = TrainConfig(**BASE)
    chosen = resolve_optimizer(config, name)
    assert (chosen, resolve_lr(config, chosen), resolve_steps(config, name)) == (optimizer, lr, steps)
    assert resolve_warmup_epochs(config, name) == warmup


def test_explicit_values_win_over_dataset_defaults() -> None:
    config = TrainConfig(**BASE, optimizer="rmsprop", lr=0.2, steps=7, warmup_epochs=0.5)
    assert resolve_optimizer(config, "mars") == "rmsprop"
    assert resolve_lr(config, "rmsprop") == 0.2
    assert resolve_steps(config, "mars") == 7
    assert resolve_warmup_epochs(config, "mars") == 0.5
    assert dataset_key("PRID-2011") == "prid2011"


def test_cli_flags_round_trip() -> None:
    parser = argparse.ArgumentParser()
    config_lib.add_arguments(parser, TrainConfig)
    args = parser.parse_args(
        [
            "--dataset",
            "s3://b/ds",
            "--output",
            "s3://b/run",
            "--objective",
            "supervised",
            "--augment",
            "false",
        ]
        + ["--warmup-epochs", "0.5", "--sync-batchnorm", "off", "--image-height", "64", "--image-width", "32"]
    )
    config = config_lib.from_args(TrainConfig, args)
    assert config.objective == "supervised" and config.augment is False and config.warmup_epochs == 0.5
    assert config_lib.from_dict(TrainConfig, config_lib.to_dict(config)) == config
    with pytest.raises(SystemExit):
        parser.parse_args(["--dataset", "d", "--output", "o", "--optimizer", "adam"])


def test_config_module_does_not_import_torch() -> None:
    code = "import sys, components.train.config; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

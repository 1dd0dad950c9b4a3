"""How a pipeline task trains a split: its config, the world-size check, the TrainJob guard."""

from __future__ import annotations

import pytest

from components.common.config import ConfigError
from components.train.launch import check_world_size, split_config, train_on_trainjob


def _config(**options):
    return split_config(
        dataset="s3://b/datasets/mars",
        split=2.0,  # ParallelFor items arrive as floats
        options=options,
        storage_root="s3://b/dal",
        run_key="job-1",
        mlflow_tracking_uri="",
        mlflow_experiment="dal",
        mlflow_parent_run_id="parent",
    )


def test_every_attempt_of_a_split_trains_into_the_same_run_directory() -> None:
    config = _config(objective="supervised", steps=10.0)
    assert config.output == "s3://b/dal/runs/job-1/split-2/supervised"
    assert config == _config(objective="supervised", steps=10)
    assert config.split == 2 and config.mlflow_run_name == "train-split2"
    assert config.mlflow_parent_run_id == "parent"


@pytest.mark.parametrize(
    ("nodes", "gpus", "error"),
    [
        (1, 1, None),
        (4, 8, None),  # 64 frames over 32 ranks
        (2, 0, None),  # CPU nodes: one process each
        (3, 1, "batch_size: 64 does not split evenly over 3 ranks"),
        (0, 1, "nodes: must be >= 1"),
        (1, -1, "gpus: must be >= 0"),
    ],
)
def test_the_global_batch_must_split_over_the_ranks(nodes: int, gpus: int, error: str | None) -> None:
    if error is None:
        check_world_size(_config(), nodes=nodes, gpus=gpus)
    else:
        with pytest.raises(ConfigError, match=error):
            check_world_size(_config(), nodes=nodes, gpus=gpus)


def test_a_tracking_uri_with_credentials_never_reaches_a_trainjob() -> None:
    config = _config()
    leaky = type(config)(**{**config.__dict__, "mlflow_tracking_uri": "https://user:tok@mlflow.example"})
    # Refused before any Kubernetes call (there is no cluster here: reaching one would fail otherwise).
    with pytest.raises(ConfigError, match="mlflow_tracking_uri: carries credentials"):
        train_on_trainjob(leaky, nodes=2, gpus_per_node=1, image="img", options={}, run_key="job-1")

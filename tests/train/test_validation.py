"""Periodic evaluation while training (components/train/validation.py and its hook in the loop).

It must score exactly like ``dal extract`` + ``dal evaluate`` (it reuses their pooling, protocol and
metrics), subsample frames as documented, log ``eval_*`` per step, and under DDP evaluate on rank 0
alone while the other ranks wait.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from components.common.config import ConfigError
from components.common.dataset import Dataset
from components.evaluate.config import EvaluateConfig
from components.evaluate.metrics import METRIC_KEYS
from components.evaluate.protocols import build_eval_set
from components.evaluate.run import run as evaluate_run
from components.extract.config import ExtractConfig
from components.extract.run import run as extract_run
from components.model.artifact import ModelInfo, save_model
from components.model.backbones import build_backbone
from components.model.tracklet_features import spaced_positions
from components.train.config import TrainConfig
from components.train.run import run
from components.train.validation import Validator
from tests.train.test_support import Spec, one_thread, tiny_config, write_dataset

pytestmark = pytest.mark.usefixtures(one_thread.__name__)
BACKBONE = "timm:test_efficientnet"
# Named "mars": the MARS protocol (camera-0 queries against the whole test set) applies.
SPEC = Spec(
    persons=4, test_persons=4, cameras=2, frames=6, row_group_rows=16, height=32, width=16, name="mars"
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("validation") / "ds")
    write_dataset(root, SPEC)
    return root


@pytest.fixture(autouse=True)
def no_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_spaced_positions() -> None:
    assert spaced_positions(5, 0).tolist() == [0, 1, 2, 3, 4]
    assert spaced_positions(3, 8).tolist() == [0, 1, 2]
    assert spaced_positions(10, 2).tolist() == [0, 9]
    picked = spaced_positions(100, 8)
    assert len(picked) == 8 and picked[0] == 0 and picked[-1] == 99 and np.all(np.diff(picked) >= 13)


def test_scores_exactly_like_extract_and_evaluate(dataset: str, tmp_path) -> None:
    torch.manual_seed(0)
    model = build_backbone(BACKBONE).eval()
    uri = str(tmp_path / "model.pt")
    save_model(
        uri,
        model,
        ModelInfo(backbone=BACKBONE, feature_dim=model.feature_dim, image_height=32, image_width=16),
    )
    features = str(tmp_path / "features.parquet")
    extract_run(ExtractConfig(dataset=dataset, model=uri, output=features, device="cpu", progress=False))
    expected = evaluate_run(
        EvaluateConfig(
            dataset=dataset, features=features, output=str(tmp_path / "eval"), num_ranklist_queries=0
        )
    )["metrics"]

    validator = _validator(dataset, 0)
    assert validator.frames.num_frames == 4 * 2 * 6  # every frame of the test tracklets
    got = validator(model)
    for key in METRIC_KEYS:
        assert got[f"eval_{key}"] == pytest.approx(expected[key], abs=1e-6), key
    assert got["eval_seconds"] >= 0 and not model.training


def _validator(root: str, max_frames: int) -> Validator:
    opened = Dataset.open(root)
    eval_set = build_eval_set(opened.name, opened.tracklets(), opened.splits(), split=0)
    return Validator(opened, eval_set, (32, 16), max_frames, torch.device("cpu"))


def test_frames_are_subsampled_and_the_model_mode_is_kept(dataset: str) -> None:
    validator = _validator(dataset, 2)
    assert validator.frames.num_frames == 4 * 2 * 2
    assert np.bincount(validator.frames.rows.numpy()).tolist() == [2] * 8
    model = build_backbone(BACKBONE).train()
    metrics = validator(model)
    assert model.training  # restored after evaluating in eval mode
    assert all(0.0 <= metrics[f"eval_{k}"] <= 1.0 for k in METRIC_KEYS)


def test_training_evaluates_every_n_steps_and_at_the_end(dataset: str, tmp_path) -> None:
    summary = run(tiny_config(dataset, str(tmp_path / "run"), backbone=BACKBONE, steps=7, eval_every=3))
    history = summary.eval_history
    assert [h["step"] for h in history] == [0, 3, 6, 7]
    for entry in history:
        assert all(0.0 <= entry[f"eval_{k}"] <= 1.0 for k in METRIC_KEYS)
    # DAL: the association's quality at the same step, for the curves (none before the first step)
    assert "association_precision" not in history[0]
    for entry in history[1:]:
        assert 0.0 <= entry["association_precision"] <= 1.0 and 0.0 <= entry["consistent_tracklets"] <= 1.0
    json.dumps(summary.to_json())  # the CLI prints it
    off = run(tiny_config(dataset, str(tmp_path / "off"), backbone=BACKBONE, steps=2))
    assert off.eval_history == []


def test_new_fields_are_validated() -> None:
    with pytest.raises(ConfigError, match="^eval_every:"):
        TrainConfig(dataset="d", output="o", eval_every=-1)
    with pytest.raises(ConfigError, match="^eval_max_frames:"):
        TrainConfig(dataset="d", output="o", eval_max_frames=-2)
    assert TrainConfig(dataset="d", output="o").eval_every == 0  # off by default


@pytest.mark.integration
def test_eval_metrics_are_logged_per_step(dataset: str, tmp_path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = tiny_config(
        dataset, str(tmp_path / "run"), backbone=BACKBONE, steps=4, eval_every=2, mlflow_tracking_uri=uri
    )
    summary = run(config)
    client = MlflowClient(uri)
    for key in ("eval_rank1", "eval_mAP", "eval_mAP_trapezoid", "eval_seconds"):
        points = sorted(client.get_metric_history(summary.mlflow_run_id, key), key=lambda m: m.step)
        assert [m.step for m in points] == [0, 2, 4], key
    rank1 = [
        m.value
        for m in sorted(client.get_metric_history(summary.mlflow_run_id, "eval_rank1"), key=lambda m: m.step)
    ]
    assert rank1 == [h["eval_rank1"] for h in summary.eval_history]


@pytest.mark.integration
@pytest.mark.slow
def test_under_ddp_rank_0_evaluates_what_one_process_would(tmp_path) -> None:
    """2 gloo processes vs 1 (the set-up of test_ddp.py: GroupNorm, one rank batch per row group):
    the same EMA weights give the same evaluation history, and nobody deadlocks at the barrier."""
    spec = Spec(
        persons=8, cameras=2, frames=4, test_persons=3, row_group_rows=4, height=32, width=16, name="mars"
    )
    root = str(tmp_path / "ds")
    write_dataset(root, spec)
    flags = {
        "dataset": root,
        "backbone": "timm:test_efficientnet_gn",
        "weights": "",
        "image_height": 32,
        "image_width": 16,
        "batch_size": 8,
        "steps": 6,
        "warmup_epochs": 0.5,
        "shuffle_buffer_row_groups": 1,
        "workers": 0,
        "log_every": 3,
        "checkpoint_every": 100,
        "device": "cpu",
        "sync_batchnorm": "off",
        "eval_every": 3,
        # float64: rank-1 and association precision are discrete, and 6 float32 steps on 1 vs 2
        # ranks drift by rounding enough to flip a ranking on some CPUs (see tests/train/test_ddp.py)
        "precision": "fp64",
    }
    argv = [item for key, value in flags.items() for item in (f"--{key.replace('_', '-')}", str(value))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": ""}

    def history(launcher: list[str], output: str) -> list[dict]:
        command = [*launcher, "-m", "components.train", *argv, "--output", str(tmp_path / output)]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-4000:]
        return json.loads(done.stdout)["eval_history"]

    single = history([sys.executable], "one")
    double = history(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"], "two"
    )
    assert [h["step"] for h in double] == [h["step"] for h in single] == [0, 3, 6]
    for a, b in zip(single, double, strict=True):
        for key in ("eval_rank1", "eval_mAP", "association_precision"):
            if key in a:  # no association before the first step
                assert b[key] == pytest.approx(a[key], abs=1e-6), key

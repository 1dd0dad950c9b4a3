"""The "done when" check of ``dal train`` on CPU: on a small dataset whose identities are easy
(clothing colours, per-camera colour cast), DAL lowers the loss, the fraction of cyclically
consistent cross-camera associations rises after the warm-up, and the association precision
ends far above chance, all as MLflow shows it (a local store)."""

from __future__ import annotations

import numpy as np
import pytest

from components.train.loop import run
from tests.train.test_support import Spec, one_thread, tiny_config, write_dataset

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures(one_thread.__name__)]

# 16 persons x 2 cameras x 8 frames = 256 frames: an epoch is 8 steps of 32, warm-up 2 epochs.
SPEC = Spec(persons=16, cameras=2, frames=8, test_persons=0, row_group_rows=16, height=64, width=32)
STEPS, LOG_EVERY = 500, 25


def test_dal_learns_to_associate_across_cameras(tmp_path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    dataset = str(tmp_path / "ds")
    write_dataset(dataset, SPEC)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = tiny_config(
        dataset,
        str(tmp_path / "run"),
        backbone="timm:test_resnet",
        batch_size=32,
        steps=STEPS,
        warmup_epochs=2,
        log_every=LOG_EVERY,
        checkpoint_every=STEPS,
        mlflow_tracking_uri=tracking,
    )
    summary = run(config)
    assert summary["warmup_steps"] == 16 and summary["optimizer"] == "rmsprop"

    client = MlflowClient(tracking)

    def history(key: str) -> np.ndarray:
        points = sorted(client.get_metric_history(summary["mlflow_run_id"], key), key=lambda m: m.step)
        assert [m.step for m in points] == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY)), key
        return np.array([m.value for m in points])

    # All windows are after the warm-up (16 steps); compare the first 4 with the last 4.
    loss, consistent = history("loss"), history("consistent_fraction")
    assert loss[-4:].mean() < loss[:4].mean() - 0.05, loss
    assert consistent[-4:].mean() > consistent[:4].mean() + 0.15, consistent
    chance = client.get_metric_history(summary["mlflow_run_id"], "association_precision_chance")[0].value
    precision = history("association_precision")
    assert chance == pytest.approx(1 / 16)
    assert precision[-4:].mean() > max(0.6, 5 * chance), precision
    assert history("cross_camera").min() == 1.0  # every logged window was after the warm-up

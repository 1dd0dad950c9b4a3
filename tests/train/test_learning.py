"""The "done when" check of ``dal train`` on CPU: on a small dataset whose identities are easy
(clothing colours, per-camera colour cast), DAL lowers the loss, the fraction of cyclically
consistent cross-camera associations rises after the warm-up, and the association precision
ends far above chance, all as MLflow shows it (a local store).

Training is chaotic: another CPU rounds differently, and after a few hundred steps its run is on
another trajectory, like a run with another seed. So the thresholds come from the spread over
seeds, not from one machine's numbers. Over 23 seeds (500 steps each, this set-up): loss drop
(first 4 logged windows minus last 4) 0.186..0.255, consistent-fraction rise 0.087..0.528, final
association precision 0.43..1.0 (chance 1/16; 2 of the 23 seeds failed this test's former fixed
thresholds of one run: rise > 0.15, precision > 0.6). Without learning (lr 1e-9, 3 seeds): loss drop
-0.03..0.016 and rise 0.004..0.027 (random features of this easy data already give a precision
of 0.13..0.51). The test averages two seeds, which halves the spread's tail, and asks for a loss
drop of 0.08, a rise of 0.05 and a precision of 4x chance: about half the worst seed's values,
and well above what no learning gives for the first two. The study ran with the anchors starting
at zero (``anchor_init="zero"``, the reference's default), so the test pins that: it checks that
the association ranking itself learns, with no head start from the initial features (the
features init has its own tests in test_anchors.py and runs in every end-to-end test).
"""

from __future__ import annotations

import numpy as np
import pytest

from components.train.run import run
from tests.train.test_support import Spec, one_thread, tiny_config, write_dataset

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures(one_thread.__name__)]

# 16 persons x 2 cameras x 8 frames = 256 frames: an epoch is 8 steps of 32, warm-up 2 epochs.
SPEC = Spec(persons=16, cameras=2, frames=8, test_persons=0, row_group_rows=16, height=64, width=32)
STEPS, LOG_EVERY = 500, 25
SEEDS = (0, 1)


def _train(dataset: str, output: str, tracking: str, seed: int) -> dict[str, np.ndarray]:
    from mlflow.tracking import MlflowClient

    config = tiny_config(
        dataset,
        output,
        backbone="timm:test_resnet",
        batch_size=32,
        steps=STEPS,
        warmup_epochs=2,
        log_every=LOG_EVERY,
        checkpoint_every=STEPS,
        mlflow_tracking_uri=tracking,
        seed=seed,
        anchor_init="zero",  # the set-up of the seed study (module docstring)
    )
    summary = run(config)
    assert summary.warmup_steps == 16 and summary.optimizer == "rmsprop"
    client = MlflowClient(tracking)
    run_id = summary.mlflow_run_id
    chance = client.get_metric_history(run_id, "association_precision_chance")[0].value
    assert chance == pytest.approx(1 / 16)

    def history(key: str) -> np.ndarray:
        points = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        assert [m.step for m in points] == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY)), key
        return np.array([m.value for m in points])

    # Every logged window is after the warm-up (16 steps).
    assert history("cross_camera").min() == 1.0
    loss, consistent, precision = (
        history("loss"),
        history("consistent_fraction"),
        history("association_precision"),
    )
    return {
        "loss_drop": loss[:4].mean() - loss[-4:].mean(),
        "consistent_rise": consistent[-4:].mean() - consistent[:4].mean(),
        "precision": precision[-4:].mean(),
        "chance": chance,
    }


def test_dal_learns_to_associate_across_cameras(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    dataset = str(tmp_path / "ds")
    write_dataset(dataset, SPEC)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = [_train(dataset, str(tmp_path / f"run{seed}"), tracking, seed) for seed in SEEDS]
    for seed, stats in zip(SEEDS, runs, strict=True):
        assert stats["loss_drop"] > 0.05, (seed, stats)  # each seed learns
    mean = {key: float(np.mean([stats[key] for stats in runs])) for key in runs[0]}
    assert mean["loss_drop"] > 0.08, runs
    assert mean["consistent_rise"] > 0.05, runs
    assert mean["precision"] > 4 * mean["chance"], runs

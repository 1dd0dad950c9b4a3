"""DDP equivalence: ``torchrun`` with 2 CPU processes (gloo) against 1 process on the same global
batch, step by step.

What the design guarantees (components/train/association.py): every rank applies the same anchor
update to the gathered, rank-ordered batch; the per-camera mean nearest distance in d_neg is over
the global batch through an autograd-aware all_gather; DDP averages the gradients. So 2 ranks
compute the same function as 1 process, and the two runs differ only in the ORDER of
floating-point sums (two half-batch convolutions and a gradient all-reduce against one pass).

Why the comparison runs in float64 (``--precision fp64``): in float32 those order differences
(~1 ulp, 6e-8 relative) grow with training: measured on two CPUs, anchors differ by ~4e-7 after
3 steps and ~2e-5 after 10 (RMSProp's early steps and the association's feedback amplify them
~300x), so any fixed float32 tolerance after 10 steps tests the CPU's kernels, not the code. In
float64 the unit roundoff is 2^-53 = 1.1e-16: the same amplification leaves ~1e-13, and the
tolerance TOL = 1e-9 keeps a factor 10^4 for CPUs whose kernels round differently.

What a broken implementation does instead (each run once, broken on purpose, on this test's data,
anchors initialised from the initial model's features as by default): the per-camera mean over
the LOCAL half batch instead of the gathered one fails at step 1 with weights 8e-3 apart; anchors
updated from a rank's own frames only (no gather) fail at step 1 with anchors 0.15 apart;
features gathered in another rank order than their tracklet ids fail at step 1 (anchors 0.19
apart); summed instead of averaged gradients fail at step 1 (weights 0.02 apart). Each failure is
>= 10^6 x TOL away: the test fails on any of them and passes on any CPU whose maths is right.
Measured largest differences of the correct code: 1e-16 at step 1, growing to 2e-13 at step 10.

Checked after EVERY step (a checkpoint per step): the anchors (intra and cross, every camera), the
weights, the optimizer state (RMSProp's mean square and momentum: functions of every gradient so
far, so the gradients are compared too), and the logged loss terms and association fractions.
Steps 1-4 are intra-camera only, step 5 is the first with cross-camera association (warm-up 1
epoch = 4 steps), steps 5 and 9 start the second and third epochs.

The backbone is ``timm:test_efficientnet_gn`` (GroupNorm, no batch statistics): torch's
SyncBatchNorm has no CPU kernel, and plain BatchNorm under DDP normalises each rank's half batch
differently from one process's whole batch. Row groups hold exactly one rank batch and the
shuffle buffer is one row group, so rank r's batch at step s is the (2s + r)-th row group of the
epoch's permutation, which is what one process concatenates (see components/train/data.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from components.train import checkpoint as ckpt
from components.train.summary import TrainSummary
from tests.train.test_support import Spec, write_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# 8 persons x 2 cameras x 2 frames = 32 frames in 8 row groups of 4 (one rank batch each): every
# rank batch holds both cameras (one person's two tracklets), an epoch is 4 steps.
SPEC = Spec(persons=8, cameras=2, frames=2, test_persons=0, row_group_rows=4, height=32, width=16)
STEPS = 10  # 2.5 epochs: tracklets come back, after their cross-camera merges too
WARMUP_STEPS = 4  # 1 epoch: steps 1-4 intra-camera only, cross-camera association from step 5
TOL = 1e-9  # float64; see the module docstring for why
LOGGED = ("loss", "intra_loss", "cross_loss", "consistent_fraction", "nearest_own_fraction")


def _flags(dataset: str, output: str) -> list[str]:
    flags = {
        "dataset": dataset,
        "output": output,
        "backbone": "timm:test_efficientnet_gn",
        "weights": "",
        "image_height": 32,
        "image_width": 16,
        "batch_size": 8,
        "steps": STEPS,
        "warmup_epochs": 1,
        "shuffle_buffer_row_groups": 1,
        "workers": 0,
        "log_every": 1,
        "checkpoint_every": 1,
        "keep_checkpoints": STEPS,
        "device": "cpu",
        "sync_batchnorm": "off",
        "precision": "fp64",
    }
    return [item for key, value in flags.items() for item in (f"--{key.replace('_', '-')}", str(value))]


def _run(command: list[str], tracking: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{tracking}"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)  # rank 0 alone prints the summary


def _logged(summary: dict, tracking: Path) -> dict[str, list[float]]:
    """Per-step values of the logged association metrics (log_every=1: each is one step's)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tracking}")
    history = {}
    for key in LOGGED:
        points = sorted(client.get_metric_history(summary["mlflow_run_id"], key), key=lambda m: m.step)
        assert [m.step for m in points] == list(range(1, STEPS + 1)), key
        history[key] = [m.value for m in points]
    return history


def _tensors(payload: dict) -> dict[str, torch.Tensor]:
    """Anchors, weights and optimizer state of one checkpoint, by a readable name."""
    found = {f"objective.{k}": v for k, v in payload["objective"].items()}
    found |= {f"model.{k}": v for k, v in payload["model"].items() if v.is_floating_point()}
    for index, state in payload["optimizer"]["state"].items():
        found |= {f"optimizer.{index}.{k}": v for k, v in state.items() if torch.is_tensor(v) and v.ndim}
    return found


def test_two_gloo_processes_match_one_process_at_every_step(tmp_path) -> None:
    dataset = str(tmp_path / "ds")
    write_dataset(dataset, SPEC)
    one, two = tmp_path / "one", tmp_path / "two"
    single = _run([sys.executable, "-m", "components.train", *_flags(dataset, str(one))], tmp_path / "1.db")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    double = _run([*launcher, "-m", "components.train", *_flags(dataset, str(two))], tmp_path / "2.db")

    assert double["steps"] == single["steps"] == STEPS
    assert double["warmup_steps"] == single["warmup_steps"] == WARMUP_STEPS
    assert TrainSummary.read(str(two)).steps == STEPS
    steps_one = ckpt.list_checkpoints(str(one))
    steps_two = ckpt.list_checkpoints(str(two))
    assert [s for s, _ in steps_one] == [s for s, _ in steps_two] == list(range(1, STEPS + 1))

    largest = {}
    for (step, uri_one), (_, uri_two) in zip(steps_one, steps_two, strict=True):
        a, b = ckpt.load_checkpoint(uri_one), ckpt.load_checkpoint(uri_two)
        assert b["data"]["world_size"] == 2 and a["data"]["world_size"] == 1
        expected, got = _tensors(a), _tensors(b)
        assert expected.keys() == got.keys() and any(k.startswith("optimizer.") for k in expected)
        for key, value in expected.items():
            assert value.dtype == torch.float64, key
            if key.startswith("objective.") and step == STEPS:
                assert value.abs().sum() > 0, f"{key} is still zero after {STEPS} steps"
            where = f"step {step}: {key}"
            torch.testing.assert_close(
                got[key], value, rtol=TOL, atol=TOL, msg=lambda m, where=where: f"{where}: {m}"
            )
            largest[step] = max(largest.get(step, 0.0), float((got[key] - value).abs().max()))
    print("largest absolute difference per step:", {s: f"{d:.1e}" for s, d in largest.items()})

    history_one, history_two = _logged(single, tmp_path / "1.db"), _logged(double, tmp_path / "2.db")
    for key in LOGGED:
        assert history_two[key] == pytest.approx(history_one[key], rel=TOL, abs=TOL), key
    # The cross-camera loss is the intra one until the warm-up ends, then its own term.
    cross, intra = history_one["cross_loss"], history_one["intra_loss"]
    assert cross[:WARMUP_STEPS] == pytest.approx(intra[:WARMUP_STEPS], abs=1e-12)
    assert cross[WARMUP_STEPS:] != pytest.approx(intra[WARMUP_STEPS:], abs=1e-6)  # merges happened

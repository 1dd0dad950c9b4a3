"""DDP equivalence: ``torchrun`` with 2 CPU processes (gloo) against 1 process with the same global
batch ends with the same anchors, weights and loss.

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

import pytest
import torch

from components.common import storage
from components.train import checkpoint as ckpt
from components.train.loop import SUMMARY_FILE
from tests.train.test_support import Spec, write_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# 8 persons x 2 cameras x 4 frames = 64 frames in 16 row groups of 4 (one rank batch each).
SPEC = Spec(persons=8, cameras=2, frames=4, test_persons=0, row_group_rows=4, height=32, width=16)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": ""}


def _flags(dataset: str, output: str) -> list[str]:
    flags = {
        "dataset": dataset,
        "output": output,
        "backbone": "timm:test_efficientnet_gn",
        "image_height": 32,
        "image_width": 16,
        "batch_size": 8,
        "steps": 10,  # 8 steps per epoch: crosses an epoch boundary
        "warmup_epochs": 0.5,  # cross-camera association from step 4 on
        "shuffle_buffer_row_groups": 1,
        "workers": 0,
        "log_every": 5,
        "checkpoint_every": 100,
        "device": "cpu",
        "sync_batchnorm": "off",
    }
    return [item for key, value in flags.items() for item in (f"--{key.replace('_', '-')}", str(value))]


def _run(command: list[str]) -> dict:
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)  # rank 0 alone prints the summary


def test_two_gloo_processes_match_one_process(tmp_path) -> None:
    dataset = str(tmp_path / "ds")
    write_dataset(dataset, SPEC)
    single = _run([sys.executable, "-m", "components.train", *_flags(dataset, str(tmp_path / "one"))])
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    double = _run([*launcher, "-m", "components.train", *_flags(dataset, str(tmp_path / "two"))])

    assert double["steps"] == single["steps"] == 10
    assert storage.read_json(storage.join(str(tmp_path / "two"), SUMMARY_FILE)) == double
    assert double["final"]["loss"] == pytest.approx(single["final"]["loss"], rel=1e-4, abs=1e-5)
    assert double["final"]["consistent_fraction"] == pytest.approx(single["final"]["consistent_fraction"])
    a = ckpt.load_checkpoint(single["checkpoint"])
    b = ckpt.load_checkpoint(double["checkpoint"])
    assert b["data"]["world_size"] == 2
    for key, value in a["objective"].items():  # the anchors
        assert value.abs().sum() > 0
        torch.testing.assert_close(b["objective"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)

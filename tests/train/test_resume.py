"""Preemption end to end through ``dal train`` subprocesses: SIGKILL + restart ends exactly like an
uninterrupted run; SIGTERM saves a checkpoint and stops with a non-zero exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from components.common import storage
from components.model.artifact import load_model
from components.train import checkpoint as ckpt
from components.train.summary import TrainSummary
from tests.train.test_support import Spec, write_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPEC = Spec(persons=6, cameras=2, frames=4, row_group_rows=8, height=32, width=16)
# One thread: the runs being compared do identical floating-point work (and the CI box has 2 cores).
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": ""}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("resume") / "ds")
    write_dataset(root, SPEC)
    return root


def _command(dataset: str, output: str, steps: int, **extra: object) -> list[str]:
    flags = {
        "dataset": dataset,
        "output": output,
        "backbone": "timm:test_efficientnet",
        "weights": "",  # random init: ImageNet weights are bundled for mobilenet_v2 only
        "image_height": 32,
        "image_width": 16,
        "batch_size": 8,
        "steps": steps,
        "workers": 0,
        "log_every": 1,
        "checkpoint_every": 3,
        "warmup_epochs": 1,
        "device": "cpu",
        **extra,
    }
    args = [item for key, value in flags.items() for item in (f"--{key.replace('_', '-')}", str(value))]
    return [sys.executable, "-m", "components.cli", "train", *args]


def _run(command: list[str]) -> TrainSummary:
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return TrainSummary.from_json(json.loads(done.stdout))  # the CLI prints the typed summary


def _wait_for(predicate, process: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert process.poll() is None, f"training exited early with {process.returncode}"
        assert time.monotonic() < deadline, "timed out waiting for the training run"
        time.sleep(0.05)


def test_sigkill_and_restart_matches_an_uninterrupted_run(dataset: str, tmp_path) -> None:
    straight = _run(_command(dataset, str(tmp_path / "straight"), steps=12))

    output = str(tmp_path / "killed")
    process = subprocess.Popen(
        _command(dataset, output, steps=12),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
        start_new_session=True,
    )
    try:
        _wait_for(lambda: bool(ckpt.list_checkpoints(output)), process)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not storage.exists(storage.join(output, "model.pt")), "the run finished before the kill"

    resumed = _run(_command(dataset, output, steps=12))
    assert resumed.resumed_from != "" and resumed.steps == 12
    a, _ = load_model(straight.model_uri)
    b, _ = load_model(resumed.model_uri)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    final_a = ckpt.load_checkpoint(straight.checkpoint)
    final_b = ckpt.load_checkpoint(resumed.checkpoint)
    for part in ("objective", "model"):
        for key, value in final_a[part].items():
            assert torch.equal(value, final_b[part][key]), f"{part}.{key}"
    assert resumed.final["loss"] == straight.final["loss"]


def test_sigterm_saves_a_checkpoint_and_exits_non_zero(dataset: str, tmp_path) -> None:
    output = str(tmp_path / "run")
    log_path = tmp_path / "stderr.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            _command(dataset, output, steps=100_000, checkpoint_every=100_000),
            stdout=subprocess.PIPE,
            stderr=log,
            env=ENV,
            start_new_session=True,
        )
        try:
            _wait_for(lambda: b"step 2/100000" in log_path.read_bytes(), process)
            os.kill(process.pid, signal.SIGTERM)
            process.wait(timeout=120)
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
    stderr = log_path.read_text()
    # 2: the CLI's exit for every DalError; 143 once the CLI honours TrainingPreempted.exit_code
    assert process.returncode in (2, ckpt.PREEMPTED_EXIT_CODE), stderr[-3000:]
    assert "preempted (SIGTERM) after step" in stderr
    steps = [s for s, _ in ckpt.list_checkpoints(output)]
    assert len(steps) == 1 and steps[0] >= 2
    assert not storage.exists(storage.join(output, "model.pt"))
    resumed = _run(_command(dataset, output, steps=steps[0] + 1))
    assert resumed.resumed_from.endswith(f"step-{steps[0]:06d}.pt") and resumed.steps == steps[0] + 1

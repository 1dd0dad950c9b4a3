"""Checkpoints: weights_only round trip, keep the last K, invisible partial writes, RNG state,
SIGTERM turned into a flag."""

from __future__ import annotations

import os
import random
import signal

import numpy as np
import pytest
import torch

from components.common import storage
from components.common.errors import DalError
from components.train import checkpoint as ckpt


def _payload(value: float) -> dict:
    return {"model": {"w": torch.full((3, 2), value)}, "meta": {"tracklets_per_camera": [2, 3]}}


def test_round_trip_with_weights_only(tmp_path) -> None:
    output = str(tmp_path / "run")
    uri = ckpt.save_checkpoint(output, 12, {**_payload(1.5), "rng": ckpt.capture_rng()}, keep=3)
    assert uri.endswith("checkpoints/step-000012.pt")
    loaded = ckpt.load_checkpoint(uri)  # torch.load(weights_only=True) inside
    assert loaded["step"] == 12 and loaded["format"] == ckpt.CHECKPOINT_FORMAT
    assert torch.equal(loaded["model"]["w"], torch.full((3, 2), 1.5))
    assert loaded["meta"]["tracklets_per_camera"] == [2, 3]
    # the same bytes also load with torch's strict loader directly
    torch.load(uri, weights_only=True)


def test_keep_last_k_and_resume_from_the_newest(tmp_path) -> None:
    output = str(tmp_path / "run")
    for step in (5, 10, 15, 20):
        ckpt.save_checkpoint(output, step, _payload(step), keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(output)] == [15, 20]
    uri, payload = ckpt.load_latest(output)
    assert uri.endswith("step-000020.pt") and payload["step"] == 20


def test_no_checkpoint_means_a_fresh_start(tmp_path) -> None:
    assert ckpt.load_latest(str(tmp_path / "nothing")) is None


def test_unreadable_newest_checkpoint_falls_back_to_an_older_one(tmp_path, caplog) -> None:
    output = str(tmp_path / "run")
    ckpt.save_checkpoint(output, 4, _payload(4), keep=3)
    storage.write_bytes(ckpt.checkpoint_uri(output, 8), b"garbage")
    uri, payload = ckpt.load_latest(output)
    assert payload["step"] == 4
    assert "skipping checkpoint" in caplog.text and "step-000008.pt" in caplog.text


def test_other_files_are_not_checkpoints(tmp_path) -> None:
    output = str(tmp_path / "run")
    ckpt.save_checkpoint(output, 3, _payload(3), keep=3)
    storage.write_bytes(storage.join(ckpt.checkpoints_uri(output), "notes.txt"), b"x")
    assert [s for s, _ in ckpt.list_checkpoints(output)] == [3]
    fake = storage.join(ckpt.checkpoints_uri(output), "step-000009.pt")
    torch.save({"format": "something-else"}, fake)
    with pytest.raises(DalError, match="not a dal-train-checkpoint/1 checkpoint"):
        ckpt.load_checkpoint(fake)


def test_a_write_that_fails_midway_publishes_nothing(tmp_path, monkeypatch) -> None:
    output = str(tmp_path / "run")
    ckpt.save_checkpoint(output, 2, _payload(2), keep=3)

    def crash(src, dst):  # the process "dies" after writing the temp file, before the rename
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(DalError, match="disk gone"):
        ckpt.save_checkpoint(output, 4, _payload(4), keep=3)
    monkeypatch.undo()
    assert [s for s, _ in ckpt.list_checkpoints(output)] == [2]
    assert ckpt.load_latest(output)[1]["step"] == 2


def test_temp_files_of_a_killed_writer_are_cleaned_up(tmp_path) -> None:
    output = str(tmp_path / "run")
    ckpt.save_checkpoint(output, 2, _payload(2), keep=3)
    leftover = tmp_path / "run" / "checkpoints" / ".tmp-abc123-step-000004.pt"
    leftover.write_bytes(b"half a checkpoint")
    assert [s for s, _ in ckpt.list_checkpoints(output)] == [2]
    ckpt.remove_partial_writes(output)
    assert not leftover.exists()
    assert [s for s, _ in ckpt.list_checkpoints(output)] == [2]


def test_rng_state_round_trip() -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    state = ckpt.capture_rng()
    first = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    ckpt.restore_rng(state)
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(first[0], again[0])
    assert np.array_equal(first[1], again[1])
    assert first[2] == again[2]


def test_sigterm_sets_a_flag_and_the_old_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with ckpt.PreemptionGuard() as guard:
        assert not guard.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.requested  # and this process is still alive
    assert signal.getsignal(signal.SIGTERM) == before


def test_preemption_error_carries_the_retryable_exit_code() -> None:
    error = ckpt.TrainingPreempted("preempted")
    assert isinstance(error, DalError) and error.exit_code == 143


@pytest.mark.integration
def test_checkpoints_on_s3(s3_bucket: str) -> None:
    output = f"{s3_bucket}/runs/r1"
    for step in (1, 2, 3):
        ckpt.save_checkpoint(output, step, _payload(step), keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(output)] == [2, 3]
    uri, payload = ckpt.load_latest(output)
    assert uri == f"{output}/checkpoints/step-000003.pt"
    assert torch.equal(payload["model"]["w"], torch.full((3, 2), 3.0))

"""A preempted train task is retried by the pipeline and resumes: the local pipeline (kfp.local
honours ``set_retry``), its train task's first attempt stopped by SIGTERM mid-training, still
finishes, with the same model as an uninterrupted training of the same split config.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from components.train.checkpoint import CHECKPOINTS_DIR
from components.train.launch import split_config
from components.train.run import run
from components.train.summary import TrainSummary
from pipelines.cli import run_local

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = 24
ARGUMENTS = {
    "dataset": "mars",
    "synthetic_identities": 6,
    # A tiny random-init backbone: what is checked is the resume, not the learning.
    "train_options": {
        "backbone": "timm:test_resnet",
        "weights": "",
        "steps": STEPS,
        "batch_size": 8,
        "image_height": 32,
        "image_width": 16,
        "checkpoint_every": 4,
        "workers": 0,
        "log_every": 4,
    },
    "extract_options": {"batch_size": 32},
}


def _train_processes() -> list[int]:
    """PIDs of kfp.local executors running the ``train`` component (one per attempt)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        flag = b"--function_to_execute"
        if b"kfp.dsl.executor_main" in argv and flag in argv and argv[argv.index(flag) + 1] == b"train":
            found.append(int(entry.name))
    return found


def _preempt_first_attempt(work: Path, record: dict, stop: threading.Event) -> None:
    """Once the first checkpoint is published, SIGTERM the train task (as a node drain would)."""
    while not stop.is_set():
        checkpoints = list(work.glob(f"store/runs/*/split-0/dal/{CHECKPOINTS_DIR}/step-*.pt"))
        pids = _train_processes()
        if checkpoints and pids:
            record["checkpoint"] = sorted(checkpoints)[0].name
            record["pid"] = pids[0]
            os.kill(pids[0], signal.SIGTERM)
            return
        time.sleep(0.05)


def _model_and_summary(work: Path, job: str, root: str = "store") -> tuple[dict, TrainSummary]:
    output = work / root / "runs" / job / "split-0" / "dal"
    model = torch.load(output / "model.pt", weights_only=True)
    return model["state_dict"], TrainSummary.read(str(output))


def test_a_sigterm_preempted_train_task_is_retried_and_resumes_to_the_same_result(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One thread in the pipeline's task processes and in this one: the runs compared bit for bit
    # must do the same floating-point work (a conv's sums are split by the thread count).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    work = tmp_path / "preempted"
    record: dict = {}
    stop = threading.Event()
    killer = threading.Thread(target=_preempt_first_attempt, args=(work, record, stop), daemon=True)
    killer.start()
    try:
        retried = run_local(ARGUMENTS, work)
    finally:
        stop.set()
        killer.join(timeout=5)
    assert record, "the train task was never caught mid-training"
    assert retried["status"] == "FINISHED" and 0.0 <= retried["metrics"]["rank1"] <= 1.0

    # The second attempt resumed where the first stopped, in the same run directory.
    job = retried["pipeline_job_id"]
    weights, summary = _model_and_summary(work, job)
    assert summary.resumed_from.endswith(".pt") and summary.steps == STEPS
    # Both attempts logged a train run: the preempted one FAILED, the resumed one FINISHED.
    assert retried["children"].count("train-split0") == 2

    # The same split trained without interruption, from the config the pipeline task built.
    dataset = next((work / "store" / "datasets").iterdir())
    config = split_config(
        dataset=str(dataset),
        split=0,
        options=ARGUMENTS["train_options"],
        storage_root=str(tmp_path / "uninterrupted"),
        run_key=job,
        mlflow_tracking_uri="",
        mlflow_experiment="dal",
        mlflow_parent_run_id="",
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = run(config)
    finally:
        torch.set_num_threads(threads)
    assert reference.resumed_from == "" and reference.steps == STEPS
    reference_weights, _ = _model_and_summary(tmp_path / "uninterrupted", job, root="")
    # Resuming is exact (test_resume): same machine, same kernels, so bit for bit.
    assert weights.keys() == reference_weights.keys()
    for name, tensor in weights.items():
        assert torch.equal(tensor, reference_weights[name]), name

"""The training loop on CPU with a tiny backbone: artifacts, automatic resume, NaN stop, bad input."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pandas as pd
import pytest
import torch

from components.common import storage
from components.common.dataset import Dataset, DatasetWriter
from components.common.distributed import DistEnv
from components.common.errors import DalError
from components.model.artifact import load_model
from components.model.backbones import build_backbone
from components.train import checkpoint as ckpt
from components.train.config import TrainConfig
from components.train.objectives import DalObjective
from components.train.run import plan_training, run
from components.train.summary import TrainSummary
from tests.train.test_support import Spec, one_thread, tiny_config, write_dataset

pytestmark = pytest.mark.usefixtures(one_thread.__name__)
BACKBONE = "timm:test_efficientnet"  # ~0.1 M parameters, with batch norm
SPEC = Spec(persons=6, cameras=2, frames=4, row_group_rows=8, height=32, width=16)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("loop") / "ds")
    write_dataset(root, SPEC)
    return root


def tiny(dataset: str, output: str, **overrides) -> TrainConfig:
    return tiny_config(dataset, output, mlflow_tracking_uri="", **overrides)


@pytest.fixture(autouse=True)
def no_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _weights(uri: str) -> dict[str, torch.Tensor]:
    model, _ = load_model(uri)
    return model.state_dict()


def test_short_run_writes_the_ema_model_and_keeps_the_last_checkpoints(dataset: str, tmp_path) -> None:
    output = str(tmp_path / "run")
    summary = run(tiny(dataset, output))
    assert summary.steps == 6 and summary.resumed_from == ""
    assert summary.optimizer == "rmsprop" and summary.warmup_steps == 6  # 48 frames / 8
    assert summary.model_uri == storage.join(output, "model.pt")
    assert TrainSummary.read(output) == summary
    assert [s for s, _ in ckpt.list_checkpoints(output)] == [4, 6]
    final = ckpt.load_checkpoint(summary.checkpoint)
    model, info = load_model(summary.model_uri)
    assert (info.backbone, info.image_height, info.image_width) == (BACKBONE, 32, 16)
    assert info.feature_dim == 256 and info.config["steps"] == 6
    assert not any(k.startswith("mlflow_") for k in info.config)
    # model.pt holds the EMA weights, not the raw ones
    ema = final["ema"]["module"]
    raw = {k.removeprefix("backbone."): v for k, v in final["model"].items()}
    for key, value in model.state_dict().items():
        assert torch.equal(value, ema[key]), key
    assert any(not torch.equal(ema[k], raw[k]) for k in ema if ema[k].is_floating_point())
    anchors = final["objective"]["association.intra_anchor_0"]
    assert anchors.shape == (6, 256) and anchors.abs().sum() > 0
    for key in ("loss", "intra_loss", "cross_loss", "consistent_fraction", "association_precision", "lr"):
        assert key in summary.final, key


def test_a_rerun_resumes_and_matches_an_uninterrupted_run(dataset: str, tmp_path) -> None:
    straight = run(tiny(dataset, str(tmp_path / "straight"), steps=9, checkpoint_every=3))
    run(tiny(dataset, str(tmp_path / "split"), steps=5, checkpoint_every=3))  # stops at 5 (checkpoint 3, 5)
    resumed = run(tiny(dataset, str(tmp_path / "split"), steps=9, checkpoint_every=3))
    assert resumed.resumed_from.endswith("step-000005.pt") and resumed.steps == 9
    a, b = _weights(straight.model_uri), _weights(resumed.model_uri)
    assert all(torch.equal(a[k], b[k]) for k in a)
    anchors_a = ckpt.load_checkpoint(straight.checkpoint)["objective"]
    anchors_b = ckpt.load_checkpoint(resumed.checkpoint)["objective"]
    assert all(torch.equal(anchors_a[k], anchors_b[k]) for k in anchors_a)
    assert resumed.final["loss"] == straight.final["loss"]


def test_resume_is_exact_with_dataloader_workers(dataset: str, tmp_path) -> None:
    straight = run(tiny(dataset, str(tmp_path / "straight"), steps=7, workers=2))
    run(tiny(dataset, str(tmp_path / "split"), steps=3, workers=2))
    resumed = run(tiny(dataset, str(tmp_path / "split"), steps=7, workers=2))
    assert resumed.resumed_from.endswith("step-000003.pt")
    a, b = _weights(straight.model_uri), _weights(resumed.model_uri)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_finished_run_is_not_trained_again(dataset: str, tmp_path) -> None:
    output = str(tmp_path / "run")
    run(tiny(dataset, output, steps=2))
    again = run(tiny(dataset, output, steps=2))
    assert again.resumed_from.endswith("step-000002.pt") and again.checkpoint == ""
    assert [s for s, _ in ckpt.list_checkpoints(output)] == [2]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(dataset: str, tmp_path, monkeypatch) -> None:
    original = DalObjective.forward
    calls = {"n": 0}

    def diverging(self, *args, **kwargs):
        loss, metrics = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= 4:  # step 4 diverges; the checkpoint of step 2 is the last good one
            nan = torch.tensor(float("nan"))
            return loss * nan, {**metrics, "loss": metrics["loss"] * nan}
        return loss, metrics

    monkeypatch.setattr(DalObjective, "forward", diverging)
    output = str(tmp_path / "run")
    with pytest.raises(DalError, match=r"loss is nan at step 4 \(diverged\).*last good checkpoint"):
        run(tiny(dataset, output))
    assert [s for s, _ in ckpt.list_checkpoints(output)] == [2]
    assert not storage.exists(storage.join(output, "model.pt"))


def test_dataset_without_a_manifest(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DalError, match="no manifest"):
        run(tiny(str(tmp_path / "empty"), str(tmp_path / "run")))


def test_split_that_does_not_exist(dataset: str, tmp_path) -> None:
    with pytest.raises(DalError, match="has no splits"):
        run(tiny(dataset, str(tmp_path / "run"), split=2))


def test_split_out_of_range_on_a_split_dataset(tmp_path) -> None:
    root = str(tmp_path / "splits")
    with DatasetWriter(root, "prid2011", row_group_rows=8) as writer:
        for t in range(4):
            writer.add_frames(
                {
                    "tracklet_id": [t] * 2,
                    "frame_index": [0, 1],
                    "person_id": [t // 2 + 1] * 2,
                    "camera_id": [t % 2] * 2,
                    "image": [b"x"] * 2,
                    "source_path": ["a", "b"],
                }
            )
        tracklets = pd.DataFrame(
            {
                "tracklet_id": range(4),
                "person_id": [1, 1, 2, 2],
                "camera_id": [0, 1, 0, 1],
                "subset": ["train", "train", "test", "test"],
                "is_query": [False] * 4,
                "num_frames": [2] * 4,
                "name": list("abcd"),
            }
        )
        roles = ["train", "test"] * 2
        splits = pd.DataFrame({"split": [0, 0, 1, 1], "person_id": [1, 2, 2, 1], "role": roles})
        writer.finish(tracklets, splits)
    with pytest.raises(DalError, match=r"split 5 does not exist \(available: 0\.\.1\)"):
        run(tiny(root, str(tmp_path / "run"), split=5))


def test_weights_that_do_not_fit(dataset: str, tmp_path) -> None:
    torch.save(build_backbone("timm:test_resnet").state_dict(), tmp_path / "resnet.pt")
    with pytest.raises(DalError, match="weights do not fit backbone 'timm:test_efficientnet'"):
        run(tiny(dataset, str(tmp_path / "run"), weights=str(tmp_path / "resnet.pt")))


def test_weights_that_fit_are_the_starting_point(dataset: str, tmp_path) -> None:
    torch.manual_seed(123)
    start = build_backbone(BACKBONE)
    torch.save(start.state_dict(), tmp_path / "start.pt")
    summary = run(tiny(dataset, str(tmp_path / "run"), steps=1, weights=str(tmp_path / "start.pt"), lr=1e-9))
    trained = _weights(summary.model_uri)
    conv = "conv_stem.weight"
    assert torch.allclose(trained[conv], start.state_dict()[conv], atol=1e-5)


def test_resuming_against_another_dataset_is_refused(dataset: str, tmp_path) -> None:
    output = str(tmp_path / "run")
    run(tiny(dataset, output, steps=2))
    other = str(tmp_path / "other")
    write_dataset(other, dataclasses.replace(SPEC, persons=5))
    with pytest.raises(DalError, match=r"step-000002\.pt: trained on 2 cameras .* \[6, 6\].* \[5, 5\]"):
        run(tiny(other, output, steps=4))
    three = str(tmp_path / "three")
    write_dataset(three, dataclasses.replace(SPEC, cameras=3))
    with pytest.raises(DalError, match=r"trained on 2 cameras .* has 3 cameras"):
        run(tiny(three, output, steps=4))


def test_resuming_with_another_backbone_is_refused(dataset: str, tmp_path) -> None:
    output = str(tmp_path / "run")
    run(tiny(dataset, output, steps=2))
    expected = "backbone: checkpoint 'timm:test_efficientnet' vs now 'timm:test_resnet'"
    with pytest.raises(DalError, match=expected):
        run(tiny(dataset, output, steps=4, backbone="timm:test_resnet"))


def test_sync_batchnorm_choice(dataset: str, tmp_path) -> None:
    data = Dataset.open(dataset)
    cpu_pair = DistEnv(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    gpu_pair = DistEnv(rank=0, world_size=2, local_rank=0, device=torch.device("cuda", 0))
    single_gpu = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cuda", 0))
    config = tiny(dataset, str(tmp_path / "run"))
    assert plan_training(config, data, gpu_pair).sync_batchnorm  # auto: on for several GPUs
    assert not plan_training(config, data, single_gpu).sync_batchnorm
    assert not plan_training(config, data, cpu_pair).sync_batchnorm  # no CPU kernel in torch
    off = tiny(dataset, str(tmp_path / "run"), sync_batchnorm="off")
    assert not plan_training(off, data, gpu_pair).sync_batchnorm
    on = tiny(dataset, str(tmp_path / "run"), sync_batchnorm="on")
    with pytest.raises(DalError, match="sync_batchnorm: 'on' needs CUDA"):
        plan_training(on, data, cpu_pair)
    assert plan_training(on, data, gpu_pair).rank_batch == 4


def test_dal_needs_two_cameras(tmp_path) -> None:
    root = str(tmp_path / "one-camera")
    write_dataset(root, dataclasses.replace(SPEC, cameras=1))
    with pytest.raises(DalError, match="DAL needs train tracklets in at least 2 cameras"):
        run(tiny(root, str(tmp_path / "run")))


def test_supervised_reference_learns_identities(dataset: str, tmp_path) -> None:
    config = tiny(dataset, str(tmp_path / "run"), objective="supervised", steps=24, log_every=6)
    summary = run(config)
    assert summary.objective == "supervised"
    assert "association_precision" not in summary.final
    payload = ckpt.load_checkpoint(summary.checkpoint)
    assert payload["model"]["classifier.weight"].shape == (6, 256)  # one class per train person
    model, _ = load_model(summary.model_uri)  # the backbone alone: no classifier in model.pt
    assert not any(k.startswith("classifier") for k in model.state_dict())
    assert summary.final["train_accuracy"] > 1 / 6


def test_python_m_entry_and_cli_error_exit(tmp_path) -> None:
    help_run = subprocess.run(
        [sys.executable, "-m", "components.train", "--help"], capture_output=True, text=True, timeout=120
    )
    assert help_run.returncode == 0 and "--warmup-epochs" in help_run.stdout
    flags = ["--dataset", str(tmp_path / "none"), "--output", str(tmp_path)]
    bad = subprocess.run(
        [sys.executable, "-m", "components.train", *flags],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0
    assert "dal train: error:" in bad.stderr and "no manifest" in bad.stderr

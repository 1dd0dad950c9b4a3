"""``dal extract``: streamed, pooled tracklet features equal a direct per-tracklet computation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from components.common import images
from components.common.dataset import Dataset, DatasetError, DatasetWriter
from components.common.errors import DalError
from components.common.features import read_features
from components.extract.config import ExtractConfig
from components.extract.run import assign_row_groups, run
from components.model.artifact import IMAGENET_MEAN, IMAGENET_STD
from tests.extract.helpers import frame, write_dataset, write_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("extract")
    write_dataset(str(root / "mars"), "mars")
    write_dataset(str(root / "prid"), "prid2011", seed=1)
    model = write_model(str(root / "model.pt"))
    return {"root": root, "mars": str(root / "mars"), "prid": str(root / "prid"), "model": model}


def _config(data: dict, dataset: str = "mars", **kwargs) -> ExtractConfig:
    output = kwargs.pop("output", str(data["root"] / f"out-{len(os.listdir(data['root']))}.parquet"))
    return ExtractConfig(
        dataset=data[dataset], model=str(data["root"] / "model.pt"), output=output, progress=False, **kwargs
    )


def _direct(
    dataset_root: str, model: torch.nn.Module, tracklet_ids, pooling: str, flip: bool = False
) -> np.ndarray:
    """Every frame of each tracklet at once through the model: the definition extraction must meet
    (``flip``: each frame's unit feature averaged with its mirror image's, as written out here)."""
    frames = pd.concat(
        t.to_pandas() for t in Dataset.open(dataset_root).iter_frames(["tracklet_id", "image"])
    )
    rows = []
    with torch.inference_mode():
        for tracklet in tracklet_ids:
            data = frames.loc[frames["tracklet_id"] == tracklet, "image"]
            batch = torch.stack([images.resize(images.decode(b), (32, 16)) for b in data])
            feats = F.normalize(model(images.normalize(batch, IMAGENET_MEAN, IMAGENET_STD)), dim=1)
            if flip:
                mirrored = torch.flip(batch, dims=[3])  # width: the last axis of (N, 3, H, W)
                mirrored = F.normalize(model(images.normalize(mirrored, IMAGENET_MEAN, IMAGENET_STD)), dim=1)
                feats = F.normalize((feats + mirrored) / 2, dim=1)
            pooled = feats.max(dim=0).values if pooling == "max" else feats.mean(dim=0)
            rows.append(F.normalize(pooled, dim=0))
    return torch.stack(rows).numpy()


@pytest.mark.parametrize(("pooling", "batch_size"), [("max", 3), ("mean", 64)])
def test_matches_direct_computation(data: dict, pooling: str, batch_size: int) -> None:
    config = _config(data, pooling=pooling, batch_size=batch_size)
    summary = run(config)
    features = read_features(config.output)
    tracklets = Dataset.open(data["mars"]).subset_tracklets("test")
    assert features.tracklet_id.tolist() == tracklets["tracklet_id"].tolist()
    assert features.person_id.tolist() == tracklets["person_id"].tolist()
    assert features.camera_id.tolist() == tracklets["camera_id"].tolist()
    assert features.num_frames.tolist() == tracklets["num_frames"].tolist()
    expected = _direct(data["mars"], data["model"], features.tracklet_id, pooling)
    np.testing.assert_allclose(features.feature, expected, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(features.feature, axis=1), 1.0, atol=1e-5)
    assert features.metadata["pooling"] == pooling and features.metadata["dataset_name"] == "mars"
    assert summary["num_frames"] == int(tracklets["num_frames"].sum()) and summary["feature_dim"] == 256


def test_flip_averages_each_frame_with_its_mirror(data: dict, tmp_path) -> None:
    flipped = _config(data, flip=True, batch_size=5)
    summary = run(flipped)
    features = read_features(flipped.output)
    assert summary["flip"] is True and features.metadata["flip"] is True
    expected = _direct(data["mars"], data["model"], features.tracklet_id, "max", flip=True)
    np.testing.assert_allclose(features.feature, expected, atol=2e-5)  # as test_matches_direct_computation
    plain = read_features(run(_config(data))["output"])
    assert plain.metadata["flip"] is False
    assert np.abs(plain.feature - features.feature).max() > 100 * 2e-5  # the mirror changes features
    # Mirror-symmetric frames: flipping changes nothing beyond rounding.
    root = str(tmp_path / "symmetric")
    write_dataset(root, "mars", symmetric=True)
    one, two = (
        read_features(run(_config({**data, "sym": root}, "sym", flip=f))["output"]) for f in (False, True)
    )
    np.testing.assert_allclose(one.feature, two.feature, atol=2e-5)


def test_subsets_and_splits(data: dict) -> None:
    dataset = Dataset.open(data["prid"])
    for subset, split in (("test", 2), ("train", 1), ("all", 0)):
        config = _config(data, "prid", subset=subset, split=split)
        run(config)
        features = read_features(config.output)
        expected = dataset.tracklets() if subset == "all" else dataset.subset_tracklets(subset, split)
        assert features.tracklet_id.tolist() == sorted(expected["tracklet_id"])
        assert (features.metadata["subset"], features.metadata["split"]) == (subset, split)


def test_row_groups_are_balanced_across_ranks(data: dict) -> None:
    refs = Dataset.open(data["mars"]).row_groups()
    parts = [assign_row_groups(refs, 3, rank) for rank in range(3)]
    assert sorted(r for part in parts for r in map(repr, part)) == sorted(map(repr, refs))
    loads = [sum(r.num_rows for r in part) for part in parts]
    assert max(loads) - min(loads) <= max(r.num_rows for r in refs)


@pytest.mark.parametrize(
    ("dataset", "kwargs", "error", "message"),
    [
        ("prid", {"split": 5}, DatasetError, "split 5 does not exist"),
        ("mars", {"split": 1}, DatasetError, "has no splits"),
        ("mars", {"model": "missing.pt"}, DalError, "missing.pt"),
    ],
)
def test_bad_input_writes_nothing(data: dict, dataset: str, kwargs: dict, error: type, message: str) -> None:
    model = kwargs.pop("model", None)
    config = _config(data, dataset, **kwargs)
    if model:
        config = ExtractConfig(**{**config.__dict__, "model": str(data["root"] / model)})
    with pytest.raises(error, match=message):
        run(config)
    assert not Path(config.output).exists()


def _write_odd_dataset(root: str, frames: dict[int, list[bytes]], declared: list[int]) -> None:
    with DatasetWriter(root, "mars", row_group_rows=4) as writer:
        for tracklet, data in frames.items():
            writer.add_frames(
                {
                    "tracklet_id": [tracklet] * len(data),
                    "frame_index": list(range(len(data))),
                    "person_id": [tracklet + 1] * len(data),
                    "camera_id": [tracklet] * len(data),
                    "image": data,
                    "source_path": [f"{tracklet}/{i}.png" for i in range(len(data))],
                }
            )
        writer.finish(
            pd.DataFrame(
                {
                    "tracklet_id": list(frames),
                    "person_id": [t + 1 for t in frames],
                    "camera_id": list(frames),
                    "subset": "test",
                    "is_query": [True, False],
                    "num_frames": declared,
                    "name": [f"t{t}" for t in frames],
                }
            )
        )


def test_frames_that_do_not_match_the_tracklet_table(data: dict, tmp_path) -> None:
    rng = np.random.default_rng(0)
    _write_odd_dataset(
        str(tmp_path / "odd"),
        {0: [frame(1, 0, i, rng) for i in range(4)], 1: [frame(2, 1, 0, rng)] * 3},
        [3, 4],
    )
    config = ExtractConfig(
        dataset=str(tmp_path / "odd"),
        model=str(data["root"] / "model.pt"),
        output=str(tmp_path / "f.parquet"),
    )
    with pytest.raises(
        DatasetError, match="tracklet 0 has 4 frames in the shards but 3 in tracklets.parquet"
    ):
        run(config)
    assert not (tmp_path / "f.parquet").exists()


def test_corrupt_frame_is_named(data: dict, tmp_path) -> None:
    rng = np.random.default_rng(0)
    frames = {0: [frame(1, 0, 0, rng), b"\x89PNG broken"], 1: [frame(2, 1, 0, rng)]}
    _write_odd_dataset(str(tmp_path / "corrupt"), frames, [2, 1])
    config = ExtractConfig(
        dataset=str(tmp_path / "corrupt"),
        model=str(data["root"] / "model.pt"),
        output=str(tmp_path / "f.parquet"),
    )
    with pytest.raises(DalError, match=r"part-00000.parquet row group 0, tracklet 0: cannot decode image"):
        run(config)


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "components.extract", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": "", **(env or {})},
    )


def test_cli_exit_codes(data: dict) -> None:
    # A failing run exits 2 through the same CLI path: see tests/evaluate/test_evaluate.py (torch-free, fast).
    output = str(data["root"] / "cli.parquet")
    ok = _cli("--dataset", data["mars"], "--model", str(data["root"] / "model.pt"), "--output", output)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["num_tracklets"] == len(read_features(output))
    wrong = _cli("--dataset", data["mars"], "--model", "m.pt", "--output", output, "--batch-size", "0")
    assert wrong.returncode != 0 and "batch_size: must be >= 1" in wrong.stderr


@pytest.mark.slow
def test_decoding_workers_give_the_same_features(data: dict) -> None:
    single, workers = _config(data), _config(data, workers=2)
    run(single)
    run(workers)
    np.testing.assert_array_equal(read_features(workers.output).feature, read_features(single.output).feature)


@pytest.mark.slow
@pytest.mark.integration
def test_torchrun_two_ranks_equal_one_process(data: dict) -> None:
    single = _config(data, "prid", subset="all")
    run(single)
    output = str(data["root"] / "ddp.parquet")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "components.extract", "--dataset", data["prid"], "--model", str(data["root"] / "model.pt"),
        "--output", output, "--subset", "all", "--device", "cpu", "--progress", "false",
    ]  # fmt: skip
    result = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": ""},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["world_size"] == 2  # only rank 0 prints
    np.testing.assert_allclose(read_features(output).feature, read_features(single.output).feature, atol=1e-6)

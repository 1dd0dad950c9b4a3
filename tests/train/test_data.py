"""The training stream: train tracklets only, ids mapped per camera, balanced splits over ranks and
workers, a seeded order that a restart reproduces by skipping without decoding."""

from __future__ import annotations

import collections

import numpy as np
import pandas as pd
import pytest
import torch

from components.common import images
from components.common.dataset import Dataset, DatasetError, DatasetWriter
from components.train.data import (
    StreamOptions,
    TrainStream,
    apply_colour_jitter,
    build_index,
    colour_jitter_params,
    make_loader,
    plan_row_groups,
    usable_workers,
)
from tests.train.test_support import Spec, one_thread, write_dataset

pytestmark = pytest.mark.usefixtures(one_thread.__name__)
# 6 train persons x 3 cameras (18 train tracklets of 6 frames), 2 test persons; row groups of 12.
SPEC = Spec(persons=6, cameras=3, frames=6, test_persons=2, row_group_rows=12, height=32, width=16)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    root = str(tmp_path_factory.mktemp("data") / "ds")
    write_dataset(root, SPEC)
    return Dataset.open(root)


def _stream(dataset: Dataset, **overrides) -> TrainStream:
    index = build_index(dataset, 0, with_classes=overrides.pop("with_classes", False))
    options = {
        "seed": 0,
        "rank": 0,
        "world_size": 1,
        "batch_size": 8,
        "image_size": (16, 8),
        "chunk_row_groups": 2,
        **overrides,
    }
    return TrainStream(dataset, plan_row_groups(dataset, index), index, StreamOptions(**options))


def _take(iterator, n: int) -> list[dict[str, torch.Tensor]]:
    return [next(iterator) for _ in range(n)]


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b, strict=True)
    )


def test_index_maps_train_tracklets_to_local_ids_per_camera(dataset: Dataset) -> None:
    index = build_index(dataset, 0)
    assert index.tracklets_per_camera == (6, 6, 6)
    assert index.num_frames == 18 * 6
    tracklets = dataset.tracklets()
    for row in tracklets.itertuples():
        if row.subset == "train":
            assert index.camera_of[row.tracklet_id] == row.camera_id
            # persons were written in order, so the local index is the person's rank
            assert index.local_of[row.tracklet_id] == row.person_id - 1
        else:
            assert index.camera_of[row.tracklet_id] == -1 and index.local_of[row.tracklet_id] == -1
    for camera in range(3):
        ids = index.global_ids(camera)
        assert index.local_of[ids].tolist() == list(range(6))
    assert index.class_of is None


def test_index_classes_for_the_supervised_reference(dataset: Dataset) -> None:
    index = build_index(dataset, 0, with_classes=True)
    assert index.num_classes == 6
    train = dataset.subset_tracklets("train")
    assert (index.class_of[train["tracklet_id"]] == train["person_id"] - 1).all()


def test_plan_skips_test_row_groups_and_counts_mixed_ones(tmp_path) -> None:
    # 3 train persons x 2 cameras x 5 frames = 30 train frames, then test frames; row groups of 8
    # leave one row group with both train and test frames.
    root = str(tmp_path / "ds")
    write_dataset(root, Spec(persons=3, cameras=2, frames=5, test_persons=2, row_group_rows=8))
    dataset = Dataset.open(root)
    index = build_index(dataset, 0)
    plan = plan_row_groups(dataset, index)
    assert sum(plan.train_rows) == 30
    assert len(plan) == 4  # rows 0-31: the 4th group holds 6 train and 2 test frames
    assert plan.train_rows[-1] == 6
    assert len(dataset.row_groups()) == 7


def test_batches_hold_only_train_frames_with_consistent_ids(dataset: Dataset) -> None:
    stream = _stream(dataset)
    batches = _take(iter(stream), 30)  # > 2 epochs of 108 frames
    index = stream.index
    seen = collections.Counter()
    for batch in batches:
        assert batch["images"].shape == (8, 3, 16, 8) and batch["images"].dtype == torch.float32
        assert float(batch["images"].min()) >= 0.0 and float(batch["images"].max()) <= 1.0
        for t, c in zip(batch["tracklet"].tolist(), batch["camera"].tolist(), strict=True):
            assert 0 <= t < index.tracklets_per_camera[c]
            seen[(c, t)] += 1
    assert len(seen) == 18  # every train tracklet, no test tracklet (those have no local id)
    first_epoch = collections.Counter()
    for batch in batches[: 108 // 8]:
        first_epoch.update(zip(batch["camera"].tolist(), batch["tracklet"].tolist(), strict=True))
    assert max(first_epoch.values()) <= 6  # an epoch visits every frame once


def test_frames_of_a_chunk_are_mixed(dataset: Dataset) -> None:
    """A row group holds 2 tracklets; a batch drawn from a 2-row-group chunk mixes more than that."""
    batch = next(iter(_stream(dataset)))
    pairs = set(zip(batch["camera"].tolist(), batch["tracklet"].tolist(), strict=True))
    assert len(pairs) >= 3


def test_person_ids_are_never_read_by_the_dal_stream(dataset: Dataset, monkeypatch) -> None:
    columns_read = set()
    original = Dataset.read_row_group

    def spy(self, ref, columns):
        columns_read.update(columns)
        return original(self, ref, columns)

    monkeypatch.setattr(Dataset, "read_row_group", spy)
    _take(iter(_stream(dataset)), 3)
    assert columns_read == {"tracklet_id", "camera_id", "image"}


def test_labels_come_from_the_tracklet_table(dataset: Dataset) -> None:
    batch = next(iter(_stream(dataset, with_classes=True, with_labels=True)))
    # persons were written in order: class == local tracklet index here
    assert torch.equal(batch["label"], batch["tracklet"])


def test_order_is_seeded(dataset: Dataset) -> None:
    a = _take(iter(_stream(dataset, seed=3)), 5)
    assert _same(a, _take(iter(_stream(dataset, seed=3)), 5))
    assert not _same(a, _take(iter(_stream(dataset, seed=4)), 5))


def test_augmentation_flips_and_crops(dataset: Dataset) -> None:
    plain = next(iter(_stream(dataset, augment=False)))
    augmented = next(iter(_stream(dataset, augment=True)))
    assert torch.equal(plain["tracklet"], augmented["tracklet"])  # same frames, same order
    assert not torch.allclose(plain["images"], augmented["images"])


def test_colour_jitter_is_seeded_and_changes_only_colours(dataset: Dataset) -> None:
    plain = next(iter(_stream(dataset)))
    jittered = next(iter(_stream(dataset, color_jitter=0.4)))
    again = next(iter(_stream(dataset, color_jitter=0.4)))
    assert torch.equal(plain["tracklet"], jittered["tracklet"])  # same frames, crops and flips
    assert torch.equal(jittered["images"], again["images"])
    assert not torch.allclose(plain["images"], jittered["images"], atol=0.02)
    assert float(jittered["images"].min()) >= 0.0 and float(jittered["images"].max()) <= 1.0


def test_colour_jitter_parameters_stay_in_range() -> None:
    params = colour_jitter_params(np.random.default_rng(0), 1000, 0.4)
    factors, hue, gains = params[:, :3], params[:, 3], params[:, 4:]
    assert params.shape == (1000, 7)
    assert factors.min() >= 0.6 and factors.max() <= 1.4
    assert abs(hue).max() <= 0.1 and gains.min() >= np.exp(-0.2) - 1e-6 and gains.max() <= np.exp(0.2) + 1e-6
    image = torch.full((3, 4, 2), 0.5)
    identity = np.array([1, 1, 1, 0, 1, 1, 1], np.float32)
    assert torch.allclose(apply_colour_jitter(image, identity), image, atol=1e-6)
    red = np.array([1, 1, 1, 0, 1.2, 1, 1], np.float32)  # a white-balance gain on red alone
    assert torch.allclose(apply_colour_jitter(image, red)[0], torch.full((4, 2), 0.6), atol=1e-5)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_row_groups_split_evenly_and_disjointly_over_ranks_and_workers(
    dataset: Dataset, world_size: int
) -> None:
    workers = 2
    plan_size = len(_stream(dataset).plan)
    for epoch in range(3):
        parts = []
        for rank in range(world_size):
            stream = _stream(dataset, rank=rank, world_size=world_size)
            for worker in range(workers):
                parts.append([i for chunk in stream.chunks(epoch, worker, workers) for i in chunk])
        flat = [i for part in parts for i in part]
        assert sorted(flat) == list(range(plan_size))  # each row group once per epoch
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) <= 1


def test_epochs_are_permuted_differently(dataset: Dataset) -> None:
    stream = _stream(dataset)
    assert stream.chunks(0, 0, 1) != stream.chunks(1, 0, 1)


def _round_robin(stream: TrainStream, workers: int, n: int) -> list[dict]:
    """What a DataLoader with ``workers`` yields from a fresh stream: batch b from stream b % W."""
    iterators = [stream.batches(w, workers) for w in range(workers)]
    return [next(iterators[b % workers]) for b in range(n)]


@pytest.mark.parametrize(("workers", "start"), [(1, 0), (1, 5), (1, 13), (2, 0), (2, 7), (3, 4)])
def test_resume_skips_to_the_same_batches(dataset: Dataset, workers: int, start: int) -> None:
    """Batches from ``start_batch`` on equal the uninterrupted stream's (per-worker streams)."""
    full = _round_robin(_stream(dataset), workers, start + 6)
    resumed = _stream(dataset, start_batch=start)
    iterators = {s: resumed.batches(s, workers) for s in range(workers)}
    tail = [next(iterators[b % workers]) for b in range(start, start + 6)]
    assert _same(full[start:], tail)


@pytest.mark.parametrize("start", [0, 3, 4])
def test_resume_through_a_dataloader_with_workers(dataset: Dataset, start: int) -> None:
    """A restarted DataLoader begins with worker 0; the stream rotates the workers' roles."""
    full = _round_robin(_stream(dataset), 2, start + 5)
    loader = iter(make_loader(_stream(dataset, start_batch=start), workers=2))
    tail = _take(loader, 5)
    del loader
    assert _same(full[start:], tail)


def test_resume_does_not_decode_skipped_frames(dataset: Dataset, monkeypatch) -> None:
    calls = {"decode": 0, "chunks": 0}
    original_decode = images.decode
    original_read = TrainStream._read_chunk

    def counting_decode(data, source=""):
        calls["decode"] += 1
        return original_decode(data, source)

    def counting_read(self, chunk):
        calls["chunks"] += 1
        return original_read(self, chunk)

    monkeypatch.setattr(images, "decode", counting_decode)
    monkeypatch.setattr(TrainStream, "_read_chunk", counting_read)
    next(iter(_stream(dataset, start_batch=40)))  # 320 frames: about 3 epochs skipped
    assert calls["decode"] == 8
    assert calls["chunks"] <= 2  # whole chunks before the position are not even read


def test_too_few_row_groups_for_the_ranks(dataset: Dataset) -> None:
    plan = _stream(dataset).plan
    assert usable_workers(len(plan) + 3, plan, 1) == len(plan)
    assert usable_workers(2, plan, 2) == 2
    with pytest.raises(DatasetError, match="cannot be split over"):
        usable_workers(1, plan, len(plan) + 1)


def test_frame_cameras_must_match_the_tracklet_table(tmp_path) -> None:
    root = str(tmp_path / "bad")
    with DatasetWriter(root, "synthetic", row_group_rows=4) as writer:
        for t, camera in enumerate([0, 1, 0, 1]):
            writer.add_frames(
                {
                    "tracklet_id": [t] * 2,
                    "frame_index": [0, 1],
                    "person_id": [t // 2 + 1] * 2,
                    "camera_id": [1 - camera] * 2,  # disagrees with the table below
                    "image": [b"x"] * 2,
                    "source_path": ["a", "b"],
                }
            )
        writer.finish(
            pd.DataFrame(
                {
                    "tracklet_id": range(4),
                    "person_id": [1, 1, 2, 2],
                    "camera_id": [0, 1, 0, 1],
                    "subset": ["train"] * 4,
                    "is_query": [False] * 4,
                    "num_frames": [2] * 4,
                    "name": list("abcd"),
                }
            )
        )
    with pytest.raises(DatasetError, match="frame camera ids do not match the tracklet table"):
        next(iter(_stream(Dataset.open(root))))


def test_a_split_that_does_not_exist(dataset: Dataset) -> None:
    with pytest.raises(DatasetError, match="has no splits"):
        build_index(dataset, 3)


def test_row_group_permutation_is_uniformish(dataset: Dataset) -> None:
    """Sanity of the seeded permutation: over many epochs each row group starts an epoch."""
    stream = _stream(dataset)
    firsts = {stream.chunks(e, 0, 1)[0][0] for e in range(60)}
    assert len(firsts) == len(stream.plan)


@pytest.mark.integration
@pytest.mark.slow
def test_s3_dataset_with_spawned_workers(s3_bucket: str) -> None:
    root = f"{s3_bucket}/ds"
    write_dataset(
        root, Spec(persons=3, cameras=2, frames=4, test_persons=0, row_group_rows=4, height=32, width=16)
    )
    dataset = Dataset.open(root)
    expected = _round_robin(_stream(dataset), 2, 4)
    loader = iter(make_loader(_stream(dataset), workers=2))
    got = _take(loader, 4)
    del loader
    assert _same(expected, got)

"""Training frames streamed from the stored dataset, in an order that a restart can reproduce.

Only the ``tracklet_id``, ``camera_id`` and ``image`` columns are read: DAL never sees person
ids. The supervised reference maps tracklets to person classes through the tracklet table.

Order: the row groups holding train frames are permuted per epoch with ``(seed, epoch)``; rank
``r`` of ``N`` takes every N-th of them, DataLoader worker ``w`` of ``W`` every W-th of those.
Each worker reads ``shuffle_buffer_row_groups`` row groups at a time (a "chunk"), shuffles
their frames together (a row group holds few tracklets) and draws the augmentation of every
frame, all seeded by ``(seed, epoch, row groups of the chunk)``. A worker's frame stream is
therefore a pure function of the seed and its position, so a restart skips the frames that
were already consumed, counting them from the row-group sizes without decoding anything.
Keying the randomness by the chunk (not by rank or worker) also makes a run with N ranks see
the same global batches as one process whenever the chunks coincide (used by the DDP test).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision.transforms.v2 import functional as tvf

from components.common import images
from components.common.dataset import Dataset, DatasetError, RowGroupRef, worker_start_method

log = logging.getLogger(__name__)

FRAME_COLUMNS = ("tracklet_id", "camera_id", "image")
RESIZE_UP = 1.125  # random crops are cut from a frame resized up by 1/8


@dataclasses.dataclass(frozen=True)
class TrainIndex:
    """The train tracklets: global tracklet id -> (camera, index among that camera's train tracklets)."""

    tracklets_per_camera: tuple[int, ...]
    camera_of: np.ndarray  # (T,) int64; -1: not a train tracklet
    local_of: np.ndarray  # (T,) int64; -1: not a train tracklet
    num_frames: int  # train frames, from the tracklet table
    class_of: np.ndarray | None = None  # (T,) person class 0..P-1 (supervised only), -1 elsewhere
    num_classes: int = 0

    @property
    def num_cameras(self) -> int:
        return len(self.tracklets_per_camera)

    def global_ids(self, camera: int) -> np.ndarray:
        """Global tracklet ids of ``camera``'s train tracklets, in local-index order."""
        ids = np.flatnonzero(self.camera_of == camera)
        return ids[np.argsort(self.local_of[ids], kind="stable")]


def build_index(dataset: Dataset, split: int, *, with_classes: bool = False) -> TrainIndex:
    """Index the train tracklets of ``split``; ``with_classes`` reads person ids (supervised only)."""
    train = dataset.subset_tracklets("train", split)  # raises for a split that does not exist
    if train.empty:
        raise DatasetError(f"{dataset.root}: no train tracklets (split {split})")
    total = int(dataset.manifest["counts"]["tracklets"])
    num_cameras = dataset.num_cameras
    cameras = train["camera_id"].to_numpy(np.int64)
    bad = cameras[(cameras < 0) | (cameras >= num_cameras)]
    if len(bad):
        raise DatasetError(
            f"{dataset.root}: train tracklets have camera {int(bad[0])}, but the manifest says "
            f"num_cameras={num_cameras}"
        )
    ids = train["tracklet_id"].to_numpy(np.int64)
    order = np.lexsort((ids, cameras))  # by camera, then by global id
    camera_of = np.full(total, -1, np.int64)
    local_of = np.full(total, -1, np.int64)
    camera_of[ids] = cameras
    counts = np.bincount(cameras, minlength=num_cameras)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    local_of[ids[order]] = np.arange(len(ids)) - starts[cameras[order]]
    class_of, num_classes = None, 0
    if with_classes:
        persons = train["person_id"].to_numpy(np.int64)
        unique, classes = np.unique(persons, return_inverse=True)
        class_of = np.full(total, -1, np.int64)
        class_of[ids] = classes
        num_classes = len(unique)
    return TrainIndex(
        tracklets_per_camera=tuple(int(c) for c in counts),
        camera_of=camera_of,
        local_of=local_of,
        num_frames=int(train["num_frames"].sum()),
        class_of=class_of,
        num_classes=num_classes,
    )


@dataclasses.dataclass(frozen=True)
class RowGroupPlan:
    """The row groups that hold train frames (storage order) and how many train frames each holds."""

    refs: tuple[RowGroupRef, ...]
    train_rows: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.refs)


def plan_row_groups(dataset: Dataset, index: TrainIndex) -> RowGroupPlan:
    """Skip row groups without train tracklets; count train rows (reads ids only where mixed)."""
    refs, rows = [], []
    for ref in dataset.row_groups():
        is_train = index.camera_of[ref.tracklet_min : ref.tracklet_max + 1] >= 0
        if not is_train.any():
            continue
        if is_train.all():
            count = ref.num_rows
        else:  # train and other tracklets share this row group: count its train rows
            ids = dataset.read_row_group(ref, ["tracklet_id"]).column("tracklet_id").to_numpy()
            count = int((index.camera_of[ids] >= 0).sum())
        if count:
            refs.append(ref)
            rows.append(count)
    if not refs:
        raise DatasetError(f"{dataset.root}: no frames of the train tracklets in the frame shards")
    return RowGroupPlan(tuple(refs), tuple(rows))


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """One frame's random augmentation, drawn ahead from the chunk's seeded generator."""

    flip: bool
    top: int  # crop offset in the resized-up frame
    left: int
    colour: np.ndarray | None  # a row of colour_jitter_params; None: no colour jitter


EncodedFrame = tuple[bytes, int, Augmentation]  # encoded image, global tracklet id, augmentation


@dataclasses.dataclass(frozen=True)
class StreamOptions:
    seed: int
    rank: int
    world_size: int
    batch_size: int  # frames per rank and step
    image_size: tuple[int, int]  # (height, width)
    augment: bool = True
    color_jitter: float = 0.0  # strength of the photometric augmentation (0: off); needs augment
    chunk_row_groups: int = 4
    start_batch: int = 0  # batches this rank already consumed (resume)
    with_labels: bool = False  # supervised reference: also yield person classes


class TrainStream(IterableDataset):
    """Yields ready batches: ``images`` (B, 3, H, W) float in [0, 1], ``tracklet`` (local id),
    ``camera`` and, with ``with_labels``, ``label`` (person class). Never ends: epochs chain."""

    def __init__(self, dataset: Dataset, plan: RowGroupPlan, index: TrainIndex, options: StreamOptions):
        super().__init__()
        self.dataset = dataset
        self.plan = plan
        self.index = index
        self.options = options

    # -- order: pure functions of (seed, epoch, position) ---------------------------------
    def chunks(self, epoch: int, stream: int, num_streams: int) -> list[tuple[int, ...]]:
        """Plan indices of the row groups that ``stream`` reads in ``epoch``, grouped into chunks."""
        o = self.options
        order = np.random.default_rng([o.seed, epoch]).permutation(len(self.plan))
        mine = order[o.rank :: o.world_size][stream::num_streams]
        size = o.chunk_row_groups
        return [tuple(int(i) for i in mine[k : k + size]) for k in range(0, len(mine), size)]

    def skipped_frames(self, stream: int, num_streams: int) -> int:
        """Frames ``stream`` produced before ``start_batch``: the DataLoader takes batches from its
        workers in turn, so worker ``w`` made batches w, w + W, ..."""
        start = self.options.start_batch
        produced = (start - stream + num_streams - 1) // num_streams if start > stream else 0
        return produced * self.options.batch_size

    def _chunk_random(self, epoch: int, chunk: tuple[int, ...], n: int) -> dict[str, np.ndarray]:
        o = self.options
        rng = np.random.default_rng([o.seed, epoch, *chunk])
        (height, width), (big_h, big_w) = o.image_size, _resized_up(o.image_size)
        pad_h, pad_w = big_h - height, big_w - width
        random = {
            "order": rng.permutation(n),
            "flip": rng.random(n) < 0.5,
            "top": rng.integers(0, pad_h + 1, n),
            "left": rng.integers(0, pad_w + 1, n),
        }
        if o.color_jitter > 0:
            random["colour"] = colour_jitter_params(rng, n, o.color_jitter)
        return random

    def _read_chunk(self, chunk: tuple[int, ...]) -> pa.Table:
        tables = []
        for i in chunk:
            ref = self.plan.refs[i]
            table = self.dataset.read_row_group(ref, FRAME_COLUMNS)
            ids = table.column("tracklet_id").to_numpy()
            keep = self.index.camera_of[ids] >= 0
            table = table.filter(pa.array(keep))
            cameras = table.column("camera_id").to_numpy().astype(np.int64)
            expected = self.index.camera_of[table.column("tracklet_id").to_numpy()]
            if not np.array_equal(cameras, expected):
                raise DatasetError(
                    f"{ref.shard_uri} row group {ref.row_group}: frame camera ids do not match "
                    "the tracklet table"
                )
            tables.append(table)
        return pa.concat_tables(tables)

    def frames(self, stream: int, num_streams: int) -> Iterator[EncodedFrame]:
        """The endless frame stream of one worker: (encoded image, global tracklet, augmentation)."""
        skip = self.skipped_frames(stream, num_streams)
        for epoch in itertools.count():
            chunks = self.chunks(epoch, stream, num_streams)
            if not chunks:
                raise DatasetError(
                    f"{self.dataset.root}: {len(self.plan)} row groups of train frames cannot feed "
                    f"{self.options.world_size} rank(s) x {num_streams} worker(s)"
                )
            for chunk in chunks:
                n = sum(self.plan.train_rows[i] for i in chunk)
                if skip >= n:  # resume: a chunk consumed before the restart is not even read
                    skip -= n
                    continue
                table = self._read_chunk(chunk)
                if table.num_rows != n:
                    raise DatasetError(f"{self.dataset.root}: frame shards changed while training")
                random = self._chunk_random(epoch, chunk, n)
                positions = np.arange(skip, n)
                skip = 0
                picked = table.take(pa.array(random["order"][positions]))
                encoded = picked.column("image").to_pylist()
                ids = pc.cast(picked.column("tracklet_id"), pa.int64()).to_numpy()
                flips, tops, lefts = (random[k][positions] for k in ("flip", "top", "left"))
                colours = random["colour"][positions] if "colour" in random else None
                for j in range(len(positions)):
                    augmentation = Augmentation(
                        bool(flips[j]), int(tops[j]), int(lefts[j]), None if colours is None else colours[j]
                    )
                    yield encoded[j], int(ids[j]), augmentation

    def _image(self, data: bytes, augmentation: Augmentation) -> torch.Tensor:
        o = self.options
        frame = images.decode(data, self.dataset.root)
        if not o.augment:
            return images.resize(frame, o.image_size)
        height, width = o.image_size
        big = images.resize(frame, _resized_up(o.image_size))
        top, left = augmentation.top, augmentation.left
        crop = big[:, top : top + height, left : left + width]
        crop = crop.flip(-1) if augmentation.flip else crop
        if augmentation.colour is not None:
            crop = apply_colour_jitter(crop, augmentation.colour)
        return crop

    def batches(self, stream: int, num_streams: int) -> Iterator[dict[str, torch.Tensor]]:
        size = self.options.batch_size
        frames = self.frames(stream, num_streams)
        while True:
            items = list(itertools.islice(frames, size))
            ids = np.array([item[1] for item in items], np.int64)
            batch = {
                "images": torch.stack([self._image(item[0], item[2]) for item in items]),
                "tracklet": torch.from_numpy(self.index.local_of[ids]),
                "camera": torch.from_numpy(self.index.camera_of[ids]),
            }
            if self.options.with_labels:
                assert self.index.class_of is not None
                batch["label"] = torch.from_numpy(self.index.class_of[ids])
            yield batch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        if info is None:
            return self.batches(0, 1)
        # A fresh DataLoader takes its first batch from worker 0, but after a restart at batch s
        # the next batch is stream s % W's: worker w plays stream (w + s) % W.
        stream = (info.id + self.options.start_batch) % info.num_workers
        return self.batches(stream, info.num_workers)


def colour_jitter_params(rng: np.random.Generator, n: int, strength: float) -> np.ndarray:
    """Per frame: brightness, contrast, saturation factors, a hue shift and three channel gains.

    The gains model a camera's white balance, the rest its exposure and colour rendering: the
    differences between cameras that cross-camera matching has to ignore.
    """
    s = strength
    factors = rng.uniform(1.0 - s, 1.0 + s, (n, 3))
    hue = rng.uniform(-s / 4, s / 4, (n, 1))  # torchvision's hue range is [-0.5, 0.5]
    gains = np.exp(rng.uniform(-s / 2, s / 2, (n, 3)))
    return np.concatenate([factors, hue, gains], axis=1).astype(np.float32)


def apply_colour_jitter(image: torch.Tensor, params: np.ndarray) -> torch.Tensor:
    """``image`` (3, H, W) float in [0, 1], jittered with one row of ``colour_jitter_params``."""
    brightness, contrast, saturation, hue, *gains = (float(x) for x in params)
    image = tvf.adjust_brightness(image, brightness)
    image = tvf.adjust_contrast(image, contrast)
    image = tvf.adjust_saturation(image, saturation)
    image = tvf.adjust_hue(image, hue)
    return (image * torch.tensor(gains, dtype=image.dtype).view(3, 1, 1)).clamp_(0.0, 1.0)


def _resized_up(size: tuple[int, int]) -> tuple[int, int]:
    return round(size[0] * RESIZE_UP), round(size[1] * RESIZE_UP)


def usable_workers(requested: int, plan: RowGroupPlan, world_size: int) -> int:
    """Workers that all get row groups every epoch (each rank needs at least one row group)."""
    if len(plan) < world_size:
        raise DatasetError(
            f"{len(plan)} row group(s) of train frames cannot be split over {world_size} ranks "
            "(ingest with smaller row groups)"
        )
    workers = min(requested, len(plan) // world_size)
    if workers < requested:
        log.warning(
            "only %d row groups per rank: using %d DataLoader workers", len(plan) // world_size, workers
        )
    return workers


def make_loader(stream: TrainStream, workers: int, *, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over ready batches (workers start as worker_start_method says)."""
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        multiprocessing_context=worker_start_method(stream.dataset.root, workers),
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers else None,
        pin_memory=pin_memory,
    )

"""``dal extract``: tracklet features of a trained model -> ``features.parquet``.

Frames of the requested tracklets stream out of the Parquet row groups (only row groups whose
tracklet range holds a requested tracklet are read), are decoded, resized to the model's input
size and normalised with its mean/std, and go through the backbone in inference mode (bf16
autocast and channels_last on CUDA); with ``flip`` each frame's feature is the mean of its and its
mirror's L2-normalised features (``model.embed``). Each frame feature is L2-normalised and folded into a
per-tracklet running max (or mean), so memory holds one (T, D) accumulator and never all frame
features. Under torchrun the ranks split the row groups, their accumulators are all-reduced,
and rank 0 writes the file.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from components.common import images
from components.common.dataset import Dataset, DatasetError, RowGroupRef, worker_start_method
from components.common.distributed import DistEnv, barrier, distributed
from components.common.features import Features, write_features
from components.common.tracking import step_run
from components.extract.config import ExtractConfig
from components.model.artifact import load_model
from components.model.embed import embed
from components.model.pooling import TrackletPooler

log = logging.getLogger(__name__)


def assign_row_groups(refs: list[RowGroupRef], world_size: int, rank: int) -> list[RowGroupRef]:
    """This rank's row groups: greedy by size onto the least-loaded rank (same on every rank)."""
    loads = [0] * world_size
    mine = []
    for index in sorted(range(len(refs)), key=lambda i: (-refs[i].num_rows, i)):
        target = min(range(world_size), key=lambda r: (loads[r], r))
        loads[target] += refs[index].num_rows
        if target == rank:
            mine.append(refs[index])
    return mine


class FrameBatches(IterableDataset):
    """Yields (images (B, 3, H, W) float in [0, 1], accumulator rows (B,), rows scanned).

    DataLoader workers split the row groups between them; a batch never spans row groups.
    """

    def __init__(
        self,
        dataset: Dataset,
        refs: list[RowGroupRef],
        tracklet_ids: np.ndarray,
        size: tuple[int, int],
        batch_size: int,
    ) -> None:
        self.root = dataset.root
        self.manifest = dataset.manifest
        self.refs = refs
        self.tracklet_ids = tracklet_ids
        self.size = size
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        worker = get_worker_info()
        refs = self.refs if worker is None else self.refs[worker.id :: worker.num_workers]
        dataset = Dataset(self.root, self.manifest)  # already validated by the caller
        for ref in refs:
            table = dataset.read_row_group(ref, ["tracklet_id", "image"])
            ids = table.column("tracklet_id").to_numpy()
            rows = np.searchsorted(self.tracklet_ids, ids).clip(max=len(self.tracklet_ids) - 1)
            keep = np.flatnonzero(self.tracklet_ids[rows] == ids)
            if len(keep) == 0:
                yield torch.empty(0, 3, *self.size), torch.empty(0, dtype=torch.int64), table.num_rows
                continue
            column = table.column("image").combine_chunks()
            for start in range(0, len(keep), self.batch_size):
                part = keep[start : start + self.batch_size]
                batch = torch.stack([self._load(column, int(i), ref, int(ids[i])) for i in part])
                scanned = table.num_rows if start + self.batch_size >= len(keep) else 0  # once per group
                yield batch, torch.from_numpy(rows[part].astype(np.int64)), scanned

    def _load(self, column: pa.Array, i: int, ref: RowGroupRef, tracklet: int) -> torch.Tensor:
        where = f"{ref.shard_uri} row group {ref.row_group}, tracklet {tracklet}"
        return images.resize(images.decode(column[i].as_buffer(), where), self.size)


def _loader(frames: FrameBatches, workers: int, device: torch.device) -> DataLoader:
    return DataLoader(
        frames,
        batch_size=None,
        num_workers=workers,
        multiprocessing_context=worker_start_method(frames.root, workers),
        pin_memory=device.type == "cuda",
    )


def _extract(config: ExtractConfig, env: DistEnv, dataset: Dataset) -> dict[str, Any]:
    tracklets = dataset.select_tracklets(config.subset, config.split)
    ids = tracklets["tracklet_id"].to_numpy(dtype=np.int64)
    model, info = load_model(config.model, env.device, tracking_uri=config.mlflow_tracking_uri)
    if env.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    refs = assign_row_groups(dataset.row_groups_holding(ids), env.world_size, env.rank)
    frames = FrameBatches(dataset, refs, ids, (info.image_height, info.image_width), config.batch_size)
    pooler = TrackletPooler(len(ids), info.feature_dim, config.pooling, env.device)
    log.info(
        "extracting %d %s tracklets of %s with %s (%s pooling%s) on %s, rank %d/%d: %d row groups",
        len(ids), config.subset, dataset.name, info.backbone, config.pooling,
        ", flip TTA" if config.flip else "", env.device, env.rank, env.world_size, len(refs),
    )  # fmt: skip
    started = time.perf_counter()
    total_rows = sum(ref.num_rows for ref in refs)
    bar = tqdm(total=total_rows, unit="frame", desc="extract", disable=not (config.progress and env.is_main))
    with bar, torch.inference_mode():
        for batch, rows, scanned in _loader(frames, config.workers, env.device):
            if len(rows):
                pooler.update(rows, embed(model, batch, info.mean, info.std, env.device, flip=config.flip))
            bar.update(scanned)
    pooler.all_reduce(env)
    seconds = time.perf_counter() - started
    counts = pooler.counts.cpu().numpy()
    expected = tracklets["num_frames"].to_numpy()
    if not np.array_equal(counts, expected):
        bad = int(np.flatnonzero(counts != expected)[0])
        raise DatasetError(
            f"{dataset.root}: tracklet {int(ids[bad])} has {int(counts[bad])} frames in the shards but "
            f"{int(expected[bad])} in tracklets.parquet"
        )
    num_frames = int(counts.sum())
    summary = {
        "output": config.output,
        "dataset": dataset.name,
        "subset": config.subset,
        "split": config.split,
        "pooling": config.pooling,
        "flip": config.flip,
        "num_tracklets": len(ids),
        "num_frames": num_frames,
        "feature_dim": info.feature_dim,
        "device": str(env.device),
        "world_size": env.world_size,
        "seconds": round(seconds, 3),
        "frames_per_s": round(num_frames / max(seconds, 1e-9), 1),
    }
    if env.is_main:
        features = Features(
            tracklet_id=ids,
            person_id=tracklets["person_id"].to_numpy(),
            camera_id=tracklets["camera_id"].to_numpy(),
            num_frames=counts,
            feature=pooler.result().cpu().numpy(),
            metadata={
                "dataset": config.dataset,
                "dataset_name": dataset.name,
                "model": config.model,
                "backbone": info.backbone,
                "image_size": [info.image_height, info.image_width],
                "subset": config.subset,
                "split": config.split,
                "pooling": config.pooling,
                "flip": config.flip,
                "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            },
        )
        write_features(config.output, features)
    return summary


def run(config: ExtractConfig) -> dict[str, Any]:
    with distributed(config.device) as env:
        with step_run("extract", config, enabled=env.is_main) as logger:
            dataset = Dataset.open(config.dataset)
            logger.log_dataset(dataset.name, dataset.root, dataset.digest, "inference")
            summary = _extract(config, env, dataset)
            logger.set_tags({"dal.dataset": summary["dataset"]})
            logger.log_metrics(
                {
                    k: summary[k]
                    for k in ("num_tracklets", "num_frames", "feature_dim", "frames_per_s", "seconds")
                }
            )
            summary["mlflow_run_id"] = logger.run_id
        barrier(env)  # rank 0 has written the file when any rank returns
    return summary

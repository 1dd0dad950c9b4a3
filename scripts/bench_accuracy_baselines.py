"""Baselines of the accuracy benchmark that learn nothing.

* ``colour_histogram``: per frame a joint RGB histogram (8 x 8 x 8 bins, normalised to sum 1),
  averaged over the tracklet's frames and L2-normalised: what pure colour matching scores;
* ``raw_pixels``: each frame resized to 16 x 8 pixels, averaged over the tracklet and
  L2-normalised (after removing the mean image): what matching the pixels themselves scores;
* ``untrained``: the benchmark's backbone with the seeded random init that training starts from
  (or ImageNet weights from a file), written as a ``model.pt`` for ``dal extract``.

The first two write a ``features.parquet`` in the format of ``dal extract`` so that ``dal
evaluate`` scores every method with the same code and protocol.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import torch
import torch.nn.functional as F

from components.common import images
from components.common.dataset import Dataset
from components.common.features import Features, write_features
from components.model.artifact import ModelInfo, save_model
from components.model.backbones import build_backbone, load_weights

HIST_BINS = 8  # per channel
PIXEL_SIZE = (16, 8)


def colour_histograms(frames: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) uint8 -> (N, 512) joint RGB histograms, each summing to 1."""
    shift = 8 - int(np.log2(HIST_BINS))
    bins = (frames.to(torch.int64) >> shift).numpy()
    index = (bins[:, 0] * HIST_BINS + bins[:, 1]) * HIST_BINS + bins[:, 2]  # (N, H, W)
    n = len(index)
    flat = (index.reshape(n, -1) + np.arange(n)[:, None] * HIST_BINS**3).ravel()
    counts = np.bincount(flat, minlength=n * HIST_BINS**3).reshape(n, HIST_BINS**3)
    return counts / counts.sum(1, keepdims=True)


def small_pixels(frames: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) uint8 -> (N, 3 * 16 * 8) pixels in [0, 1] of the frames resized to 16 x 8."""
    x = F.interpolate(frames.float() / 255.0, size=PIXEL_SIZE, mode="bilinear", antialias=True)
    return x.flatten(1).numpy()


FEATURES = {"colour_histogram": colour_histograms, "raw_pixels": small_pixels}


def handcrafted_features(dataset_uri: str, split: int, kind: str, output: str) -> dict[str, float]:
    """Per-tracklet mean of per-frame ``kind`` features of the test tracklets -> features.parquet."""
    frame_features = FEATURES[kind]
    dataset = Dataset.open(dataset_uri)
    tracklets = dataset.select_tracklets("test", split)
    ids = tracklets["tracklet_id"].to_numpy(np.int64)
    sums: np.ndarray | None = None
    counts = np.zeros(len(ids), np.int64)
    for ref in dataset.row_groups_holding(ids):
        table = dataset.read_row_group(ref, ["tracklet_id", "image"])
        tids = table.column("tracklet_id").to_numpy().astype(np.int64)
        keep = np.flatnonzero(np.isin(tids, ids))
        if not len(keep):
            continue
        column = table.column("image")
        decoded = [images.decode(column[int(i)].as_py(), ref.shard_uri) for i in keep]
        size = tuple(decoded[0].shape[-2:])
        frames = torch.stack([d if tuple(d.shape[-2:]) == size else _resized(d, size) for d in decoded])
        values = frame_features(frames)
        rows = np.searchsorted(ids, tids[keep])
        if sums is None:
            sums = np.zeros((len(ids), values.shape[1]))
        np.add.at(sums, rows, values)
        np.add.at(counts, rows, 1)
    assert sums is not None, "no test frames"
    means = sums / np.maximum(counts, 1)[:, None]
    if kind == "raw_pixels":
        means = means - means.mean(0, keepdims=True)  # the mean image says nothing about identity
    feature = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    write_features(
        output,
        Features(
            tracklet_id=ids,
            person_id=tracklets["person_id"].to_numpy(),
            camera_id=tracklets["camera_id"].to_numpy(),
            num_frames=counts,
            feature=feature.astype(np.float32),
            metadata={
                "dataset": dataset_uri,
                "dataset_name": dataset.name,
                "model": kind,
                "subset": "test",
                "split": split,
                "pooling": "mean",
                "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            },
        ),
    )
    return {"num_tracklets": len(ids), "num_frames": int(counts.sum())}


def _resized(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return (images.resize(image, size) * 255).round().to(torch.uint8)


def untrained_model(
    backbone: str, image_size: tuple[int, int], seed: int, output: str, weights: str = ""
) -> None:
    """``model.pt`` of the backbone as training starts it: the seeded random init (or ``weights``)."""
    torch.manual_seed(seed)  # as components.train.run.build_state
    model = build_backbone(backbone)
    if weights:
        load_weights(model, weights, backbone)
    info = ModelInfo(
        backbone=backbone,
        feature_dim=model.feature_dim,
        image_height=image_size[0],
        image_width=image_size[1],
        config={"init": weights or f"random (seed {seed})", "steps": 0},
    )
    save_model(output, model.eval(), info)

"""Where the association's anchors start: at zero (the reference's default) or at the initial
model's features of each train tracklet (the reference's ``--feature_dir`` alternative).

From zero, a tracklet has no anchor until its first frame is drawn, and until then its frames'
loss is pure repulsion: the distance to a zero anchor is a constant 1, so only "away from the
nearest other anchor" has a gradient. With ImageNet features and many tracklets per person and
camera (MARS: the nearest other anchor in the camera is the same person for ~3 in 4 tracklets),
that repulsion pushes a person's tracklets apart and wipes out the ImageNet features before the
anchors fill in (measured on the MARS benchmark subset: rank-1 12 % at step 0, 2-5 % from step
100 on). Starting every anchor at its tracklet's feature (frame features L2-normalised and
max-pooled, as ``dal extract`` computes it) gives each frame its own anchor as positive from the
first step, and makes ``eta`` a real moving-average rate.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from components.common.dataset import Dataset
from components.common.distributed import DistEnv
from components.model.catalog import DEFAULT_POOLING
from components.model.tracklet_features import TrackletFrames
from components.train.data import TrainIndex

log = logging.getLogger(__name__)


def initial_anchor_features(
    dataset: Dataset,
    index: TrainIndex,
    model: nn.Module,
    image_size: tuple[int, int],
    max_frames: int,
    env: DistEnv,
) -> list[torch.Tensor]:
    """Per camera, the (n_c, D) tracklet features of its train tracklets (``max_frames`` frames
    each, pooled as extraction pools), in the association's local order; computed on rank 0 and
    broadcast, so every rank holds the same."""
    per_camera = [index.global_ids(c) for c in range(index.num_cameras)]
    ids = np.sort(np.concatenate(per_camera))
    features = torch.empty(len(ids), int(model.feature_dim), device=env.device)
    if env.is_main:
        frames = TrackletFrames(dataset, ids, max_frames)
        log.info("anchors: features of %d train tracklets (%d frames)", len(ids), frames.num_frames)
        features = frames.features(model, image_size, env.device, DEFAULT_POOLING).to(torch.float32)
    if env.is_distributed:
        dist.broadcast(features, src=0)
    return [features[np.searchsorted(ids, camera_ids)] for camera_ids in per_camera]

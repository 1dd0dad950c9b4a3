"""Tracklet pooling of streamed frame features: a running max or mean in a (T, D) accumulator.

Frames arrive in any order and in batches that mix tracklets; only the accumulator (one row per
tracklet) is kept, never the frame features. As in the DAL release: frame features are
L2-normalised before pooling, and the pooled feature is L2-normalised again.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F

from components.common.distributed import DistEnv

Pooling = Literal["max", "mean"]


class TrackletPooler:
    def __init__(
        self, num_tracklets: int, feature_dim: int, mode: Pooling, device: torch.device | str
    ) -> None:
        if mode not in ("max", "mean"):
            raise ValueError(f"pooling must be max or mean, got {mode!r}")
        self.mode = mode
        fill = float("-inf") if mode == "max" else 0.0
        self.acc = torch.full((num_tracklets, feature_dim), fill, dtype=torch.float32, device=device)
        self.counts = torch.zeros(num_tracklets, dtype=torch.int64, device=device)

    def update(self, index: torch.Tensor, frame_features: torch.Tensor) -> None:
        """Fold a batch in: ``index`` (B,) rows of the accumulator, features (B, D) unnormalised."""
        index = index.to(self.acc.device, torch.int64)
        feats = F.normalize(frame_features.to(self.acc.device, torch.float32), dim=1)
        if self.mode == "max":
            self.acc.scatter_reduce_(0, index.unsqueeze(1).expand_as(feats), feats, "amax")
        else:
            self.acc.index_add_(0, index, feats)
        self.counts.index_add_(0, index, torch.ones_like(index))

    def all_reduce(self, env: DistEnv) -> None:
        """Merge the accumulators of every rank (each saw a disjoint set of frames)."""
        if not env.is_distributed:
            return
        dist.all_reduce(self.acc, op=dist.ReduceOp.MAX if self.mode == "max" else dist.ReduceOp.SUM)
        dist.all_reduce(self.counts, op=dist.ReduceOp.SUM)

    def result(self) -> torch.Tensor:
        """Pooled, L2-normalised (T, D) features; rows of tracklets without frames are zero."""
        seen = (self.counts > 0).unsqueeze(1)
        if self.mode == "max":
            pooled = torch.where(seen, self.acc, torch.zeros_like(self.acc))
        else:
            pooled = self.acc / self.counts.clamp(min=1).unsqueeze(1).to(self.acc.dtype)
        return F.normalize(pooled, dim=1)

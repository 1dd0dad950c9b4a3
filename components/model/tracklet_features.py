"""Pooled tracklet features of a model over frames of a stored dataset, held in memory.

What the periodic evaluation during training and the anchor initialisation share: the encoded
frames of some tracklets (at most ``max_frames`` each, evenly spaced over the tracklet) are read
once and kept (their compressed size); ``features(model)`` decodes, embeds and pools them, as
often as needed. ``dal extract`` streams instead (any dataset size, DataLoader workers, ranks).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from components.common import images
from components.common.dataset import Dataset
from components.model.artifact import IMAGENET_MEAN, IMAGENET_STD
from components.model.embed import embed
from components.model.pooling import Pooling, TrackletPooler

BATCH_FRAMES = 256
_KEY = 1 << 32  # frame indices are int32


def spaced_positions(num_frames: int, max_frames: int) -> np.ndarray:
    """``max_frames`` frame indices spread evenly over ``0..num_frames - 1`` (all when 0 or more)."""
    if max_frames <= 0 or num_frames <= max_frames:
        return np.arange(num_frames)
    return np.unique(np.linspace(0, num_frames - 1, max_frames).round().astype(np.int64))


class TrackletFrames:
    """The frames of ``tracklet_ids`` (sorted, unique), ``max_frames`` per tracklet (0: all)."""

    def __init__(self, dataset: Dataset, tracklet_ids: np.ndarray, max_frames: int) -> None:
        ids = np.asarray(tracklet_ids, np.int64)
        if len(ids) and not (np.diff(ids) > 0).all():
            raise ValueError("TrackletFrames: tracklet_ids must be sorted and unique")
        self.tracklet_ids = ids
        table: pd.DataFrame = dataset.tracklets().set_index("tracklet_id")
        lengths = table.loc[ids, "num_frames"].to_numpy(np.int64)
        # One int64 key per wanted frame: (tracklet id, frame index), matched vectorised per row group.
        parts = [t * _KEY + spaced_positions(int(n), max_frames) for t, n in zip(ids, lengths, strict=True)]
        wanted = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        self.encoded: list[bytes] = []
        rows: list[np.ndarray] = []
        for ref in dataset.row_groups_holding(ids):
            part = dataset.read_row_group(ref, ["tracklet_id", "frame_index", "image"])
            tids = part.column("tracklet_id").to_numpy().astype(np.int64)
            keys = tids * _KEY + part.column("frame_index").to_numpy().astype(np.int64)
            keep = np.flatnonzero(np.isin(keys, wanted))
            column = part.column("image")
            self.encoded.extend(column[int(i)].as_py() for i in keep)
            rows.append(np.searchsorted(ids, tids[keep]))
        self.rows = torch.from_numpy(np.concatenate(rows) if rows else np.zeros(0, np.int64))

    @property
    def num_frames(self) -> int:
        return len(self.encoded)

    def features(
        self,
        model: nn.Module,
        image_size: tuple[int, int],
        device: torch.device,
        pooling: Pooling = "max",
    ) -> torch.Tensor:
        """(T, D) pooled, L2-normalised features by ``model`` (a backbone; left in its mode)."""
        was_training = model.training
        model.eval()
        pooler = TrackletPooler(len(self.tracklet_ids), int(model.feature_dim), pooling, device)
        try:
            with torch.inference_mode():
                for start in range(0, self.num_frames, BATCH_FRAMES):
                    stop = min(start + BATCH_FRAMES, self.num_frames)
                    batch = torch.stack(
                        [
                            images.resize(images.decode(data, "frame"), image_size)
                            for data in self.encoded[start:stop]
                        ]
                    )
                    pooler.update(
                        self.rows[start:stop], embed(model, batch, IMAGENET_MEAN, IMAGENET_STD, device)
                    )
        finally:
            model.train(was_training)
        return pooler.result()

"""Training metrics that rank 0 logs: running means, throughput and association precision.

Association precision is MONITORING ONLY: it reads the person ids of the train tracklets from
the tracklet table to score the cyclic matches that DAL found without them. Nothing here
feeds the loss or the anchors.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import Tensor

from components.common.dataset import Dataset
from components.train.association import AnchorAssociation
from components.train.config import dataset_key
from components.train.data import TrainIndex


class RunningMeans:
    """Sums detached metric tensors on their device (no sync per step); ``pop`` returns the means.

    Sums are float64, so a logged value is the exact mean of what the steps computed.
    """

    def __init__(self) -> None:
        self._sums: dict[str, Tensor] = {}
        self._count = 0

    def add(self, metrics: dict[str, Tensor]) -> None:
        for key, value in metrics.items():
            value = value.detach().double()
            self._sums[key] = self._sums[key] + value if key in self._sums else value.clone()
        self._count += 1

    def pop(self) -> dict[str, float]:
        if not self._count:
            return {}
        keys = list(self._sums)
        values = (torch.stack([self._sums[k] for k in keys]) / self._count).tolist()  # one sync
        self._sums, self._count = {}, 0
        return dict(zip(keys, values, strict=True))


class Throughput:
    """Frames per second (global batch) since the previous ``pop``, data loading included."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._frames = 0
        self.total_frames = 0
        self.total_seconds = 0.0

    def add(self, frames: int) -> None:
        self._frames += frames

    def pop(self) -> float:
        now = time.perf_counter()
        elapsed = max(now - self._start, 1e-9)
        rate = self._frames / elapsed
        self.total_frames += self._frames
        self.total_seconds += elapsed
        self._start, self._frames = now, 0
        return rate

    def restart_clock(self) -> None:
        """Leave out time spent since ``pop`` (monitoring, logging) from the next rate."""
        self._start = time.perf_counter()

    @property
    def mean(self) -> float:
        return self.total_frames / self.total_seconds if self.total_seconds else 0.0


class AssociationMonitor:
    """Scores the association's cyclic matches against person ids (monitoring only).

    ``association_precision``: of the tracklets whose cyclic ranking is consistent, the share
    whose cross-camera match is the same person. Tracklets of unknown persons (MARS: 0
    distractor, -1 junk; elsewhere -1) are left out. ``chance`` is the precision of a match
    drawn uniformly from the other cameras' train tracklets.
    """

    def __init__(self, dataset: Dataset, index: TrainIndex, split: int) -> None:
        tracklets = dataset.subset_tracklets("train", split)
        person_of = np.full(len(index.camera_of), -1, np.int64)
        person_of[tracklets["tracklet_id"].to_numpy(np.int64)] = tracklets["person_id"].to_numpy(np.int64)
        # Rows in the association's camera-major, local-index order.
        persons = np.concatenate([person_of[index.global_ids(c)] for c in range(index.num_cameras)])
        floor = 1 if dataset_key(dataset.name) == "mars" else 0
        self.known = torch.from_numpy(persons >= floor)
        self.persons = torch.from_numpy(persons)
        self.offsets = torch.tensor([0, *np.cumsum(index.tracklets_per_camera)], dtype=torch.int64)
        cameras = np.repeat(np.arange(index.num_cameras), index.tracklets_per_camera)
        self.chance = _chance(persons, cameras, persons >= floor)

    @property
    def has_persons(self) -> bool:
        """False when no train tracklet has a known person: nothing to score against."""
        return bool(self.known.any())

    def __call__(self, association: AnchorAssociation) -> dict[str, float]:
        match = association.cyclic_matches()
        rows = (self.offsets[match.camera_ids.cpu()] + match.tracklet_ids.cpu()).numpy()
        matched = (self.offsets[match.matched_camera_ids.cpu()] + match.matched_tracklet_ids.cpu()).numpy()
        consistent = match.consistent.cpu().numpy()
        known = self.known.numpy()
        persons = self.persons.numpy()
        valid = known[rows] & known[matched]
        same = persons[rows] == persons[matched]
        scored = valid & consistent
        return {
            "association_precision": float(same[scored].mean()) if scored.any() else 0.0,
            "match_precision_all": float(same[valid].mean()) if valid.any() else 0.0,
            "consistent_tracklets": float(consistent.mean()),
        }


def _chance(persons: np.ndarray, cameras: np.ndarray, known: np.ndarray) -> float:
    """Mean over known tracklets of the share of known other-camera tracklets of the same person."""
    rates = []
    for c in np.unique(cameras):
        others = persons[(cameras != c) & known]
        if len(others) == 0:
            continue
        values, counts = np.unique(others, return_counts=True)
        share = dict(zip(values.tolist(), (counts / len(others)).tolist(), strict=True))
        rates.extend(share.get(int(p), 0.0) for p in persons[(cameras == c) & known])
    return float(np.mean(rates)) if rates else 0.0

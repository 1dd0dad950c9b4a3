"""Training metrics that rank 0 logs: running means, throughput and the association's state.

The association monitor reports label-free diagnostics on every dataset (the share of
cyclically consistent tracklets, how close each anchor's nearest other anchor in its camera is,
how close the cross-camera matches are) and, where the train tracklets have person ids,
association precision: MONITORING ONLY, it reads those ids to score the cyclic matches that DAL
found without them. Users' own footage usually has no ids: then only the label-free part is
logged. Nothing here feeds the loss or the anchors.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import Tensor

from components.common.dataset import Dataset
from components.train.association import AnchorAssociation, l2_normalize
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
    """The association's state from its anchors; scored against person ids where there are any.

    Label-free, always: ``consistent_tracklets`` (share of tracklets whose cyclic ranking is
    consistent, i.e. that get a cross-camera anchor), ``anchor_nearest_similarity`` (mean cosine
    similarity of each intra-camera anchor to the nearest other one of its camera: near 1, the
    anchors of a camera collapse; low, they spread) and ``cross_match_similarity`` (mean cosine
    similarity of each tracklet's anchor to its cross-camera match, over the consistent ones).
    With person ids: ``association_precision``: of the tracklets whose cyclic ranking is
    consistent, the share whose cross-camera match is the same person. Tracklets of unknown persons
    (MARS: 0 distractor, -1 junk; elsewhere -1, own footage's unlabelled) are left out. ``chance``
    is the precision of a match drawn uniformly from the other cameras' train tracklets.
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
        scores = {"consistent_tracklets": float(consistent.mean()), **anchor_statistics(association)}
        anchors = l2_normalize(torch.cat(association.intra_anchors).detach().double()).cpu()
        if consistent.any():
            cosine = (anchors[rows[consistent]] * anchors[matched[consistent]]).sum(1)
            scores["cross_match_similarity"] = float(cosine.mean())
        if not self.has_persons:
            return scores
        known = self.known.numpy()
        persons = self.persons.numpy()
        valid = known[rows] & known[matched]
        same = persons[rows] == persons[matched]
        scored = valid & consistent
        return {
            "association_precision": float(same[scored].mean()) if scored.any() else 0.0,
            "match_precision_all": float(same[valid].mean()) if valid.any() else 0.0,
            **scores,
        }


def anchor_statistics(association: AnchorAssociation) -> dict[str, float]:
    """``anchor_nearest_similarity``: the mean over tracklets of the cosine similarity of its intra-camera
    anchor to the nearest other anchor of its camera (cameras with one tracklet have none, left out).
    One camera's (T_c, T_c) similarity matrix at a time: MARS's largest camera is ~2k tracklets."""
    nearest = []
    for anchors in association.intra_anchors:
        if anchors.shape[0] < 2:
            continue
        unit = l2_normalize(anchors.detach().double())
        similarity = unit @ unit.T
        similarity.fill_diagonal_(-float("inf"))
        nearest.append(similarity.max(1).values.cpu())
    return {"anchor_nearest_similarity": float(torch.cat(nearest).mean())} if nearest else {}


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

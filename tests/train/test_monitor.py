"""Monitoring: association precision against person ids (never used by the loss), running means."""

from __future__ import annotations

import pytest
import torch

from components.common.dataset import Dataset
from components.train.association import AnchorAssociation
from components.train.data import build_index
from components.train.monitor import AssociationMonitor, RunningMeans, Throughput
from tests.train.test_support import Spec, write_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    root = str(tmp_path_factory.mktemp("monitor") / "ds")
    write_dataset(root, Spec(persons=4, cameras=2, frames=2, test_persons=1, height=16, width=8))
    return Dataset.open(root)


def test_precision_counts_consistent_matches_of_the_same_person(dataset: Dataset) -> None:
    index = build_index(dataset, 0)
    monitor = AssociationMonitor(dataset, index, 0)
    assert monitor.chance == pytest.approx(0.25)  # 4 persons seen by the other camera
    association = AnchorAssociation(index.tracklets_per_camera, 4, distributed=False)
    eye = torch.eye(4)
    # Local index == person rank. Camera 1 swaps persons 3 and 4: every cyclic ranking is
    # consistent, but only persons 1 and 2 are matched correctly, in both cameras.
    association.init_anchors([eye, eye[[0, 1, 3, 2]]])
    scores = monitor(association)
    assert scores["consistent_tracklets"] == 1.0
    assert scores["association_precision"] == pytest.approx(0.5)
    assert scores["match_precision_all"] == pytest.approx(0.5)


def test_precision_ignores_inconsistent_matches(dataset: Dataset) -> None:
    index = build_index(dataset, 0)
    monitor = AssociationMonitor(dataset, index, 0)
    association = AnchorAssociation(index.tracklets_per_camera, 4, distributed=False)
    eye = torch.eye(4)
    # Camera 1's tracklets all look like person 1: from camera 0 only person 1 ranks back to itself.
    association.init_anchors([eye, torch.stack([eye[0] + 0.01 * eye[k] for k in range(4)])])
    scores = monitor(association)
    assert scores["association_precision"] == 1.0  # person 1 <-> person 1, the consistent pair
    assert scores["consistent_tracklets"] < 1.0


def test_running_means_and_throughput() -> None:
    means = RunningMeans()
    means.add({"loss": torch.tensor(1.0), "x": torch.tensor(4.0)})
    means.add({"loss": torch.tensor(3.0), "x": torch.tensor(0.0)})
    assert means.pop() == {"loss": 2.0, "x": 2.0}
    assert means.pop() == {}
    speed = Throughput()
    speed.add(64)
    assert speed.pop() > 0 and speed.mean > 0


def test_label_free_diagnostics_without_person_ids(tmp_path) -> None:
    """Own footage without labels: the anchors' state is reported, precision is not (nothing to score)."""
    root = str(tmp_path / "unlabelled")
    write_dataset(root, Spec(persons=4, cameras=2, frames=2, test_persons=1, height=16, width=8))
    tracklets = Dataset.open(root).tracklets()
    tracklets["person_id"] = -1
    dataset = Dataset.open(root)
    dataset.tracklets = lambda: tracklets  # the same dataset, its labels gone
    index = build_index(dataset, 0)
    monitor = AssociationMonitor(dataset, index, 0)
    assert not monitor.has_persons
    association = AnchorAssociation(index.tracklets_per_camera, 4, distributed=False)
    eye = torch.eye(4)
    # Camera 1's anchor 1 is (1, 1, 0, 0)/sqrt2: 45 degrees from anchors 0 and 1 of camera 0.
    second = eye.clone()
    second[1] = torch.tensor([1.0, 1.0, 0.0, 0.0])
    association.init_anchors([eye, second])
    scores = monitor(association)
    assert "association_precision" not in scores and "match_precision_all" not in scores
    # Camera 0: orthogonal anchors (nearest other: 0); camera 1: anchors 0 and 1 at cos 1/sqrt2.
    expected = (0 * 4 + 2 * 2**-0.5 + 0 * 2) / 8
    assert scores["anchor_nearest_similarity"] == pytest.approx(expected)
    assert 0.0 < scores["consistent_tracklets"] <= 1.0
    assert 0.0 < scores["cross_match_similarity"] <= 1.0

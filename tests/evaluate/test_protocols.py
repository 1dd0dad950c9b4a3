"""Protocols: MARS query/gallery sets (also on the real MARS structure) and the 10-split protocol."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.evaluate import metrics as M
from components.evaluate.protocols import (
    NoLabelsError,
    ProtocolError,
    build_eval_set,
    mars_protocol,
    protocol_for,
    rows_of,
    split_protocol,
)
from tests.extract.helpers import prid_splits


def _tracklets(rows: list[tuple[int, int, str, bool]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "tracklet_id": range(len(rows)),
            "person_id": [r[0] for r in rows],
            "camera_id": [r[1] for r in rows],
            "subset": [r[2] for r in rows],
            "is_query": [r[3] for r in rows],
            "num_frames": 3,
            "name": [f"t{i}" for i in range(len(rows))],
        }
    )


MARS_LIKE = _tracklets(
    [
        (1, 0, "train", False),
        (1, 1, "train", False),
        (5, 0, "test", True),
        (5, 1, "test", False),
        (0, 2, "test", False),
    ]
    + [(6, 1, "test", True), (6, 0, "test", False), (-1, 0, "test", False)]
)
PRID_LIKE = _tracklets([(p, c, "train" if p <= 4 else "test", False) for p in range(1, 9) for c in (0, 1)])


@pytest.mark.parametrize(
    ("name", "expected"),
    [("mars", "mars"), ("MARS", "mars"), ("synthetic-mars", "mars"), ("prid2011", "splits")]
    + [("iLIDS-VID", "splits"), ("ilidsvid", "splits"), ("synthetic_prid2011", "splits")],
)
def test_protocol_follows_the_dataset_name(name: str, expected: str) -> None:
    assert protocol_for(name) == expected


def test_unknown_dataset_needs_an_explicit_protocol() -> None:
    with pytest.raises(ProtocolError, match="no known evaluation protocol"):
        protocol_for("market1501")
    assert protocol_for("market1501", "mars") == "mars"


def test_mars_protocol_queries_against_the_whole_test_set() -> None:
    eval_set = mars_protocol(MARS_LIKE)
    assert eval_set.query["tracklet_id"].tolist() == [2, 5]
    assert eval_set.gallery["tracklet_id"].tolist() == [2, 3, 4, 5, 6, 7]
    assert (eval_set.protocol, eval_set.split, eval_set.direction) == ("mars", 0, "forward")


def test_split_protocol_probe_camera_one_gallery_camera_two() -> None:
    splits = prid_splits()
    forward = split_protocol(PRID_LIKE, splits, 0)
    assert forward.query["person_id"].tolist() == [5, 6, 7, 8]
    assert set(forward.query["camera_id"]) == {0} and set(forward.gallery["camera_id"]) == {1}
    assert forward.gallery["person_id"].tolist() == [5, 6, 7, 8]
    reverse = split_protocol(PRID_LIKE, splits, 0, "reverse")
    assert set(reverse.query["camera_id"]) == {1} and set(reverse.gallery["camera_id"]) == {0}
    other = split_protocol(PRID_LIKE, splits, 2)
    expected = sorted(splits.query("split == 2 and role == 'test'")["person_id"])
    assert sorted(other.query["person_id"]) == expected != [5, 6, 7, 8]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "prid2011", "tracklets": PRID_LIKE, "splits": None}, "no splits table"),
        (
            {"name": "prid2011", "tracklets": PRID_LIKE, "split": 7},
            r"split 7 does not exist \(available: \[0, 1, 2\]\)",
        ),
        ({"name": "mars", "tracklets": PRID_LIKE}, "it has train/test splits"),
        ({"name": "mars", "tracklets": PRID_LIKE, "splits": None}, "marks no query tracklets"),
        ({"name": "mars", "tracklets": MARS_LIKE, "splits": None, "split": 3}, "single split"),
        (
            {"name": "mars", "tracklets": MARS_LIKE, "splits": None, "direction": "reverse"},
            "splits protocol only",
        ),
        ({"name": "prid2011", "tracklets": MARS_LIKE}, "exactly two cameras"),
    ],
)
def test_protocol_that_does_not_fit_the_dataset(kwargs: dict, message: str) -> None:
    kwargs = {"splits": prid_splits(), **kwargs}
    name, tracklets, splits = kwargs.pop("name"), kwargs.pop("tracklets"), kwargs.pop("splits")
    with pytest.raises(ProtocolError, match=message):
        build_eval_set(name, tracklets, splits, **kwargs)


def test_rows_of_names_missing_tracklets() -> None:
    ids = np.array([10, 3, 7])
    assert rows_of(ids, np.array([7, 10]), "query", "f.parquet").tolist() == [2, 0]
    with pytest.raises(
        ProtocolError, match="f.parquet: 1 of the 2 gallery tracklets are missing.*tracklet_id 4"
    ):
        rows_of(ids, np.array([3, 4]), "gallery", "f.parquet")


def test_real_mars_structure_with_synthetic_features(reference_dir) -> None:
    from components.ingest.datasets.reference import load_mars_info

    info = load_mars_info(reference_dir / "info")
    is_query = np.zeros(len(info.test), dtype=bool)
    is_query[info.query_rows] = True
    rows = [
        (int(p), int(c) - 1, "test", bool(q)) for (_, _, p, c), q in zip(info.test, is_query, strict=True)
    ]
    eval_set = mars_protocol(_tracklets(rows))
    assert (len(eval_set.query), len(eval_set.gallery)) == (1980, 12180)
    q_pids, g_pids = eval_set.query["person_id"].to_numpy(), eval_set.gallery["person_id"].to_numpy()
    q_cams, g_cams = eval_set.query["camera_id"].to_numpy(), eval_set.gallery["camera_id"].to_numpy()
    q_rows = eval_set.query["tracklet_id"].to_numpy()

    # One direction per person (distractors share one, junk another): perfect features.
    rng = np.random.default_rng(0)
    persons = np.unique(g_pids)
    directions = rng.normal(size=(len(persons), 64)).astype(np.float32)
    base = directions[np.searchsorted(persons, g_pids)]
    perfect = M.evaluate_features(base[q_rows], base, q_pids, g_pids, q_cams, g_cams)
    assert perfect["num_queries_without_match"] == 0 and perfect["num_gallery"] == 12180
    assert (perfect["rank1"], perfect["mAP"], perfect["mAP_trapezoid"]) == (1.0, 1.0, 1.0)

    # Noisy features: the fast path agrees with the per-query loop on a sample of real queries.
    noisy = base + rng.normal(scale=1.5, size=base.shape).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    full = M.evaluate_features(noisy[q_rows], noisy, q_pids, g_pids, q_cams, g_cams, per_query=True)
    assert 0.05 < full["mAP"] < 0.95 and full["mAP_trapezoid"] < full["mAP"]
    sample = np.arange(0, 1980, 15)
    distmat = M.pairwise_distances(noisy[q_rows[sample]], noisy)
    loop = M.evaluate_rank_loop(distmat, q_pids[sample], g_pids, q_cams[sample], g_cams, per_query=True)
    for key in ("ap", "ap_trapezoid", "first_rank"):
        np.testing.assert_allclose(full["per_query"][key][sample], loop["per_query"][key], rtol=1e-6)


# Own footage: labelled test tracklets (person > 0) form the gallery; persons seen in 2 cameras query.
OWN = _tracklets(
    [
        (-1, 0, "train", False),  # unlabelled: trains DAL, never scored
        (-1, 1, "train", False),
        (1, 0, "test", False),  # person 1: cameras 0 and 1 -> both are queries
        (1, 1, "test", False),
        (1, 1, "test", False),
        (2, 0, "test", False),  # person 2: camera 0 only -> gallery, not a query
        (3, 1, "test", False),  # person 3: camera 1 only
        (4, 0, "train", False),  # labelled but trained on (an index file's subset column): not scored
    ]
)


@pytest.mark.parametrize("name", ["tracklets", "videos", "synthetic-tracklets"])
def test_own_footage_follows_the_labelled_protocol(name: str) -> None:
    assert protocol_for(name) == "labelled"


def test_labelled_protocol_queries_persons_seen_by_two_cameras() -> None:
    eval_set = build_eval_set("tracklets", OWN, None)
    assert eval_set.protocol == "labelled"
    assert eval_set.query["tracklet_id"].tolist() == [2, 3, 4]
    assert eval_set.gallery["tracklet_id"].tolist() == [2, 3, 4, 5, 6]
    # The MARS junk rule drops the query itself and its person in its own camera: tracklet 3's good
    # match is tracklet 2 only (tracklet 4 is the same person in the same camera).
    ranked = M.evaluate_features(
        np.eye(7)[[2, 3, 4]],
        np.eye(7)[[2, 3, 4, 5, 6]] + np.eye(7)[[3, 2, 2, 0, 0]] * 0.5,
        eval_set.query["person_id"].to_numpy(),
        eval_set.gallery["person_id"].to_numpy(),
        eval_set.query["camera_id"].to_numpy(),
        eval_set.gallery["camera_id"].to_numpy(),
        5,
    )
    assert ranked["cmc"][0] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([(-1, 0, "train", False), (-1, 1, "train", False)], "no labelled test tracklets"),
        ([(-1, 0, "train", False), (1, 0, "test", False), (2, 1, "test", False)], "no person is labelled"),
    ],
)
def test_labelled_protocol_without_labels_says_why(rows: list, message: str) -> None:
    with pytest.raises(NoLabelsError, match=message):
        build_eval_set("tracklets", _tracklets(rows), None)


def test_labelled_protocol_has_one_split_and_one_direction() -> None:
    with pytest.raises(ProtocolError, match="single split"):
        build_eval_set("tracklets", OWN, None, split=1)
    with pytest.raises(ProtocolError, match="reverse"):
        build_eval_set("tracklets", OWN, None, direction="reverse")

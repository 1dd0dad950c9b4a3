"""Split reading and generation, and the protocols checked against the real reference structure.

The real DAL split lists and MARS info tables come from ``../shared/data/dal-reference`` through the
``reference_dir`` fixture, which skips with a reason when they are absent.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest

from components.common.errors import DalError
from components.ingest.datasets import ilidsvid, mars, prid2011
from components.ingest.datasets import splits as splits_lib
from components.ingest.datasets.base import LayoutError
from components.ingest.datasets.reference import load_mars_info
from tests.ingest.test_readers import write_split_lists


def test_generated_splits_are_seeded_halves() -> None:
    persons = [5, 3, 9, 1, 7, 11, 2]
    splits = splits_lib.generate_splits(persons, num_splits=10, seed=1)
    assert list(splits.columns) == ["split", "person_id", "role"]
    assert sorted(splits.split.unique()) == list(range(10))
    for _, group in splits.groupby("split"):
        assert sorted(group.person_id) == sorted(persons)
        assert (group.role == "train").sum() == 3 and (group.role == "test").sum() == 4
    assert splits.equals(splits_lib.generate_splits(list(reversed(persons)), num_splits=10, seed=1))
    assert not splits.equals(splits_lib.generate_splits(persons, num_splits=10, seed=2))
    trains = {tuple(sorted(g[g.role == "train"].person_id)) for _, g in splits.groupby("split")}
    assert len(trains) > 1  # the splits differ from one another
    with pytest.raises(LayoutError, match="cannot split 1 person"):
        splits_lib.generate_splits([4])


def test_split_lists_are_read_by_person_folder(tmp_path: Path) -> None:
    lists = write_split_lists(
        tmp_path / "lists",
        [(["person_0003", "person_0010"], ["person_0001", "person_0002"]),
         (["person_0001", "person_0002"], ["person_0003", "person_0010"])],
    )  # fmt: skip
    splits = splits_lib.read_split_lists(str(lists), prid2011.person_id_of)
    assert splits.values.tolist() == [
        [0, 1, "test"], [0, 2, "test"], [0, 3, "train"], [0, 10, "train"],
        [1, 3, "test"], [1, 10, "test"], [1, 1, "train"], [1, 2, "train"],
    ]  # fmt: skip
    assert splits_lib.roles(splits, 1) == {1: "train", 2: "train", 3: "test", 10: "test"}


def test_split_list_errors_name_the_file(tmp_path: Path) -> None:
    overlap = write_split_lists(tmp_path / "a", [(["person_0001", "person_0002"], ["person_0002"])])
    with pytest.raises(LayoutError, match=r"a/split1: person\(s\) \[2\] in traindata and testdata"):
        splits_lib.read_split_lists(str(overlap), prid2011.person_id_of)
    differ = write_split_lists(
        tmp_path / "b", [(["person_0001"], ["person_0002"]), (["person_0001"], ["person_0003"])]
    )
    with pytest.raises(LayoutError, match="b/split2: its persons differ from split1's"):
        splits_lib.read_split_lists(str(differ), prid2011.person_id_of)
    with pytest.raises(LayoutError, match="c: no split1..splitK folders"):
        splits_lib.read_split_lists(str(tmp_path / "c"), prid2011.person_id_of)
    gap = write_split_lists(tmp_path / "d", [(["person_0001"], ["person_0002"])])
    (gap / "split1").rename(gap / "split2")
    with pytest.raises(LayoutError, match="without gaps"):
        splits_lib.read_split_lists(str(gap), prid2011.person_id_of)
    broken = write_split_lists(tmp_path / "e", [(["person_0001"], ["person_0002"])])
    (broken / "split1" / "testdata.txt").write_text("cam1/person_0002/0001.png 1 1\n")
    with pytest.raises(DalError, match="e/split1/testdata.txt:1: expected"):
        splits_lib.read_split_lists(str(broken), prid2011.person_id_of)
    (broken / "split1" / "testdata.txt").unlink()
    with pytest.raises(DalError, match="e/split1/testdata.txt: split list not found"):
        splits_lib.read_split_lists(str(broken), prid2011.person_id_of)
    wrong = write_split_lists(tmp_path / "f", [(["person001"], ["person002"])])
    with pytest.raises(
        LayoutError, match="f/split1/traindata.txt: 'person001' is not a PRID2011 person folder"
    ):
        splits_lib.read_split_lists(str(wrong), prid2011.person_id_of)


def test_ilids_mat_rows_must_be_permutations(tmp_path: Path) -> None:
    import scipy.io

    path = tmp_path / "s.mat"
    scipy.io.savemat(path, {"ls_set": np.array([[1, 2, 2, 4]], dtype=np.float64)})
    with pytest.raises(LayoutError, match="s.mat: row 1 of ls_set is not a permutation of 1..4"):
        splits_lib.read_ilidsvid_split_mat(str(path), [10, 20, 30, 40])
    scipy.io.savemat(path, {"other": np.ones((1, 4))})
    with pytest.raises(DalError, match="s.mat: variable 'ls_set' not found"):
        splits_lib.read_ilidsvid_split_mat(str(path), [10, 20, 30, 40])
    scipy.io.savemat(path, {"ls_set": np.array([[4, 1, 3, 2]], dtype=np.float64)})
    splits = splits_lib.read_ilidsvid_split_mat(str(path), [10, 20, 30, 40])
    assert splits_lib.roles(splits) == {40: "test", 10: "test", 30: "train", 20: "train"}


# -- the real reference structure --------------------------------------------------------------


def test_real_prid_split_lists_hold_the_178_standard_persons(reference_dir: Path) -> None:
    splits = splits_lib.read_split_lists(
        str(reference_dir / "datasplits" / "PRID2011"), prid2011.person_id_of
    )
    assert splits.split.nunique() == 10
    persons = set(splits.person_id)
    assert len(persons) == 178 and max(persons) <= prid2011.NUM_PERSONS_BOTH_CAMERAS
    for _, group in splits.groupby("split"):
        assert collections.Counter(group.role) == {"train": 89, "test": 89}
        assert set(group.person_id) == persons
    split1 = splits[splits.split == 0]
    assert set(split1.person_id) == persons  # all 178 in split1's train + test


def test_real_ilids_split_lists_hold_300_persons(reference_dir: Path) -> None:
    splits = splits_lib.read_split_lists(
        str(reference_dir / "datasplits" / "iLIDS-VID"), ilidsvid.person_id_of
    )
    assert splits.split.nunique() == 10
    assert splits.person_id.nunique() == 300 and splits.person_id.max() <= 319
    for _, group in splits.groupby("split"):
        assert collections.Counter(group.role) == {"train": 150, "test": 150}


def test_seeded_mars_query_rule_matches_the_real_query_structure(reference_dir: Path) -> None:
    """Applied to the real test tracklets, the rule used without info/ picks queries like query_IDX:
    the same 1,980 (person, camera) pairs, one tracklet each."""
    info = load_mars_info(reference_dir / "info")
    test = info.test
    by_person: dict[int, dict[int, list[str]]] = collections.defaultdict(dict)
    for row, (_, _, person, camera) in enumerate(test.tolist()):
        by_person[person].setdefault(camera, []).append(str(row))
    chosen = set()
    for person, cameras in by_person.items():
        chosen |= mars.choose_queries(cameras, person, seed=0)
    rule_pairs = sorted((int(test[int(r), 2]), int(test[int(r), 3])) for r in chosen)
    real_pairs = sorted((int(test[r, 2]), int(test[r, 3])) for r in info.query_rows)
    assert len(chosen) == len(info.query_rows) == 1980
    assert rule_pairs == real_pairs

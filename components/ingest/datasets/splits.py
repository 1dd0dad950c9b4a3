"""Train/test person splits of the 10-split benchmarks (PRID2011, iLIDS-VID).

Three sources, all giving the same table (SPLIT_SCHEMA: 0-based ``split``, ``person_id``,
``role`` "train"/"test"):

* DAL split lists, ``<dir>/split1..splitK/{traindata,testdata}.txt``: the persons of each split,
  identified by the person folder in each line's path (the ids in the lists are renumbered per
  file, so they are not used). ``splitK`` becomes split ``K - 1``.
* iLIDS-VID's own ``train_test_splits_ilidsvid.mat`` (variable ``ls_set``, 10 x 300): each row is
  a permutation of 1-based indices into the sorted person folders; the first half of a row is
  the test set and the second half the training set (Wang et al., ECCV 2014).
* Generated with a fixed seed: split ``k`` is a permutation of the sorted person ids by
  ``numpy.random.default_rng([seed, k])``; its first ``n // 2`` persons train, the rest test.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from components.common import storage
from components.ingest.datasets.base import LayoutError, list_dir
from components.ingest.datasets.reference import load_mat, parse_split_list, split_list_tracklets

ROLES = ("train", "test")
SPLIT_DIR = re.compile(r"^split(\d+)$")
LIST_FILES = {"train": "traindata.txt", "test": "testdata.txt"}


def _frame(rows: list[tuple[int, int, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["split", "person_id", "role"])
    frame["split"] = frame["split"].astype("int16")
    frame["person_id"] = frame["person_id"].astype("int32")
    return frame.sort_values(["split", "role", "person_id"], ignore_index=True)


def generate_splits(person_ids: Sequence[int], *, num_splits: int = 10, seed: int = 0) -> pd.DataFrame:
    """``num_splits`` random halves of ``person_ids`` (train gets ``n // 2``), reproducible by seed."""
    persons = np.array(sorted(set(int(p) for p in person_ids)), dtype=np.int64)
    if len(persons) < 2:
        raise LayoutError(f"cannot split {len(persons)} person(s) into train and test")
    if num_splits < 1:
        raise LayoutError(f"num_splits must be at least 1, got {num_splits}")
    half = len(persons) // 2
    rows = []
    for split in range(num_splits):
        order = np.random.default_rng([seed, split]).permutation(persons)
        rows += [(split, int(p), "train") for p in order[:half]]
        rows += [(split, int(p), "test") for p in order[half:]]
    return _frame(rows)


def read_split_lists(directory: str, person_id_of: Callable[[str, str], int]) -> pd.DataFrame:
    """The splits defined by a DAL ``datasplits/<DATASET>`` folder.

    ``person_id_of(folder_name, where)`` maps a person folder (``person_0147``) to the dataset's
    person id and raises a LayoutError naming ``where`` for a folder that is not a person's.
    Each split must split the same persons, none of them in both roles.
    """
    subdirs, _ = list_dir(directory)
    numbered = sorted((int(m.group(1)), name) for name in subdirs if (m := SPLIT_DIR.match(name)))
    if not numbered:
        raise LayoutError(
            f"{directory}: no split1..splitK folders (expected a DAL datasplits/<DATASET> folder)"
        )
    expected = list(range(1, len(numbered) + 1))
    if [k for k, _ in numbered] != expected:
        raise LayoutError(f"{directory}: split folders must be split1..split{len(numbered)} without gaps")
    rows: list[tuple[int, int, str]] = []
    first_persons: set[int] | None = None
    for number, name in numbered:
        persons: dict[str, set[int]] = {}
        for role, filename in LIST_FILES.items():
            where = storage.join(directory, name, filename)
            persons[role] = {person_id_of(folder, where) for folder in _listed_folders(where)}
        both = persons["train"] & persons["test"]
        if both:
            raise LayoutError(
                f"{storage.join(directory, name)}: person(s) {sorted(both)[:5]} in traindata and testdata"
            )
        union = persons["train"] | persons["test"]
        if first_persons is None:
            first_persons = union
        elif union != first_persons:
            raise LayoutError(
                f"{storage.join(directory, name)}: its persons differ from split1's "
                f"({len(union ^ first_persons)} person(s) differ)"
            )
        for role in ROLES:
            rows += [(number - 1, p, role) for p in persons[role]]
    return _frame(rows)


def _listed_folders(uri: str) -> set[str]:
    """The person folders of one split list (a list holds ~20k lines: no object per line)."""
    if not storage.exists(uri):
        raise LayoutError(f"{uri}: split list not found")
    text = storage.read_bytes(uri).decode("utf-8", errors="replace")
    folders = set()
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        path = parts[0].rsplit("/", 2)
        if len(parts) != 4 or len(path) < 3 or not all(p.isdigit() for p in parts[1:]):
            # The full parser reports the file and line of a malformed entry.
            return {folder for folder, _ in split_list_tracklets(parse_split_list(text, uri))}
        folders.add(path[-2])
    if not folders:
        raise LayoutError(f"{uri}: empty split list")
    return folders


def restrict_to_present(
    splits: pd.DataFrame,
    present: Iterable[int],
    *,
    allow_missing: bool,
    where: str,
    folder: Callable[[int], str],
) -> tuple[pd.DataFrame, int]:
    """Keep the listed persons that the source holds; a listed person it lacks is an error unless
    ``allow_missing`` (e.g. a synthetic subset of the real structure). Returns (splits, dropped)."""
    present = set(present)
    listed = sorted(int(p) for p in splits["person_id"].unique())
    missing = [p for p in listed if p not in present]
    if missing and not allow_missing:
        raise LayoutError(
            f"{where}: {folder(missing[0])} is in the split lists but not in both cameras of the source "
            f"({len(missing)} listed person(s) missing; allow_missing_persons keeps the others)"
        )
    kept = splits[splits["person_id"].isin(present)].reset_index(drop=True)
    if kept["person_id"].nunique() < 2:
        raise LayoutError(f"{where}: fewer than 2 listed persons are in the source")
    return kept, len(missing)


def read_ilidsvid_split_mat(uri: str, person_ids: Sequence[int]) -> pd.DataFrame:
    """The splits of ``train_test_splits_ilidsvid.mat`` (``ls_set``) for persons in folder order.

    ``person_ids`` are the persons of the sorted person folders: index ``i`` (1-based) of a row
    is ``person_ids[i - 1]``.
    """
    table = load_mat(uri, "ls_set")
    if table.ndim != 2 or table.shape[1] != len(person_ids):
        raise LayoutError(
            f"{uri}: ls_set has shape {table.shape}, expected (splits, {len(person_ids)}) for "
            f"the {len(person_ids)} person folders of the source"
        )
    table = table.astype(np.int64)
    half = table.shape[1] // 2
    rows: list[tuple[int, int, str]] = []
    for split, row in enumerate(table):
        if sorted(row.tolist()) != list(range(1, len(person_ids) + 1)):
            raise LayoutError(
                f"{uri}: row {split + 1} of ls_set is not a permutation of 1..{len(person_ids)}"
            )
        rows += [(split, int(person_ids[i - 1]), "test") for i in row[:half]]
        rows += [(split, int(person_ids[i - 1]), "train") for i in row[half:]]
    return _frame(rows)


def roles(splits: pd.DataFrame, split: int = 0) -> dict[int, str]:
    """person_id -> role in ``split``."""
    chosen = splits[splits["split"] == split]
    return dict(zip(chosen["person_id"].astype(int), chosen["role"], strict=True))

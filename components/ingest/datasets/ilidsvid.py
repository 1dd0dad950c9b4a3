"""iLIDS-VID reader.

Reference: Wang et al., "Person Re-Identification by Video Ranking", ECCV 2014.

Statistics of the release (``i-LIDS-VID/sequences``):
    - persons: 300 (folders ``person001`` .. ``person319``, not contiguous), each seen once by each
      of 2 cameras: 600 tracklets, 42,495 frames of 128x64 PNG;
    - sequence lengths 23..192 frames (73 on average); frame numbers in the names are not
      contiguous from 1.

Layout: ``[i-LIDS-VID/]sequences/cam1/person001/cam1_person001_00317.png`` and ``cam2/...``
(the camera folders at the top of the source are accepted too); the official splits are in
``train-test people splits/train_test_splits_ilidsvid.mat`` beside ``i-LIDS-VID``.

Protocol: 10 splits of 150 training and 150 test persons. Split source, in order of preference:
a DAL split-list folder (its persons define the set), an explicit ``.mat``, the ``.mat`` found in
the source tree, or splits generated with a fixed seed. Ids: person id = the folder number;
camera id 0 = ``cam1`` (the query), 1 = ``cam2`` (the gallery). ``subset`` is the role in split 0.
"""

from __future__ import annotations

import re

from components.ingest.datasets import splits as splits_lib
from components.ingest.datasets.base import LayoutError, RawSource, SourceTree, paired_source, relative

NAME = "ilidsvid"
CAMERA_DIRS = ("cam1", "cam2")
SUBROOTS = ("i-LIDS-VID/sequences", "sequences", "")
SPLIT_MAT = "train-test people splits/train_test_splits_ilidsvid.mat"
PERSON_DIR = re.compile(r"^person(\d{3})$")
FRAME_FILE = re.compile(r"^cam([12])_person(\d{3})_(\d{5})\.(png|jpg|jpeg)$")


def person_id_of(folder: str, where: str) -> int:
    """Person id of a ``personNNN`` folder; anything else is an error naming ``where``."""
    match = PERSON_DIR.match(folder)
    if not match:
        raise LayoutError(f"{where}: {folder!r} is not an iLIDS-VID person folder (personNNN)")
    return int(match.group(1))


def parse_frame_name(name: str, where: str) -> tuple[int, int, int]:
    """(camera 1-2, person, frame number) of ``cam1_person001_00317.png``."""
    match = FRAME_FILE.match(name)
    if not match:
        raise LayoutError(f"{where}: not an iLIDS-VID frame name (camC_personNNN_FFFFF.png)")
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def _persons(tree: SourceTree, camera_dir: str) -> dict[int, str]:
    folders, files = tree.list_dir(camera_dir)
    if files:
        raise LayoutError(f"{tree.uri(camera_dir, files[0])}: unexpected file (expected personNNN folders)")
    return {person_id_of(f, tree.uri(camera_dir, f)): f for f in folders}


def open_source(
    root: str,
    *,
    split_lists: str = "",
    split_mat: str = "",
    num_splits: int = 10,
    split_seed: int = 0,
    allow_missing_persons: bool = False,
) -> RawSource:
    """Check the layout, list both cameras and build the splits (see module doc)."""
    tree = SourceTree(root)
    tree.require_root()
    sub = tree.find_subroot(SUBROOTS, CAMERA_DIRS)
    if sub is None:
        looked = ", ".join(tree.uri(s, "cam1") for s in SUBROOTS)
        raise LayoutError(f"{tree.root}: camera folders not found (expected the iLIDS-VID layout: {looked})")
    seen = [_persons(tree, relative(sub, cam)) for cam in CAMERA_DIRS]
    for camera, other in ((0, 1), (1, 0)):
        alone = sorted(seen[camera].keys() - seen[other].keys())
        if alone:
            folder = relative(sub, CAMERA_DIRS[camera], seen[camera][alone[0]])
            raise LayoutError(
                f"{tree.uri(folder)}: person not seen by {CAMERA_DIRS[other]} "
                "(every iLIDS-VID person has one sequence per camera)"
            )
    all_persons = sorted(seen[0])
    if len(all_persons) < 2:
        raise LayoutError(f"{tree.root}: {len(all_persons)} person folder(s) found, need at least 2")

    if split_lists:
        splits, dropped = splits_lib.restrict_to_present(
            splits_lib.read_split_lists(split_lists, person_id_of),
            all_persons,
            allow_missing=allow_missing_persons,
            where=split_lists,
            folder=lambda p: f"person{p:03d}",
        )
        persons = sorted(int(p) for p in splits["person_id"].unique())
        split_source = f"DAL split lists in {split_lists} ({dropped} listed person(s) not in the source)"
    else:
        persons = all_persons
        mat = split_mat or tree.uri(SPLIT_MAT)
        if split_mat or tree.is_file(SPLIT_MAT):
            splits = splits_lib.read_ilidsvid_split_mat(mat, persons)
            split_source = f"ls_set of {mat} (first half of each row: test)"
        else:
            splits = splits_lib.generate_splits(persons, num_splits=num_splits, seed=split_seed)
            split_source = f"{num_splits} splits generated with seed {split_seed}"
    role = splits_lib.roles(splits, 0)

    sequences = {}
    for person in persons:
        for camera in (0, 1):
            folder = relative(sub, CAMERA_DIRS[camera], seen[camera][person])

            def parse(name: str, where: str, camera: int = camera, person: int = person) -> int:
                cam, pid, frame = parse_frame_name(name, where)
                if (cam, pid) != (camera + 1, person):
                    raise LayoutError(f"{where}: name says cam{cam}/person{pid:03d}, folder disagrees")
                return frame

            parsed = sorted(tree.frame_files(folder, parse))
            if not parsed:
                raise LayoutError(f"{tree.uri(folder)}: tracklet folder has no frames")
            sequences[person, camera] = tuple(f"{folder}/{name}" for _, name in parsed)

    return paired_source(
        NAME,
        tree,
        sequences,
        lambda person, camera: f"{CAMERA_DIRS[camera]}/{seen[camera][person]}",
        splits,
        role,
        {"splits": split_source, "query": "the cam1 tracklet of each test person; gallery cam2"},
    )

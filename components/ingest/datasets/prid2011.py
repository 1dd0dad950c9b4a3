"""PRID2011 (multi-shot) reader.

Reference: Hirzer et al., "Person Re-Identification by Descriptive and Discriminative
Classification", SCIA 2011.

Statistics of the release (``prid_2011/multi_shot``):
    - cameras: 2 (``cam_a``: 385 persons, ``cam_b``: 749 persons), 128x64 PNG frames;
    - persons ``person_0001`` .. ``person_0200`` are seen by both cameras; folders above 200 are
      different people in each camera (never matched);
    - sequence lengths 5..675 frames (about 100 on average).

Layout: ``[prid_2011/][multi_shot/]cam_a/person_0001/0001.png`` and ``cam_b/...``; the DAL split
lists name the cameras ``cam1``/``cam2``, so those folder names are accepted too.

Standard protocol (Wang et al., ECCV 2014; used by DAL): the persons 1..200 seen by both cameras
that have at least 21 frames in each camera -- 178 persons, 356 tracklets -- split ten times into
89 training and 89 test persons. When a DAL split-list folder is given, its persons define the set
(all 178 appear in split1's train + test lists) and the length rule is not applied again.

Ids: person id = the folder number; camera id 0 = ``cam_a``, 1 = ``cam_b``. The camera-a
tracklet of each person is the query, camera b the gallery (``is_query``). ``subset`` is the role
in split 0; all splits go to ``splits.parquet``.
"""

from __future__ import annotations

import re

from components.ingest.datasets import splits as splits_lib
from components.ingest.datasets.base import LayoutError, RawSource, SourceTree, paired_source, relative

NAME = "prid2011"
NUM_PERSONS_BOTH_CAMERAS = 200  # person_0001..person_0200 are the same people in both cameras
MIN_FRAMES = 21  # the standard rule: >= 21 frames in both cameras
CAMERA_DIRS = (("cam_a", "cam_b"), ("cam1", "cam2"))
SUBROOTS = ("prid_2011/multi_shot", "multi_shot", "")
PERSON_DIR = re.compile(r"^person_(\d{4})$")
FRAME_FILE = re.compile(r"^(\d{4})\.(png|jpg|jpeg)$")


def person_id_of(folder: str, where: str) -> int:
    """Person id of a ``person_NNNN`` folder; anything else is an error naming ``where``."""
    match = PERSON_DIR.match(folder)
    if not match:
        raise LayoutError(f"{where}: {folder!r} is not a PRID2011 person folder (person_NNNN)")
    return int(match.group(1))


def parse_frame_name(name: str, where: str) -> int:
    """Frame number of ``0001.png``; anything else is an error naming ``where``."""
    match = FRAME_FILE.match(name)
    if not match:
        raise LayoutError(f"{where}: not a PRID2011 frame name (NNNN.png)")
    return int(match.group(1))


def _locate(tree: SourceTree) -> tuple[str, tuple[str, str]]:
    for cameras in CAMERA_DIRS:
        sub = tree.find_subroot(SUBROOTS, cameras)
        if sub is not None:
            return sub, cameras
    looked = ", ".join(tree.uri(s, "cam_a") for s in SUBROOTS)
    raise LayoutError(
        f"{tree.root}: camera folders not found (expected the PRID2011 multi_shot layout: {looked})"
    )


def _persons(tree: SourceTree, camera_dir: str) -> dict[int, str]:
    """person id -> folder of one camera; a file or a badly named folder there is an error."""
    folders, files = tree.list_dir(camera_dir)
    if files:
        raise LayoutError(f"{tree.uri(camera_dir, files[0])}: unexpected file (expected person_NNNN folders)")
    return {person_id_of(f, tree.uri(camera_dir, f)): f for f in folders}


def open_source(
    root: str,
    *,
    split_lists: str = "",
    num_splits: int = 10,
    split_seed: int = 0,
    min_frames: int = MIN_FRAMES,
    allow_missing_persons: bool = False,
) -> RawSource:
    """Check the layout, list the persons of both cameras and build the splits (see module doc)."""
    tree = SourceTree(root)
    tree.require_root()
    sub, cameras = _locate(tree)
    cam_dirs = tuple(relative(sub, cam) for cam in cameras)
    seen = [_persons(tree, cam) for cam in cam_dirs]
    candidates = sorted(p for p in seen[0].keys() & seen[1].keys() if p <= NUM_PERSONS_BOTH_CAMERAS)

    def frames_of(person: int, camera: int) -> tuple[str, ...]:
        folder = relative(cam_dirs[camera], seen[camera][person])
        parsed = sorted(tree.frame_files(folder, parse_frame_name))
        if not parsed:
            raise LayoutError(f"{tree.uri(folder)}: tracklet folder has no frames")
        return tuple(f"{folder}/{name}" for _, name in parsed)

    # Both cameras' sequences of the persons used: 2 x 200 short name lists at most.
    if split_lists:
        splits, dropped = splits_lib.restrict_to_present(
            splits_lib.read_split_lists(split_lists, person_id_of),
            candidates,
            allow_missing=allow_missing_persons,
            where=split_lists,
            folder=lambda p: f"person_{p:04d}",
        )
        persons = sorted(int(p) for p in splits["person_id"].unique())
        sequences = {(p, c): frames_of(p, c) for p in persons for c in (0, 1)}
        rule = f"the persons of the DAL split lists in {split_lists} ({dropped} listed, not in the source)"
    else:
        sequences = {(p, c): frames_of(p, c) for p in candidates for c in (0, 1)}
        persons = [p for p in candidates if min(len(sequences[p, 0]), len(sequences[p, 1])) >= min_frames]
        sequences = {key: value for key, value in sequences.items() if key[0] in persons}
        if len(persons) < 2:
            raise LayoutError(
                f"{tree.root}: {len(persons)} person(s) of 1..{NUM_PERSONS_BOTH_CAMERAS} have "
                f">= {min_frames} frames in both cameras (need at least 2)"
            )
        splits = splits_lib.generate_splits(persons, num_splits=num_splits, seed=split_seed)
        rule = (
            f"persons 1..{NUM_PERSONS_BOTH_CAMERAS} in both cameras with >= {min_frames} frames in each; "
            f"{num_splits} splits generated with seed {split_seed}"
        )
    role = splits_lib.roles(splits, 0)

    return paired_source(
        NAME,
        tree,
        sequences,
        lambda person, camera: f"{cameras[camera]}/{seen[camera][person]}",
        splits,
        role,
        {"persons": rule, "query": "the camera-a tracklet of each test person; gallery camera b"},
    )

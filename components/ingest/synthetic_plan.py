"""Which tracklets and frames ``dal synth`` writes: a small set drawn from the seed, or the real
structure of a release read from dal-reference (``reference_dir``).

Small sets:

* MARS: odd person ids train, even ids test, one query per test person and camera (like MARS),
  and junk and distractor tracklets in the test set.
* PRID2011: persons ``1..num_identities`` are seen by both cameras, the next ids by one camera
  only (different people in each camera, as in the release).
* iLIDS-VID: every person in both cameras; frame numbers are contiguous but start at a random
  number per tracklet, as in the release.

With ``reference_dir``, every (person, camera, length) of the release's info tables or split
lists, shrunk by ``max_identities`` (the lowest person ids) and ``frame_step``.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from components.common import storage
from components.common.errors import DalError
from components.ingest.datasets import ilidsvid, prid2011
from components.ingest.datasets.reference import load_mars_info, read_split_list, split_list_tracklets
from components.ingest.synthetic_config import SynthConfig
from components.ingest.synthetic_names import camera_folder
from components.ingest.synthetic_random import (
    KEY_EXTRA,
    KEY_IDENTITY,
    KEY_QUERY,
    KEY_SOLO,
    KEY_STRUCTURE,
    keyed_rng,
)
from components.ingest.synthetic_tracklets import DISTRACTOR, JUNK, SynthPlan, Tracklet

SPLIT_DIRS = {"prid2011": "PRID2011", "ilidsvid": "iLIDS-VID"}
# PRID2011: persons 1..200 are shared by both cameras, later ids are not.
PRID_SOLO_FIRST_ID = prid2011.NUM_PERSONS_BOTH_CAMERAS + 1
PERSON_FOLDER = {"prid2011": prid2011.PERSON_DIR, "ilidsvid": ilidsvid.PERSON_DIR}
FRAME_NUMBER = re.compile(r"(\d+)\.png$")


def plan_dataset(config: SynthConfig) -> SynthPlan:
    """Which tracklets to write, in dataset order (MARS: the order of the info tables)."""
    if config.reference_dir:
        reference = Path(storage.resolve(config.reference_dir)[1])
        if not reference.is_dir():
            raise DalError(f"reference_dir: {config.reference_dir} is not a directory")
        if config.layout == "mars":
            return _plan_reference_mars(config, reference)
        return _plan_reference_pairs(config, reference)
    if config.layout == "mars":
        return _plan_small_mars(config)
    return _plan_small_pairs(config)


def _kept_frames(length: int, step: int, first_number: int = 1) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Every ``step``-th frame: positions into the tracklet and their frame numbers."""
    positions = tuple(range(0, length, step))
    return positions, tuple(first_number + p for p in positions)


# ---------------------------------------------------------------------------------------------
# Small sets drawn from the seed


def _lengths(rng: np.random.Generator, config: SynthConfig, count: int) -> list[int]:
    low, high = config.frames_per_tracklet
    return [int(x) for x in rng.integers(low, high + 1, count)]


def _plan_small_mars(config: SynthConfig) -> SynthPlan:
    cameras = config.cameras
    tracklets: list[Tracklet] = []
    queries: list[tuple[int, int, int]] = []  # (person, camera, tracklet number)
    for person in range(1, config.num_identities + 1):
        rng = keyed_rng(config.seed, KEY_STRUCTURE, person)
        seen = sorted(
            int(c) + 1 for c in rng.choice(cameras, int(rng.integers(2, cameras + 1)), replace=False)
        )
        subset = "bbox_train" if person % 2 else "bbox_test"
        for camera in seen:
            count = int(rng.integers(config.tracklets_per_camera[0], config.tracklets_per_camera[1] + 1))
            for number, length in enumerate(_lengths(rng, config, count), start=1):
                positions, numbers = _kept_frames(length, 1)
                tracklets.append(
                    Tracklet(
                        subset,
                        person,
                        camera,
                        number,
                        (KEY_IDENTITY, person),
                        length,
                        positions,
                        numbers,
                    )
                )
            if subset == "bbox_test":
                pick = keyed_rng(config.seed, KEY_QUERY, person, camera).integers(count)
                queries.append((person, camera, int(pick) + 1))
    # Bad detections in the test set: distractors (0000) and junk (00-1), numbered per camera.
    for person in (JUNK, DISTRACTOR):
        numbers_per_camera: collections.Counter[int] = collections.Counter()
        for index in range(config.num_distractors):
            rng = keyed_rng(config.seed, KEY_STRUCTURE, person + 2, index)
            camera = int(rng.integers(1, cameras + 1))
            numbers_per_camera[camera] += 1
            tracklets.append(_bad_detection(config, rng, person, camera, numbers_per_camera[camera], index))
    tracklets.sort(key=lambda t: (t.subset, t.person, t.camera, t.number))
    test = [t for t in tracklets if t.subset == "bbox_test"]
    row_of = {(t.person, t.camera, t.number): row for row, t in enumerate(test)}
    return SynthPlan(tracklets, sorted(row_of[q] for q in queries))


def _bad_detection(
    config: SynthConfig, rng: np.random.Generator, person: int, camera: int, number: int, index: int
) -> Tracklet:
    """MARS junk shows a close-up part of a stranger; a distractor is a false or shifted detection."""
    length = _lengths(rng, config, 1)[0]
    positions, numbers = _kept_frames(length, 1)
    appearance: tuple[int, ...] = (KEY_EXTRA, person + 2, index)
    if person == JUNK:
        zoom, offset = float(rng.uniform(1.5, 2.3)), float(rng.uniform(-0.3, 0.3))
    elif rng.random() < 0.5:
        appearance, zoom, offset = (), 1.0, 0.0
    else:
        zoom, offset = float(rng.uniform(0.8, 1.2)), float(rng.choice((-1, 1)) * rng.uniform(0.35, 0.5))
    return Tracklet("bbox_test", person, camera, number, appearance, length, positions, numbers, zoom, offset)


def _plan_small_pairs(config: SynthConfig) -> SynthPlan:
    """PRID2011 / iLIDS-VID: every person in both cameras (PRID2011 adds single-camera persons)."""
    layout = config.layout
    # iLIDS-VID numbers frames from a per-tracklet start (a few thousand at most in the release).
    first_number_max = min(5000, 99999 - config.frames_per_tracklet[1]) if layout == "ilidsvid" else 0
    tracklets = []

    def add(person: int, camera: int, appearance: tuple[int, ...], rng: np.random.Generator) -> None:
        length = _lengths(rng, config, 1)[0]
        first = int(rng.integers(1, first_number_max + 1)) if first_number_max else 1
        positions, numbers = _kept_frames(length, 1, first)
        tracklets.append(
            Tracklet(camera_folder(layout, camera), person, camera, 1, appearance, length, positions, numbers)
        )

    for person in range(1, config.num_identities + 1):
        rng = keyed_rng(config.seed, KEY_STRUCTURE, person)
        for camera in (1, 2):
            add(person, camera, (KEY_IDENTITY, person), rng)
    if layout == "prid2011":
        # Each camera also has its own people, numbered from 201 as in the release (whose persons
        # 1..200 are the ones both cameras saw); cam_b has twice as many, like the release.
        for camera, count in ((1, config.num_distractors), (2, 2 * config.num_distractors)):
            for person in range(PRID_SOLO_FIRST_ID, PRID_SOLO_FIRST_ID + count):
                rng = keyed_rng(config.seed, KEY_SOLO, camera, person)
                add(person, camera, (KEY_SOLO, camera, person), rng)
    tracklets.sort(key=lambda t: (t.camera, t.person))
    return SynthPlan(tracklets, [])


# ---------------------------------------------------------------------------------------------
# The real structure from dal-reference


def _first_persons(persons: Iterable[int], limit: int) -> set[int]:
    ordered = sorted(set(persons))
    return set(ordered if limit <= 0 else ordered[:limit])


def _plan_reference_mars(config: SynthConfig, reference: Path) -> SynthPlan:
    info = load_mars_info(reference / "info")
    limit = config.max_identities
    tracklets: list[Tracklet] = []
    query_rows: list[int] = []
    for subset, table in (("bbox_train", info.train), ("bbox_test", info.test)):
        persons = table[:, 2]
        ids = np.unique(persons[persons > 0])
        keep = np.isin(persons, sorted(_first_persons(ids, limit)))
        if subset == "bbox_test":
            # Junk and distractor rows: the same fraction as the test persons kept, first rows first.
            fraction = 1.0 if limit <= 0 else min(1.0, limit / max(len(ids), 1))
            for bad in (JUNK, DISTRACTOR):
                rows = np.flatnonzero(persons == bad)
                keep[rows[: math.ceil(len(rows) * fraction)]] = True
        numbering: collections.Counter[tuple[int, int]] = collections.Counter()
        new_row: dict[int, int] = {}  # original test row -> row in the written table
        for row, (first, last, person, camera) in enumerate(table.tolist()):
            numbering[(person, camera)] += 1  # the tracklet number counts every row, kept or not
            if not keep[row]:
                continue
            number = numbering[(person, camera)]
            length = last - first + 1
            positions, numbers = _kept_frames(length, config.frame_step)
            if person > 0:
                identity = (KEY_IDENTITY, person)
                tracklet = Tracklet(subset, person, camera, number, identity, length, positions, numbers)
            else:  # junk / distractor rows exist in the test set only, as _bad_detection writes them
                rng = keyed_rng(config.seed, KEY_STRUCTURE, person + 2, row)
                bad = _bad_detection(config, rng, person, camera, number, row)
                tracklet = dataclasses.replace(bad, length=length, positions=positions, numbers=numbers)
            if subset == "bbox_test":
                new_row[row] = len(new_row)
            tracklets.append(tracklet)
        if subset == "bbox_test":
            query_rows = [new_row[r] for r in info.query_rows.tolist() if r in new_row]
    return SynthPlan(tracklets, query_rows)


def _split_list(reference: Path, layout: str, split: int, part: str) -> Path:
    return reference / "datasplits" / SPLIT_DIRS[layout] / f"split{split}" / f"{part}.txt"


def _plan_reference_pairs(config: SynthConfig, reference: Path) -> SynthPlan:
    layout = config.layout
    pattern = PERSON_FOLDER[layout]
    tracklets = []
    for part in ("traindata", "testdata"):
        path = _split_list(reference, layout, config.reference_split, part)
        grouped = split_list_tracklets(read_split_list(path))
        keep = _first_persons((folder for folder, _ in grouped), config.max_identities)
        for (folder, camera), frames in grouped.items():
            person = pattern.fullmatch(folder)
            names = [FRAME_NUMBER.search(frame) for frame in frames]
            if not person or camera not in (1, 2) or not all(names):
                raise DalError(f"{path}: not a {layout} tracklet: {folder!r}, camera {camera}, {frames[0]!r}")
            if folder not in keep:
                continue
            positions = tuple(range(0, len(frames), config.frame_step))
            numbers = tuple(int(names[p].group(1)) for p in positions)  # type: ignore[union-attr]
            pid = int(person.group(1))
            subset, appearance = camera_folder(layout, camera), (KEY_IDENTITY, pid)
            tracklets.append(Tracklet(subset, pid, camera, 1, appearance, len(frames), positions, numbers))
    tracklets.sort(key=lambda t: (t.camera, t.person))
    return SynthPlan(tracklets, [])

"""``dal synth``: a synthetic multi-camera dataset written in the raw layout of a real one.

The files are named and laid out exactly as the real releases, so the real readers are exercised:

* MARS: ``bbox_train/0001/0001C1T0001F001.jpg`` and ``bbox_test/...`` (person 4 digits, camera,
  tracklet 4 digits within person and camera, frame 3 digits), distractors ``0000``, junk
  ``00-1/00-1C1T0001F001.jpg``; with ``with_info`` also ``info/`` as the release:
  ``{train,test}_name.txt`` (one file name a line, in table order), ``tracks_{train,test}_info.mat``
  (rows: first and last line, 1-based and inclusive, into the name list; person; camera) and
  ``query_IDX.mat`` (1-based test rows). Small sets: odd person ids train, even ids test, and one
  query per test person and camera, like MARS.
* PRID2011 multi-shot: ``cam_a/person_0001/0001.png`` and ``cam_b/...``; persons
  ``1..num_identities`` are seen by both cameras, the next ids by one camera only (different people
  in each camera, as in the release).
* iLIDS-VID: ``sequences/cam1/person001/cam1_person001_00001.png``; frame numbers are contiguous
  but start at a random number per tracklet, as in the release.

Everything is rendered into a hidden temp directory beside ``output`` that is renamed into place
at the end, so an error publishes nothing. ``synth.json`` at the root holds the config and counts.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import logging
import math
import os
import re
import shutil
import struct
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from components.common import storage
from components.common.config import to_dict
from components.common.errors import DalError
from components.ingest import synthetic_render as render
from components.ingest.datasets import ilidsvid, prid2011
from components.ingest.datasets.reference import load_mars_info, read_split_list, split_list_tracklets
from components.ingest.synthetic_config import SynthConfig

log = logging.getLogger(__name__)

SYNTH_JSON = "synth.json"
FORMAT_VERSION = 1
# Keys of the structure and appearance generators (render.KEY_* are the renderer's own).
KEY_STRUCTURE, KEY_QUERY, KEY_SOLO, KEY_EXTRA = 11, 12, 13, 14
JUNK, DISTRACTOR = -1, 0
TASK_TRACKLETS = 64  # tracklets per rendering task at most (keeps a person's sprites in one process)
FRAME_BLOCK = 64  # frames rendered at once (bounds memory for MARS's 900-frame tracklets)
JPEG_QUALITY = 90
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SPLIT_DIRS = {"prid2011": "PRID2011", "ilidsvid": "iLIDS-VID"}
# PRID2011: persons 1..200 are shared by both cameras, later ids are not.
PRID_SOLO_FIRST_ID = prid2011.NUM_PERSONS_BOTH_CAMERAS + 1
PERSON_FOLDER = {"prid2011": prid2011.PERSON_DIR, "ilidsvid": ilidsvid.PERSON_DIR}
FRAME_NUMBER = re.compile(r"(\d+)\.png$")


@dataclasses.dataclass(frozen=True)
class Tracklet:
    """One tracklet to write: who, where, and which of its original frames to keep."""

    subset: str  # MARS: bbox_train | bbox_test; others: the camera folder
    person: int  # the dataset's person id (MARS: -1 junk, 0 distractor)
    camera: int  # 1-based
    number: int  # MARS tracklet number within (person, camera); 1 elsewhere
    appearance: tuple[int, ...]  # key of the identity generator; () renders an empty detection
    length: int  # original length: motion is drawn for all of it, so subsampling keeps the bytes
    positions: tuple[int, ...]  # kept frames, 0-based into the original ones
    numbers: tuple[int, ...]  # their frame numbers in the file names
    zoom: float = 1.0  # bad detections (MARS junk/distractors) see part of a person
    offset: float = 0.0

    @property
    def kind(self) -> str:
        return {JUNK: "junk", DISTRACTOR: "distractor"}.get(self.person, "person")


@dataclasses.dataclass(frozen=True)
class Plan:
    tracklets: list[Tracklet]
    query_rows: list[int]  # MARS: 0-based rows of the bbox_test tracklets that are queries


# ---------------------------------------------------------------------------------------------
# File naming


def mars_person(person: int) -> str:
    return "00-1" if person == JUNK else f"{person:04d}"


def frame_path(layout: str, tracklet: Tracklet, number: int) -> str:
    """Relative path of one frame, exactly as the real release names it."""
    if layout == "mars":
        person = mars_person(tracklet.person)
        name = f"{person}C{tracklet.camera}T{tracklet.number:04d}F{number:03d}.jpg"
        return f"{tracklet.subset}/{person}/{name}"
    if layout == "prid2011":
        return f"{tracklet.subset}/person_{tracklet.person:04d}/{number:04d}.png"
    camera, person = f"cam{tracklet.camera}", f"person{tracklet.person:03d}"
    return f"sequences/{camera}/{person}/{camera}_{person}_{number:05d}.png"


def _subset_for(layout: str, camera: int) -> str:
    return {"prid2011": ("cam_a", "cam_b")[camera - 1], "ilidsvid": f"cam{camera}"}[layout]


def _kept(length: int, step: int, first_number: int = 1) -> tuple[tuple[int, ...], tuple[int, ...]]:
    positions = tuple(range(0, length, step))
    return positions, tuple(first_number + p for p in positions)


# ---------------------------------------------------------------------------------------------
# Small sets drawn from the seed


def _lengths(rng: np.random.Generator, config: SynthConfig, count: int) -> list[int]:
    low, high = config.frames_per_tracklet
    return [int(x) for x in rng.integers(low, high + 1, count)]


def _plan_small_mars(config: SynthConfig) -> Plan:
    cameras = config.cameras
    tracklets: list[Tracklet] = []
    queries: list[tuple[int, int, int]] = []  # (person, camera, tracklet number)
    for person in range(1, config.num_identities + 1):
        rng = render.keyed_rng(config.seed, KEY_STRUCTURE, person)
        seen = sorted(
            int(c) + 1 for c in rng.choice(cameras, int(rng.integers(2, cameras + 1)), replace=False)
        )
        subset = "bbox_train" if person % 2 else "bbox_test"
        for camera in seen:
            count = int(rng.integers(config.tracklets_per_camera[0], config.tracklets_per_camera[1] + 1))
            for number, length in enumerate(_lengths(rng, config, count), start=1):
                positions, numbers = _kept(length, 1)
                tracklets.append(
                    Tracklet(
                        subset,
                        person,
                        camera,
                        number,
                        (render.KEY_IDENTITY, person),
                        length,
                        positions,
                        numbers,
                    )
                )
            if subset == "bbox_test":
                pick = render.keyed_rng(config.seed, KEY_QUERY, person, camera).integers(count)
                queries.append((person, camera, int(pick) + 1))
    # Bad detections in the test set: distractors (0000) and junk (00-1), numbered per camera.
    for person in (JUNK, DISTRACTOR):
        numbers_per_camera: collections.Counter[int] = collections.Counter()
        for index in range(config.num_distractors):
            rng = render.keyed_rng(config.seed, KEY_STRUCTURE, person + 2, index)
            camera = int(rng.integers(1, cameras + 1))
            numbers_per_camera[camera] += 1
            tracklets.append(_bad_detection(config, rng, person, camera, numbers_per_camera[camera], index))
    tracklets.sort(key=lambda t: (t.subset, t.person, t.camera, t.number))
    test = [t for t in tracklets if t.subset == "bbox_test"]
    row_of = {(t.person, t.camera, t.number): row for row, t in enumerate(test)}
    return Plan(tracklets, sorted(row_of[q] for q in queries))


def _bad_detection(
    config: SynthConfig, rng: np.random.Generator, person: int, camera: int, number: int, index: int
) -> Tracklet:
    """MARS junk shows a close-up part of a stranger; a distractor is a false or shifted detection."""
    length = _lengths(rng, config, 1)[0]
    positions, numbers = _kept(length, 1)
    appearance: tuple[int, ...] = (KEY_EXTRA, person + 2, index)
    if person == JUNK:
        zoom, offset = float(rng.uniform(1.5, 2.3)), float(rng.uniform(-0.3, 0.3))
    elif rng.random() < 0.5:
        appearance, zoom, offset = (), 1.0, 0.0
    else:
        zoom, offset = float(rng.uniform(0.8, 1.2)), float(rng.choice((-1, 1)) * rng.uniform(0.35, 0.5))
    return Tracklet("bbox_test", person, camera, number, appearance, length, positions, numbers, zoom, offset)


def _plan_small_pairs(config: SynthConfig) -> Plan:
    """PRID2011 / iLIDS-VID: every person in both cameras (PRID2011 adds single-camera persons)."""
    layout = config.layout
    # iLIDS-VID numbers frames from a per-tracklet start (a few thousand at most in the release).
    first_number_max = min(5000, 99999 - config.frames_per_tracklet[1]) if layout == "ilidsvid" else 0
    tracklets = []

    def add(person: int, camera: int, appearance: tuple[int, ...], rng: np.random.Generator) -> None:
        length = _lengths(rng, config, 1)[0]
        first = int(rng.integers(1, first_number_max + 1)) if first_number_max else 1
        positions, numbers = _kept(length, 1, first)
        tracklets.append(
            Tracklet(_subset_for(layout, camera), person, camera, 1, appearance, length, positions, numbers)
        )

    for person in range(1, config.num_identities + 1):
        rng = render.keyed_rng(config.seed, KEY_STRUCTURE, person)
        for camera in (1, 2):
            add(person, camera, (render.KEY_IDENTITY, person), rng)
    if layout == "prid2011":
        # Each camera also has its own people, numbered from 201 as in the release (whose persons
        # 1..200 are the ones both cameras saw); cam_b has twice as many, like the release.
        for camera, count in ((1, config.num_distractors), (2, 2 * config.num_distractors)):
            for person in range(PRID_SOLO_FIRST_ID, PRID_SOLO_FIRST_ID + count):
                rng = render.keyed_rng(config.seed, KEY_SOLO, camera, person)
                add(person, camera, (KEY_SOLO, camera, person), rng)
    tracklets.sort(key=lambda t: (t.camera, t.person))
    return Plan(tracklets, [])


# ---------------------------------------------------------------------------------------------
# The real structure from dal-reference


def _first_persons(persons: Iterable[int], limit: int) -> set[int]:
    ordered = sorted(set(persons))
    return set(ordered if limit <= 0 else ordered[:limit])


def _plan_reference_mars(config: SynthConfig, reference: Path) -> Plan:
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
            positions, numbers = _kept(length, config.frame_step)
            if person > 0:
                identity = (render.KEY_IDENTITY, person)
                tracklet = Tracklet(subset, person, camera, number, identity, length, positions, numbers)
            else:  # junk / distractor rows exist in the test set only, as _bad_detection writes them
                rng = render.keyed_rng(config.seed, KEY_STRUCTURE, person + 2, row)
                bad = _bad_detection(config, rng, person, camera, number, row)
                tracklet = dataclasses.replace(bad, length=length, positions=positions, numbers=numbers)
            if subset == "bbox_test":
                new_row[row] = len(new_row)
            tracklets.append(tracklet)
        if subset == "bbox_test":
            query_rows = [new_row[r] for r in info.query_rows.tolist() if r in new_row]
    return Plan(tracklets, query_rows)


def _split_list(reference: Path, layout: str, split: int, part: str) -> Path:
    return reference / "datasplits" / SPLIT_DIRS[layout] / f"split{split}" / f"{part}.txt"


def _plan_reference_pairs(config: SynthConfig, reference: Path) -> Plan:
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
            subset, appearance = _subset_for(layout, camera), (render.KEY_IDENTITY, pid)
            tracklets.append(Tracklet(subset, pid, camera, 1, appearance, len(frames), positions, numbers))
    tracklets.sort(key=lambda t: (t.camera, t.person))
    return Plan(tracklets, [])


def make_plan(config: SynthConfig) -> Plan:
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


# ---------------------------------------------------------------------------------------------
# Rendering and writing


@dataclasses.dataclass(frozen=True)
class RenderSettings:
    """What a worker process needs to render (picklable)."""

    layout: str
    seed: int
    height: int
    width: int
    color_cast: float
    clutter: float
    back_view_prob: float
    occlusion_prob: float

    @classmethod
    def of(cls, config: SynthConfig) -> RenderSettings:
        return cls(
            config.layout,
            config.seed,
            config.image_height,
            config.image_width,
            config.color_cast,
            config.clutter,
            config.back_view_prob,
            config.occlusion_prob,
        )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(image: np.ndarray) -> bytes:
    """8-bit RGB PNG with the Sub filter and Huffman-only deflate.

    Written here because PIL's encoder tries every row filter: ~3x slower on these noisy frames
    for ~15 % smaller files, and PNG encoding dominates the PRID2011/iLIDS-VID layouts' cost.
    """
    height, width, _ = image.shape
    rows = image.astype(np.int16)
    rows[:, 1:] -= image[:, :-1]
    filtered = np.empty((height, 1 + width * 3), dtype=np.uint8)
    filtered[:, 0] = 1  # filter type Sub: each byte minus the same channel of the pixel to its left
    filtered[:, 1:] = (rows & 0xFF).reshape(height, width * 3)
    packer = zlib.compressobj(6, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    idat = packer.compress(filtered.tobytes()) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def encode_jpeg(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def render_tracklet(settings: RenderSettings, tracklet: Tracklet, cache: dict) -> Iterator[np.ndarray]:
    """The tracklet's kept frames, in blocks of up to FRAME_BLOCK, as uint8 (T, H, W, 3).

    ``cache`` keeps identities and sprites between the tracklets of one task (one person).
    """
    view = render.camera_view(
        settings.seed,
        tracklet.camera,
        settings.height,
        settings.width,
        settings.color_cast,
        settings.clutter,
        settings.back_view_prob,
    )
    identity = None
    sprites = None
    if tracklet.appearance:
        # Poses depend on the identity and the view side; their colours and blur on the camera.
        key, back = tracklet.appearance, view.camera.back_view
        if key not in cache:
            cache[key] = render.sample_identity(render.keyed_rng(settings.seed, *key))
        identity = cache[key]
        if (key, back) not in cache:
            cache[(key, back)] = render.render_sprites(identity, back, settings.height)
        seen_by = (key, back, tracklet.camera)
        if seen_by not in cache:
            cache[seen_by] = render.camera_sprites(cache[(key, back)], view, settings.height)
        sprites = cache[seen_by]
    motion = render.draw_motion(
        render.keyed_rng(
            settings.seed, render.KEY_TRACKLET, tracklet.person + 2, tracklet.camera, tracklet.number
        ),
        view,
        tracklet.length,
        settings.height,
        settings.width,
        identity.height if identity else 1.0,
        settings.occlusion_prob if tracklet.person > 0 else 0.5,
        offset=tracklet.offset,
        zoom=tracklet.zoom,
    )
    for start in range(0, len(tracklet.positions), FRAME_BLOCK):
        yield render.render_frames(sprites, view, motion, tracklet.positions[start : start + FRAME_BLOCK])


def write_tracklets(settings: RenderSettings, root: str, tracklets: list[Tracklet]) -> int:
    """Render and write the frames of some tracklets under ``root``; returns the frame count.

    Plain file writes: the whole tree is published at once by renaming its temp directory, so a
    per-file temp + fsync (storage.write_bytes) would only multiply the cost of ~1 M small files.
    """
    cache: dict = {}
    encode = encode_jpeg if settings.layout == "mars" else encode_png
    written = 0
    for tracklet in tracklets:
        paths = [os.path.join(root, frame_path(settings.layout, tracklet, n)) for n in tracklet.numbers]
        os.makedirs(os.path.dirname(paths[0]), exist_ok=True)
        done = 0
        for block in render_tracklet(settings, tracklet, cache):
            for image in block:
                with open(paths[done], "wb") as handle:
                    handle.write(encode(image))
                done += 1
        written += done
    return written


def _tasks(tracklets: list[Tracklet]) -> list[list[Tracklet]]:
    """Group a person's tracklets (sprites are drawn once per task) in chunks of TASK_TRACKLETS."""
    groups: dict[tuple[int, ...] | tuple[str, int], list[Tracklet]] = {}
    for index, tracklet in enumerate(tracklets):
        key = tracklet.appearance if tracklet.appearance else ("empty", index // TASK_TRACKLETS)
        groups.setdefault(key, []).append(tracklet)
    return [
        group[i : i + TASK_TRACKLETS]
        for group in groups.values()
        for i in range(0, len(group), TASK_TRACKLETS)
    ]


def _render_all(config: SynthConfig, root: str, plan: Plan) -> None:
    from tqdm import tqdm

    settings = RenderSettings.of(config)
    tasks = _tasks(plan.tracklets)
    total = sum(len(t.positions) for t in plan.tracklets)
    with tqdm(
        total=total, unit="frame", desc=f"dal synth {config.layout}", disable=None, mininterval=1.0
    ) as bar:
        if config.workers == 1:
            for task in tasks:
                bar.update(write_tracklets(settings, root, task))
            return
        # spawn: no fork of a process whose threads (tqdm's monitor) may hold locks.
        with ProcessPoolExecutor(max_workers=config.workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(write_tracklets, settings, root, task) for task in tasks]
            try:
                for future in as_completed(futures):
                    bar.update(future.result())
            except BaseException:
                pool.shutdown(cancel_futures=True)  # fail now, not after the queued tasks ran
                raise


# ---------------------------------------------------------------------------------------------
# MARS info/


def _mat_bytes(name: str, array: np.ndarray) -> bytes:
    """A MATLAB 5 file; the header's creation time is fixed so that the same seed gives the same bytes."""
    import scipy.io

    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {name: array}, format="5", do_compression=False, oned_as="row")
    data = bytearray(buffer.getvalue())
    data[:116] = b"MATLAB 5.0 MAT-file, written by dal synth".ljust(116, b" ")
    return bytes(data)


def write_mars_info(root: str, plan: Plan) -> None:
    info = os.path.join(root, "info")
    for subset, name in (("bbox_train", "train"), ("bbox_test", "test")):
        lines: list[str] = []
        rows = []
        for tracklet in (t for t in plan.tracklets if t.subset == subset):
            first = len(lines) + 1
            lines.extend(os.path.basename(frame_path("mars", tracklet, n)) for n in tracklet.numbers)
            rows.append((first, len(lines), tracklet.person, tracklet.camera))
        storage.write_bytes(os.path.join(info, f"{name}_name.txt"), "".join(f"{x}\n" for x in lines).encode())
        table = np.asarray(rows, dtype=np.int32).reshape(-1, 4)
        storage.write_bytes(
            os.path.join(info, f"tracks_{name}_info.mat"), _mat_bytes(f"track_{name}_info", table)
        )
    queries = np.asarray(plan.query_rows, dtype=np.int64) + 1
    dtype = np.uint16 if queries.size == 0 or queries.max() <= np.iinfo(np.uint16).max else np.uint32
    storage.write_bytes(
        os.path.join(info, "query_IDX.mat"), _mat_bytes("query_IDX", queries.astype(dtype)[None, :])
    )


# ---------------------------------------------------------------------------------------------
# The step


def count(plan: Plan) -> dict[str, int]:
    tracklets = plan.tracklets
    persons = {t.appearance for t in tracklets if t.person > 0}
    counts = {
        "persons": len(persons),
        "cameras": len({t.camera for t in tracklets}),
        "tracklets": len(tracklets),
        "frames": sum(len(t.positions) for t in tracklets),
    }
    if any(t.subset.startswith("bbox_") for t in tracklets):
        for subset in ("bbox_train", "bbox_test"):
            counts[f"{subset}_tracklets"] = sum(1 for t in tracklets if t.subset == subset)
        counts["junk_tracklets"] = sum(1 for t in tracklets if t.person == JUNK)
        counts["distractor_tracklets"] = sum(1 for t in tracklets if t.person == DISTRACTOR)
        counts["queries"] = len(plan.query_rows)
    return counts


def _check_output(output: str) -> None:
    """Refuse to replace anything that is not empty or an earlier dal synth output."""
    if os.path.isdir(output):
        if os.listdir(output) and not os.path.isfile(os.path.join(output, SYNTH_JSON)):
            raise DalError(
                f"output: {output} exists and is not an earlier dal synth output (no {SYNTH_JSON})"
            )
    elif os.path.exists(output):
        raise DalError(f"output: {output} exists and is not a directory")


def _publish(tmp: str, output: str) -> None:
    """Move the finished tree into place; an earlier output is swapped out, then deleted."""
    old = None
    if os.path.isdir(output) and os.listdir(output):
        old = f"{tmp}.old"
        os.rename(output, old)
    os.replace(tmp, output)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def run(config: SynthConfig) -> dict[str, Any]:
    started = time.perf_counter()
    output = storage.resolve(config.output)[1]
    _check_output(output)
    plan = make_plan(config)
    if not plan.tracklets:
        raise DalError("the config selects no tracklets")
    counts = count(plan)
    parent, name = os.path.split(output)
    tmp = os.path.join(parent, f".{name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        os.makedirs(tmp)
        _render_all(config, tmp, plan)
        if config.layout == "mars" and config.with_info:
            write_mars_info(tmp, plan)
        storage.write_json(
            os.path.join(tmp, SYNTH_JSON),
            {"generator": "dal synth", "format": FORMAT_VERSION, "config": to_dict(config), "counts": counts},
        )
        _check_output(output)  # again: something may have appeared while rendering
        _publish(tmp, output)
    except OSError as exc:
        raise DalError(f"output: writing {output} failed ({exc})") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - started
    summary = {
        "output": output,
        "layout": config.layout,
        **counts,
        "seconds": round(seconds, 2),
        "frames_per_second": round(counts["frames"] / max(seconds, 1e-9), 1),
    }
    log.info("dal synth: %s", summary)
    return summary

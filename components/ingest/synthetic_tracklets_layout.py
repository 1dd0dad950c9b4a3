"""``dal synth --layout tracklets``: a MARS-planned set written as users' own tracklets.

The layout of ``--dataset tracklets`` (components.ingest.datasets.tracklets):

* ``cam<c>/track<k>/<frame>.jpg`` -- camera ``c`` 1-based as in the plan, frames JPEG (as MARS) and
  named by their plan numbers without padding (``2.jpg``, ``10.jpg``: natural order matters);
* ``index.csv`` -- columns ``path,camera,tracklet,frame,person``, one row per frame, tracklets in
  camera and folder order. ``person`` is the plan's person id for the MARS test persons
  (``bbox_test``, id > 0): the labelled subset, which ingest holds out for evaluation. Training
  persons, junk and distractors stay unlabelled (empty), as footage nobody annotated.

So ``dal ingest --dataset tracklets --source S`` reads the frames with these labels (it finds
``S/index.csv``), and the reader on the folders alone (``datasets.tracklets.open_source(S)``) sees
the same tracklets, all unlabelled and train.

Folder names are opaque: within a camera, tracklets are numbered 1, 2, ... in a seeded random order
of the whole plan, so neither the names nor the order ingest writes them in tell persons or
subsets apart (the plan lists tracklets by subset and person).
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.csv as pacsv

from components.ingest.synthetic_config import SynthConfig
from components.ingest.synthetic_encode import encode_jpeg
from components.ingest.synthetic_random import keyed_rng
from components.ingest.synthetic_render import RenderSettings, render_tracklet
from components.ingest.synthetic_tracklets import SynthPlan, Tracklet
from components.ingest.synthetic_write import run_tasks, tasks_by_person

INDEX_FILE = "index.csv"
# Key domain of the folder-name order; synthetic_random's domains are 1-5 and 11-14.
KEY_LAYOUT_NAMES = 21
Task = list[tuple[Tracklet, str]]  # tracklets of one person and their folders


def tracklet_folders(config: SynthConfig, plan: SynthPlan) -> dict[Tracklet, str]:
    """``cam<c>/track<k>`` of every tracklet of the plan (see module doc)."""
    shuffled = keyed_rng(config.seed, KEY_LAYOUT_NAMES).permutation(len(plan.tracklets))
    numbers: dict[int, int] = {}
    folders = {}
    for index in shuffled.tolist():
        tracklet = plan.tracklets[index]
        numbers[tracklet.camera] = numbers.get(tracklet.camera, 0) + 1
        folders[tracklet] = f"cam{tracklet.camera}/track{numbers[tracklet.camera]}"
    return folders


def label_of(tracklet: Tracklet) -> int | None:
    """The ``person`` of index.csv: the MARS test persons are labelled, the rest is not."""
    return tracklet.person if tracklet.subset == "bbox_test" and tracklet.person > 0 else None


def write_tracklets_layout(config: SynthConfig, root: str, plan: SynthPlan) -> None:
    """Render ``plan`` into the folder layout under ``root`` and write ``index.csv``.

    ``config`` is the MARS-planned config (``SynthConfig.planned``); ``root`` is dal synth's
    staging directory, published as a whole afterwards.
    """
    folders = tracklet_folders(config, plan)
    settings = RenderSettings.of(config)
    tasks = [(settings, root, [(t, folders[t]) for t in group]) for group in tasks_by_person(plan.tracklets)]
    total = sum(len(t.positions) for t in plan.tracklets)
    run_tasks(write_task, tasks, config.workers, total, "dal synth tracklets")
    write_index(os.path.join(root, INDEX_FILE), plan, folders)


def write_task(settings: RenderSettings, root: str, task: Task) -> int:
    """Render and write the frames of one task's tracklets; returns the frame count.

    Plain writes, as synthetic_write: the whole tree is published at once by a rename.
    """
    cache: dict = {}
    written = 0
    for tracklet, folder in task:
        directory = os.path.join(root, folder)
        os.makedirs(directory, exist_ok=True)
        numbers = iter(tracklet.numbers)
        for block in render_tracklet(settings, tracklet, cache):
            for image in block:
                with open(os.path.join(directory, f"{next(numbers)}.jpg"), "wb") as handle:
                    handle.write(encode_jpeg(image))
                written += 1
    return written


INDEX_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("camera", pa.string()),
        ("tracklet", pa.string()),
        ("frame", pa.int32()),
        ("person", pa.int32()),  # null: unlabelled, written as an empty cell
    ]
)


def write_index(path: str, plan: SynthPlan, folders: dict[Tracklet, str]) -> None:
    """index.csv: one row per frame, tracklets ordered by camera and folder number, streamed one
    tracklet at a time (a plain write, as the frames)."""
    ordered = sorted(plan.tracklets, key=lambda t: (t.camera, int(folders[t].rsplit("track", 1)[1])))
    with (
        open(path, "wb") as handle,
        pacsv.CSVWriter(
            handle, INDEX_SCHEMA, write_options=pacsv.WriteOptions(quoting_style="needed")
        ) as writer,
    ):
        for tracklet in ordered:
            camera, name = folders[tracklet].split("/")
            count = len(tracklet.numbers)
            columns = {
                "path": [f"{camera}/{name}/{number}.jpg" for number in tracklet.numbers],
                "camera": [camera] * count,
                "tracklet": [name] * count,
                "frame": list(tracklet.numbers),
                "person": [label_of(tracklet)] * count,
            }
            writer.write_table(pa.table(columns, schema=INDEX_SCHEMA))

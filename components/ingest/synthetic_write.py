"""Rendering and writing a plan's frame files under a directory, in a pool of processes."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

from components.ingest.synthetic_config import SynthConfig
from components.ingest.synthetic_encode import encoder_for
from components.ingest.synthetic_names import frame_path
from components.ingest.synthetic_render import RenderSettings, render_tracklet
from components.ingest.synthetic_tracklets import SynthPlan, Tracklet

TASK_TRACKLETS = 64  # tracklets per rendering task at most (keeps a person's sprites in one process)


def write_frames(config: SynthConfig, root: str, plan: SynthPlan) -> None:
    """Every frame of ``plan`` under ``root``, on ``config.workers`` processes."""
    settings = RenderSettings.of(config)
    tasks = [(settings, root, task) for task in tasks_by_person(plan.tracklets)]
    total = sum(len(t.positions) for t in plan.tracklets)
    run_tasks(write_tracklets, tasks, config.workers, total, f"dal synth {config.layout}")


def run_tasks(
    write: Callable[..., int], tasks: Sequence[tuple], workers: int, total_frames: int, desc: str
) -> None:
    """``write(*task)`` for every task (each returns the frames it wrote), on ``workers`` processes,
    with a progress bar over ``total_frames``; the first failure stops the rest."""
    from tqdm import tqdm

    with tqdm(total=total_frames, unit="frame", desc=desc, disable=None, mininterval=1.0) as bar:
        if workers == 1:
            for task in tasks:
                bar.update(write(*task))
            return
        # spawn: no fork of a process whose threads (tqdm's monitor) may hold locks.
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(write, *task) for task in tasks]
            try:
                for future in as_completed(futures):
                    bar.update(future.result())
            except BaseException:
                pool.shutdown(cancel_futures=True)  # fail now, not after the queued tasks ran
                raise


def write_tracklets(settings: RenderSettings, root: str, tracklets: list[Tracklet]) -> int:
    """Render and write the frames of some tracklets under ``root``; returns the frame count.

    Plain file writes: the whole tree is published at once by renaming its temp directory, so a
    per-file temp + fsync (storage.write_bytes) would only multiply the cost of ~1 M small files.
    """
    cache: dict = {}
    encode = encoder_for(settings.layout)
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


def tasks_by_person(tracklets: list[Tracklet]) -> list[list[Tracklet]]:
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

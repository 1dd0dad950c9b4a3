"""Tiny stored datasets and model artifacts for the extract / evaluate tests.

Datasets are written with the real DatasetWriter (so every reader path is the production one)
from generated PNG frames: each person wears two colours of their own, each camera shifts the
brightness, frames jitter. Layouts follow the real benchmarks' structure in miniature:

* ``mars``: train persons in two cameras; test persons in two or three cameras, some with a
  second tracklet in the query's camera (junk for that query); distractors (person 0) and junk
  (person -1) tracklets; one query tracklet per test person.
* ``prid2011``: every person has one tracklet in camera 0 and one in camera 1; a splits table
  with half the persons in test per split.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from components.common.dataset import DatasetWriter

SIZE = (32, 16)  # (height, width) of stored frames and of the test models' input


def frame(
    person: int,
    camera: int,
    index: int,
    rng: np.random.Generator,
    size: tuple[int, int] = SIZE,
    symmetric: bool = False,
) -> bytes:
    """A PNG frame: the person's upper/lower colours, a camera brightness shift, noise (made
    left-right symmetric, its own mirror image, with ``symmetric``)."""
    colours = np.random.default_rng(1000 + person).integers(30, 226, size=(2, 3))
    height, width = size
    image = np.empty((height, width, 3), dtype=np.float64)
    image[: height // 2] = colours[0]
    image[height // 2 :] = colours[1]
    image += 20 * camera - 10 + rng.normal(0, 6, image.shape)
    shift = int(index % 3) - 1  # a small horizontal jitter along the tracklet
    image = np.roll(image, shift, axis=1)
    if symmetric:
        image = (image + image[:, ::-1]) / 2
    buffer = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _tracklet_rows(layout: str, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []

    def add(person: int, camera: int, subset: str, is_query: bool = False) -> None:
        rows.append(
            {
                "person_id": person,
                "camera_id": camera,
                "subset": subset,
                "is_query": is_query,
                "num_frames": int(rng.integers(2, 6)),
            }
        )

    if layout == "mars":
        for person in (1, 2, 3):
            add(person, 0, "train")
            add(person, 1, "train")
        for person in (4, 5, 6, 7, 8):
            add(person, 0, "test", is_query=True)
            add(person, 1, "test")
            if person % 2 == 0:
                add(person, 2, "test")
            if person == 5:
                add(person, 0, "test")  # same person and camera as the query: junk for it
        add(0, 1, "test")  # distractors
        add(0, 2, "test")
        add(-1, 0, "test")  # junk
    elif layout == "prid2011":
        for person in range(1, 9):
            add(person, 0, "train" if person <= 4 else "test")
            add(person, 1, "train" if person <= 4 else "test")
    else:
        raise ValueError(layout)
    return rows


def prid_splits(num_persons: int = 8, num_splits: int = 3, seed: int = 0) -> pd.DataFrame:
    """Split 0: persons 1..4 train, 5..8 test (matching the tracklets' subset); others shuffled."""
    rng = np.random.default_rng(seed)
    persons = np.arange(1, num_persons + 1)
    records = []
    for split in range(num_splits):
        test = persons[num_persons // 2 :] if split == 0 else rng.permutation(persons)[: num_persons // 2]
        for person in persons:
            records.append(
                {"split": split, "person_id": person, "role": "test" if person in test else "train"}
            )
    return pd.DataFrame(records)


def write_dataset(
    root: str,
    layout: str = "mars",
    *,
    seed: int = 0,
    row_group_rows: int = 7,
    size: tuple[int, int] = SIZE,
    symmetric: bool = False,
) -> dict[str, Any]:
    """Write a published tiny dataset of ``layout`` (manifest name = the layout) to ``root``."""
    rows = _tracklet_rows(layout, seed)
    rng = np.random.default_rng(seed + 1)
    with DatasetWriter(root, layout, row_group_rows=row_group_rows) as writer:
        for tracklet, row in enumerate(rows):
            count = row["num_frames"]
            writer.add_frames(
                {
                    "tracklet_id": [tracklet] * count,
                    "frame_index": list(range(count)),
                    "person_id": [row["person_id"]] * count,
                    "camera_id": [row["camera_id"]] * count,
                    "image": [
                        frame(row["person_id"], row["camera_id"], i, rng, size, symmetric)
                        for i in range(count)
                    ],
                    "source_path": [f"t{tracklet}/{i:03d}.png" for i in range(count)],
                }
            )
        tracklets = pd.DataFrame(rows)
        tracklets.insert(0, "tracklet_id", range(len(rows)))
        tracklets["name"] = [f"t{t:04d}" for t in range(len(rows))]
        splits = prid_splits() if layout == "prid2011" else None
        return writer.finish(tracklets, splits)


def write_model(
    uri: str, backbone: str = "timm:test_efficientnet", seed: int = 0, size: tuple[int, int] = SIZE
):
    """A randomly initialised model artifact (stands in for `dal train` output); returns the module."""
    import torch

    from components.model.artifact import ModelInfo, save_model
    from components.model.backbones import build_backbone

    torch.manual_seed(seed)
    model = build_backbone(backbone).eval()
    save_model(
        uri,
        model,
        ModelInfo(
            backbone=backbone, feature_dim=model.feature_dim, image_height=size[0], image_width=size[1]
        ),
    )
    return model

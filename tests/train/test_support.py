"""Tiny re-ID datasets for the training tests, written with the real DatasetWriter.

Identities are easy on purpose: each person wears two clothing colours (top / bottom) and a
stripe; each camera adds its own background and colour cast, each frame a small shift and
noise. Raw pixels already separate persons roughly, so a few CPU steps can learn them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.io import encode_jpeg

from components.common.dataset import Dataset, DatasetWriter
from components.train.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Spec:
    persons: int = 8
    cameras: int = 2
    frames: int = 8  # per tracklet
    train_persons: int | None = None  # default: all persons train, plus `test_persons` more
    test_persons: int = 2
    height: int = 64
    width: int = 32
    row_group_rows: int = 32
    seed: int = 0
    name: str = "synthetic"
    tracklets_per_camera: int = 1  # tracklets of one person in one camera


def render(person_colors: np.ndarray, camera: int, rng: np.random.Generator, spec: Spec) -> np.ndarray:
    """One frame (H, W, 3) uint8 of a person (top, bottom, stripe colours) in a camera."""
    h, w = spec.height, spec.width
    cast = np.array([[1.0, 0.9, 0.8], [0.8, 0.95, 1.1], [1.1, 0.85, 0.95], [0.9, 1.1, 0.9]])[camera % 4]
    background = np.array([[40, 90, 40], [90, 90, 120], [120, 70, 50], [60, 60, 60]])[camera % 4]
    image = np.broadcast_to(background, (h, w, 3)).astype(np.float64).copy()
    dy, dx = rng.integers(-h // 16, h // 16 + 1), rng.integers(-w // 8, w // 8 + 1)
    top, bottom, left, right = h // 8 + dy, h - h // 8 + dy, w // 4 + dx, w - w // 4 + dx
    middle = (top + bottom) // 2
    image[max(top, 0) : middle, max(left, 0) : right] = person_colors[0]
    image[middle : max(bottom, 0), max(left, 0) : right] = person_colors[1]
    stripe = top + (middle - top) // 2
    image[max(stripe, 0) : max(stripe + max(h // 16, 1), 0), max(left, 0) : right] = person_colors[2]
    image = image * cast + rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_dataset(root: str, spec: Spec = Spec()) -> dict:
    """Write and publish a dataset; train persons first, then test persons (MARS-like order)."""
    rng = np.random.default_rng(spec.seed)
    train_persons = spec.persons if spec.train_persons is None else spec.train_persons
    total_persons = train_persons + spec.test_persons
    colors = rng.integers(0, 256, (total_persons, 3, 3)).astype(np.float64)
    rows = []
    with DatasetWriter(root, spec.name, row_group_rows=spec.row_group_rows) as writer:
        tracklet = 0
        for person in range(total_persons):
            for camera in range(spec.cameras):
                for _ in range(spec.tracklets_per_camera):
                    frames = [
                        encode_jpeg(
                            torch.from_numpy(render(colors[person], camera, rng, spec)).permute(2, 0, 1)
                        )
                        for _ in range(spec.frames)
                    ]
                    writer.add_frames(
                        {
                            "tracklet_id": [tracklet] * spec.frames,
                            "frame_index": list(range(spec.frames)),
                            "person_id": [person + 1] * spec.frames,
                            "camera_id": [camera] * spec.frames,
                            "image": [bytes(f.numpy()) for f in frames],
                            "source_path": [
                                f"p{person}/c{camera}/t{tracklet}/{i}.jpg" for i in range(spec.frames)
                            ],
                        }
                    )
                    rows.append(
                        {
                            "tracklet_id": tracklet,
                            "person_id": person + 1,
                            "camera_id": camera,
                            "subset": "train" if person < train_persons else "test",
                            "is_query": person >= train_persons and camera == 0,
                            "num_frames": spec.frames,
                            "name": f"p{person}c{camera}t{tracklet}",
                        }
                    )
                    tracklet += 1
        return writer.finish(pd.DataFrame(rows))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread for in-process training: on a shared 2-core box two threads per process
    run several times slower, and the runs that tests compare do identical arithmetic."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def tiny_config(dataset: str, output: str, **overrides: object) -> TrainConfig:
    """A few CPU steps of a ~0.1 M-parameter backbone on 32x16 frames, tracking off by default."""
    values: dict[str, object] = {
        "dataset": dataset,
        "output": output,
        "backbone": "timm:test_efficientnet",
        "weights": "",  # random init: ImageNet weights are bundled for mobilenet_v2 only
        "image_height": 32,
        "image_width": 16,
        "batch_size": 8,
        "steps": 6,
        "workers": 0,
        "log_every": 2,
        "checkpoint_every": 2,
        "keep_checkpoints": 2,
        "warmup_epochs": 1,
        **overrides,
    }
    return TrainConfig(**values)


def test_written_dataset_has_the_requested_structure(tmp_path) -> None:
    spec = Spec(persons=3, cameras=3, frames=4, test_persons=1, row_group_rows=8)
    manifest = write_dataset(str(tmp_path / "ds"), spec)
    assert manifest["counts"]["tracklets"] == 4 * 3
    assert manifest["counts"]["train_tracklets"] == 3 * 3
    assert manifest["num_cameras"] == 3
    dataset = Dataset.open(str(tmp_path / "ds"))
    frames = pd.concat(t.to_pandas() for t in dataset.iter_frames(["tracklet_id", "camera_id", "person_id"]))
    assert len(frames) == 12 * 4
    assert all(r.num_rows == 8 for r in dataset.row_groups())


def test_persons_are_separable_by_colour_across_cameras() -> None:
    """The helper is only useful if identity beats camera: the clothing colours of a person seen
    by camera 0 are nearest to the same person's in camera 1 (a chance-level helper fails this)."""
    spec = Spec(persons=6, cameras=2)
    rng = np.random.default_rng(1)
    colors = rng.integers(0, 256, (6, 3, 3)).astype(np.float64)
    h, w = spec.height, spec.width

    def clothing(person: int, camera: int) -> np.ndarray:
        image = render(colors[person], camera, rng, spec).astype(np.float64)
        inner = slice(w // 4 + 4, -w // 4 - 4)
        top, bottom = image[h // 8 + 4 : h // 2 - 2, inner], image[h // 2 + 2 : -h // 8 - 4, inner]
        return np.concatenate([top.mean((0, 1)), bottom.mean((0, 1))])

    gallery = np.stack([clothing(p, 1) for p in range(6)])
    hits = sum(int(np.argmin(((gallery - clothing(p, 0)) ** 2).sum(1)) == p) for p in range(6))
    assert hits >= 5

"""Anchor initialisation from the initial model's features (anchor_init=features) against zero."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from components.common import images
from components.common.dataset import Dataset
from components.common.distributed import DistEnv
from components.model.artifact import IMAGENET_MEAN, IMAGENET_STD
from components.model.backbones import build_backbone
from components.train import checkpoint as ckpt
from components.train.anchors import initial_anchor_features
from components.train.data import build_index
from components.train.run import run
from tests.train.test_support import Spec, one_thread, tiny_config, write_dataset

pytestmark = pytest.mark.usefixtures(one_thread.__name__)

SPEC = Spec(persons=5, cameras=2, frames=6, test_persons=1, row_group_rows=8, height=32, width=16)
ONE_PROCESS = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("anchors") / "ds")
    write_dataset(root, SPEC)
    return root


def _by_hand(dataset: Dataset, tracklet: int, model: torch.nn.Module, positions: list[int]) -> torch.Tensor:
    """Max-pool of the L2-normalised features of some frames of one tracklet, computed directly."""
    columns = ["tracklet_id", "frame_index", "image"]
    table = pa.concat_tables(dataset.iter_frames(columns))  # a tracklet may span row groups
    ids, positions_in = table.column("tracklet_id").to_pylist(), table.column("frame_index").to_pylist()
    rows = [
        i for i, (t, f) in enumerate(zip(ids, positions_in, strict=True)) if t == tracklet and f in positions
    ]
    batch = torch.stack(
        [images.resize(images.decode(table.column("image")[i].as_py()), (32, 16)) for i in rows]
    )
    with torch.no_grad():
        features = model(images.normalize(batch, IMAGENET_MEAN, IMAGENET_STD))
    return F.normalize(F.normalize(features, dim=1).amax(0), dim=0)


def test_each_anchor_starts_at_its_tracklets_feature(dataset: str) -> None:
    data = Dataset.open(dataset)
    index = build_index(data, 0)
    torch.manual_seed(0)
    model = build_backbone("timm:test_efficientnet").eval()
    features = initial_anchor_features(data, index, model, (32, 16), 3, ONE_PROCESS)
    assert [tuple(f.shape) for f in features] == [(5, model.feature_dim)] * 2  # 5 train persons per camera
    for camera in range(2):
        for local, tracklet in enumerate(index.global_ids(camera)):
            # 3 of 6 frames, evenly spaced: 0, 2 (2.5 rounds to even) and 5
            expected = _by_hand(data, int(tracklet), model, [0, 2, 5])
            torch.testing.assert_close(features[camera][local], expected, atol=1e-6, rtol=1e-5)


def test_training_starts_from_the_features_or_from_zero(dataset: str, tmp_path) -> None:
    """After one step, anchors of tracklets outside the first batch are still where they started."""
    starts = {}
    for init in ("features", "zero"):
        config = tiny_config(dataset, str(tmp_path / init), steps=1, checkpoint_every=1, anchor_init=init)
        summary = run(config)
        starts[init] = ckpt.load_checkpoint(summary.checkpoint)["objective"]
    data = Dataset.open(dataset)
    index = build_index(data, 0)
    torch.manual_seed(0)  # tiny_config's seed: the init that training started from
    model = build_backbone("timm:test_efficientnet").eval()
    expected = initial_anchor_features(data, index, model, (32, 16), 8, ONE_PROCESS)
    untouched = 0
    for camera in range(2):
        zero, started = (starts[k][f"association.intra_anchor_{camera}"] for k in ("zero", "features"))
        for row in np.flatnonzero(zero.abs().sum(1).numpy() == 0):  # not in the first batch
            torch.testing.assert_close(started[row], expected[camera][row])
            untouched += 1
        assert (started.norm(dim=1) > 0.5).all()  # every anchor started somewhere
    assert 0 < untouched < 10

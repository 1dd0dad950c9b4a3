"""The stored dataset contract: writer publishes last, reader refuses anything unpublished."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from components.common import storage
from components.common.dataset import Dataset, DatasetError, DatasetWriter


def _frames(tracklet: int, n: int, person: int, camera: int) -> dict[str, list]:
    return {
        "tracklet_id": [tracklet] * n,
        "frame_index": list(range(n)),
        "person_id": [person] * n,
        "camera_id": [camera] * n,
        "image": [bytes([tracklet, i]) * 50 for i in range(n)],
        "source_path": [f"t{tracklet}/{i}.jpg" for i in range(n)],
    }


def _tracklets(sizes: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "tracklet_id": range(len(sizes)),
            "person_id": [t // 2 + 1 for t in range(len(sizes))],
            "camera_id": [t % 2 for t in range(len(sizes))],
            "subset": ["train" if t < 4 else "test" for t in range(len(sizes))],
            "is_query": [t == 4 for t in range(len(sizes))],
            "num_frames": sizes,
            "name": [f"t{t}" for t in range(len(sizes))],
        }
    )


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "ds")
    return request.getfixturevalue("s3_bucket") + "/ds"


def _write(root: str, sizes: list[int], **kwargs) -> dict:
    with DatasetWriter(root, "synthetic", **kwargs) as writer:
        for t, n in enumerate(sizes):
            writer.add_frames(_frames(t, n, t // 2 + 1, t % 2))
        return writer.finish(_tracklets(sizes))


def test_roundtrip_row_groups_and_shards(root: str) -> None:
    sizes = [7, 5, 9, 3, 6, 4]
    manifest = _write(root, sizes, row_group_rows=8, shard_target_bytes=1500)
    assert manifest["counts"]["frames"] == sum(sizes)
    assert len(manifest["shards"]) > 1
    dataset = Dataset.open(root)
    dataset.verify()
    refs = dataset.row_groups()
    assert [r.num_rows for r in refs][:-1] == [8] * (len(refs) - 1)
    frames = pd.concat(t.to_pandas() for t in dataset.iter_frames(["tracklet_id", "frame_index"]))
    assert frames.groupby("tracklet_id").size().tolist() == sizes
    for ref in refs:
        ids = dataset.read_row_group(ref, ["tracklet_id"]).column("tracklet_id").to_pylist()
        assert (min(ids), max(ids)) == (ref.tracklet_min, ref.tracklet_max)
    assert dataset.subset_tracklets("train")["tracklet_id"].tolist() == [0, 1, 2, 3]


def test_interrupted_write_publishes_nothing(root: str) -> None:
    with pytest.raises(RuntimeError, match="boom"), DatasetWriter(root, "synthetic", row_group_rows=4) as w:
        w.add_frames(_frames(0, 10, 1, 0))
        raise RuntimeError("boom")
    with pytest.raises(DatasetError, match="no manifest"):
        Dataset.open(root)
    _write(root, [3, 3])  # a rerun completes
    assert Dataset.open(root).manifest["counts"]["tracklets"] == 2


def test_rerun_unpublishes_old_dataset_first(root: str) -> None:
    _write(root, [3, 3])
    writer = DatasetWriter(root, "synthetic")
    with pytest.raises(DatasetError, match="no manifest"):
        Dataset.open(root)
    writer.abort()


def test_reader_rejects_tampered_manifest(root: str) -> None:
    _write(root, [3, 3])
    manifest = storage.read_json(storage.join(root, "manifest.json"))
    manifest["shards"][0]["bytes"] += 1
    storage.write_json(storage.join(root, "manifest.json"), manifest)
    with pytest.raises(DatasetError, match="part-00000.parquet"):
        Dataset.open(root)
    manifest["schema_version"] = 99
    storage.write_bytes(storage.join(root, "manifest.json"), json.dumps(manifest).encode())
    with pytest.raises(DatasetError, match="schema_version"):
        Dataset.open(root)


def test_inconsistent_tables_are_refused(tmp_path) -> None:
    with (
        pytest.raises(DatasetError, match="counts 7 frames, shards hold 6"),
        DatasetWriter(str(tmp_path), "synthetic") as writer,
    ):
        writer.add_frames(_frames(0, 3, 1, 0))
        writer.add_frames(_frames(1, 3, 1, 1))
        writer.finish(_tracklets([3, 4]))
    assert not (tmp_path / "manifest.json").exists()
    with pytest.raises(DatasetError, match="empty dataset"), DatasetWriter(str(tmp_path), "x") as writer:
        writer.finish(_tracklets([1]))

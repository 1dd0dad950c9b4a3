"""``dal ingest``: raw tree -> published dataset -> read back; bad input; atomicity; streaming.

Raw trees are tiny fixtures in the real layouts (tests/ingest/test_readers.py); the S3 cases use
the real moto server from tests/conftest.py.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from components.cli import main as cli_main
from components.common import storage
from components.common.config import ConfigError
from components.common.dataset import Dataset, DatasetError
from components.ingest import raw_frames
from components.ingest.config import IngestConfig
from components.ingest.run import open_source, run
from tests.ingest.test_readers import upload_tree, write_ilids, write_mars, write_prid, write_split_lists

REPO = Path(__file__).resolve().parents[2]

LAYOUTS = {
    "mars": lambda root: write_mars(root, with_info=True),
    "mars-noinfo": write_mars,
    "prid2011": write_prid,
    "ilidsvid": lambda root: write_ilids(root, mat=[[3, 1, 2, 6, 5, 4]]),
}


def _config(layout: str, source, output, **kwargs) -> IngestConfig:
    dataset = "mars" if layout.startswith("mars") else layout
    return IngestConfig(dataset=dataset, source=str(source), output=str(output), progress=False, **kwargs)


def _read_back(config: IngestConfig) -> None:
    """The published dataset holds exactly the reader's tracklets, splits and the source bytes."""
    dataset = Dataset.open(config.output)
    dataset.verify()
    raw = open_source(config)
    expected = list(raw.tracklets())
    tracklets = dataset.tracklets()
    assert tracklets.tracklet_id.tolist() == list(range(len(expected)))
    assert tracklets.name.tolist() == [t.name for t in expected]
    assert tracklets.person_id.tolist() == [t.person_id for t in expected]
    assert tracklets.camera_id.tolist() == [t.camera_id for t in expected]
    assert tracklets.subset.tolist() == [t.subset for t in expected]
    assert tracklets.is_query.tolist() == [t.is_query for t in expected]
    assert tracklets.num_frames.tolist() == [len(t.frames) for t in expected]
    frames = pd.concat(
        t.to_pandas() for t in dataset.iter_frames(["tracklet_id", "frame_index", "source_path"])
    )
    assert frames.source_path.tolist() == [f for t in expected for f in t.frames]
    assert frames.frame_index.tolist() == [i for t in expected for i in range(len(t.frames))]
    for ref in dataset.row_groups():  # tracklets are contiguous: row groups cover narrow id ranges
        ids = dataset.read_row_group(ref, ["tracklet_id"]).column("tracklet_id").to_pylist()
        assert ids == sorted(ids) and set(ids) == set(range(ref.tracklet_min, ref.tracklet_max + 1))
    for table in dataset.iter_frames(["image", "source_path"]):
        for image, path in zip(
            table.column("image").to_pylist(), table.column("source_path").to_pylist(), strict=True
        ):
            assert image == storage.read_bytes(raw.frame_uri(path))
    if raw.splits is None:
        assert dataset.splits() is None
    else:
        assert (
            dataset.splits()
            .sort_values(["split", "role", "person_id"], ignore_index=True)
            .equals(raw.splits.astype(dataset.splits().dtypes))
        )
        last = int(raw.splits.split.max())
        test_persons = set(raw.splits[(raw.splits.split == last) & (raw.splits.role == "test")].person_id)
        assert set(dataset.subset_tracklets("test", split=last).person_id) == test_persons
    manifest = dataset.manifest
    assert manifest["counts"]["frames"] == sum(len(t.frames) for t in expected)
    assert manifest["ingest"]["skipped_corrupt"] == 0
    assert manifest["ingest"]["source"] == config.source
    assert manifest["ingest"]["config"]["dataset"] == config.dataset


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_ingest_and_read_back_local(tmp_path: Path, layout: str) -> None:
    source = LAYOUTS[layout](tmp_path / "raw")
    config = _config(layout, source, tmp_path / "ds", row_group_rows=8, shard_size_mb=0.005)
    summary = run(config)
    assert summary["counts"]["frames"] > 0 and summary["shards"] > 1
    _read_back(config)


@pytest.mark.integration
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_ingest_and_read_back_s3(tmp_path: Path, s3_bucket: str, layout: str) -> None:
    source = LAYOUTS[layout](tmp_path / "raw")
    config = _config(layout, source, f"{s3_bucket}/datasets/{layout}", row_group_rows=16, shard_size_mb=0.005)
    assert run(config)["shards"] > 1
    _read_back(config)


@pytest.mark.integration
def test_ingest_from_an_s3_source(tmp_path: Path, s3_bucket: str, s3_env) -> None:
    upload_tree(write_ilids(tmp_path / "raw"), f"{s3_bucket}/raw", s3_env)
    config = _config("ilidsvid", f"{s3_bucket}/raw/", f"{s3_bucket}/ds", workers=2)
    run(config)
    assert Dataset.open(f"{s3_bucket}/ds").manifest["ingest"]["source"] == f"{s3_bucket}/raw"
    _read_back(_config("ilidsvid", f"{s3_bucket}/raw", f"{s3_bucket}/ds", workers=2))


def test_split_lists_and_rerun_is_deterministic(tmp_path: Path) -> None:
    source = write_prid(tmp_path / "raw")
    lists = write_split_lists(
        tmp_path / "lists", [(["person_0001", "person_0002"], ["person_0003", "person_0006"])]
    )
    config = _config("prid2011", source, tmp_path / "ds", split_lists=str(lists))
    first = run(config)
    manifest = Dataset.open(config.output).manifest
    assert first["counts"]["persons"] == 4 and first["counts"]["splits"] == 1
    assert "split lists" in manifest["ingest"]["protocol"]["persons"]
    run(config)  # a rerun over a published dataset rebuilds it, byte for byte
    again = Dataset.open(config.output).manifest
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in manifest["shards"]]
    assert again["files"] == manifest["files"]


def test_reencode_to_jpeg(tmp_path: Path) -> None:
    config = _config("prid2011", write_prid(tmp_path / "raw"), tmp_path / "ds", jpeg_quality=90)
    run(config)
    dataset = Dataset.open(config.output)
    assert dataset.manifest["ingest"]["image_encoding"]["formats"] == {
        "JPEG": dataset.manifest["counts"]["frames"]
    }
    assert "quality 90" in dataset.manifest["ingest"]["image_encoding"]["stored"]
    image = next(dataset.iter_frames(["image"])).column("image")[0].as_py()
    with Image.open(io.BytesIO(image)) as decoded:
        assert decoded.format == "JPEG" and decoded.size == (8, 16)


# -- corrupt frames ---------------------------------------------------------------------------


def _corrupt(source: Path) -> tuple[str, str]:
    """Garble one frame and truncate another; return their paths relative to ``source``."""
    garbled = source / "multi_shot" / "cam_a" / "person_0002" / "0003.png"
    garbled.write_bytes(b"not an image at all")
    truncated = source / "multi_shot" / "cam_b" / "person_0004" / "0010.png"
    truncated.write_bytes(truncated.read_bytes()[:-40])
    return (garbled.relative_to(source).as_posix(), truncated.relative_to(source).as_posix())


def test_corrupt_frames_fail_or_are_skipped_and_counted(tmp_path: Path, capsys) -> None:
    source = write_prid(tmp_path / "raw")
    bad = _corrupt(source)
    output = tmp_path / "ds"
    code = cli_main(["ingest", "--dataset", "prid2011", "--source", str(source), "--output", str(output)])
    assert code == 2
    assert f"{source}/{bad[0]}: corrupt image" in capsys.readouterr().err
    assert not (output / "manifest.json").exists()
    config = _config("prid2011", source, output, skip_corrupt=True)
    summary = run(config)
    assert summary["skipped_corrupt"] == 2
    dataset = Dataset.open(str(output))
    assert dataset.manifest["ingest"]["skipped_corrupt"] == 2
    assert sorted(dataset.manifest["ingest"]["skipped_corrupt_paths"]) == sorted(bad)
    frames = pd.concat(
        t.to_pandas() for t in dataset.iter_frames(["tracklet_id", "frame_index", "source_path"])
    )
    assert not set(bad) & set(frames.source_path)
    assert (
        dataset.manifest["counts"]["frames"]
        == len(frames)
        == sum(len(t.frames) for t in open_source(config).tracklets()) - 2
    )
    for _, group in frames.groupby("tracklet_id"):
        assert group.frame_index.tolist() == list(range(len(group)))
    tracklets = dataset.tracklets().set_index("name")
    assert tracklets.loc["cam_a/person_0002", "num_frames"] == 24 - 1


def test_truncated_and_garbled_images_are_detected() -> None:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 16, 3), dtype=np.uint8)).save(out, "JPEG")
    good = out.getvalue()
    assert raw_frames.validate(good) == raw_frames.CheckedFrame(good, "JPEG")
    for cut in (len(good) // 2, len(good) - 100):  # in the header, in the scan data
        assert "truncated" in raw_frames.validate(good[:cut]).error.lower()
    assert raw_frames.validate(b"\x89PNG\r\n\x1a\n garbage").data is None
    gif = io.BytesIO()
    Image.new("RGB", (4, 4)).save(gif, "GIF")
    assert "unsupported image format GIF" in raw_frames.validate(gif.getvalue()).error


def test_a_tracklet_whose_frames_are_all_corrupt_is_an_error(tmp_path: Path, capsys) -> None:
    source = write_ilids(tmp_path / "raw")
    for frame in (source / "i-LIDS-VID" / "sequences" / "cam2" / "person004").iterdir():
        frame.write_bytes(b"junk")
    args = ["ingest", "--dataset", "ilidsvid", "--source", str(source), "--output", str(tmp_path / "ds")]
    assert cli_main([*args, "--skip-corrupt", "true"]) == 2
    assert "tracklet 'cam2/person004': every frame is corrupt" in capsys.readouterr().err
    assert not (tmp_path / "ds" / "manifest.json").exists()


# -- bad input --------------------------------------------------------------------------------


def _fails(capsys, args: list[str], message: str, output: Path) -> None:
    assert cli_main(["ingest", *args, "--output", str(output), "--progress", "false"]) == 2
    assert message in capsys.readouterr().err
    with pytest.raises(DatasetError, match="no manifest"):
        Dataset.open(str(output))


def test_bad_sources_exit_non_zero_naming_the_path(tmp_path: Path, capsys) -> None:
    out = tmp_path / "ds"
    _fails(
        capsys,
        ["--dataset", "mars", "--source", str(tmp_path / "nope")],
        f"{tmp_path}/nope: source folder",
        out,
    )
    mars = write_mars(tmp_path / "mars")
    (mars / "bbox_train").rename(mars / "train")
    _fails(capsys, ["--dataset", "mars", "--source", str(mars)], f"{mars}/bbox_train: required folder", out)
    (mars / "train").rename(mars / "bbox_train")
    (mars / "bbox_train" / "0001" / "0001C1T0001.jpg").write_bytes(b"")
    _fails(
        capsys,
        ["--dataset", "mars", "--source", str(mars)],
        "0001/0001C1T0001.jpg: not a MARS frame name",
        out,
    )
    (mars / "bbox_train" / "0001" / "0001C1T0001.jpg").unlink()
    (mars / "bbox_test" / "0008").mkdir()
    _fails(
        capsys,
        ["--dataset", "mars", "--source", str(mars)],
        "bbox_test/0008: person folder has no frames",
        out,
    )
    empty = tmp_path / "empty"
    for sub in ("bbox_train", "bbox_test"):
        (empty / sub).mkdir(parents=True)
    _fails(
        capsys,
        ["--dataset", "mars", "--source", str(empty)],
        f"{empty}: no tracklets found (empty dataset)",
        out,
    )
    prid = write_prid(tmp_path / "prid")
    for frame in (prid / "multi_shot" / "cam_a" / "person_0003").iterdir():
        frame.unlink()
    _fails(
        capsys,
        ["--dataset", "prid2011", "--source", str(prid)],
        "person_0003: tracklet folder has no frames",
        out,
    )
    _fails(capsys, ["--dataset", "ilidsvid", "--source", str(prid)], "camera folders not found", out)
    lists = tmp_path / "lists"
    lists.mkdir()
    _fails(
        capsys,
        [
            "--dataset",
            "ilidsvid",
            "--source",
            str(write_ilids(tmp_path / "ilids")),
            "--split-lists",
            str(lists),
        ],
        f"{lists}: no split1..splitK folders",
        out,
    )


def test_missing_frame_is_an_error_even_with_skip_corrupt(tmp_path: Path, capsys) -> None:
    source = write_mars(tmp_path / "mars", with_info=True)
    (source / "bbox_test" / "0004" / "0004C5T0001F002.jpg").unlink()
    args = ["--dataset", "mars", "--source", str(source), "--skip-corrupt", "true"]
    _fails(capsys, args, "bbox_test/0004/0004C5T0001F002.jpg", tmp_path / "ds")


def test_unknown_dataset_and_bad_options_are_refused(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(
            ["ingest", "--dataset", "market1501", "--source", str(tmp_path), "--output", str(tmp_path / "o")]
        )
    assert exit_info.value.code == 2
    assert "invalid choice: 'market1501'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="dataset: unknown dataset 'market1501'"):
        IngestConfig(dataset="market1501", source="a", output="b")
    with pytest.raises(ConfigError, match="split_mat: only for iLIDS-VID"):
        IngestConfig(dataset="prid2011", source="a", output="b", split_mat="x.mat")
    with pytest.raises(ConfigError, match="split_lists: only PRID2011 and iLIDS-VID"):
        IngestConfig(dataset="mars", source="a", output="b", split_lists="lists")
    with pytest.raises(ConfigError, match="max_in_flight"):
        IngestConfig(dataset="mars", source="a", output="b", workers=8, max_in_flight=4)
    with pytest.raises(ConfigError, match="output: must differ from source"):
        IngestConfig(dataset="mars", source="a/", output="a")


def test_unreachable_s3_fails_fast_naming_the_uri(tmp_path: Path, capsys, monkeypatch) -> None:
    from tests.servers import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    source = write_prid(tmp_path / "raw")
    started = time.monotonic()
    assert (
        cli_main(["ingest", "--dataset", "prid2011", "--source", str(source), "--output", "s3://b/ds"]) == 2
    )
    assert "s3://b/ds/" in capsys.readouterr().err
    assert (
        cli_main(["ingest", "--dataset", "prid2011", "--source", "s3://b/raw", "--output", str(tmp_path)])
        == 2
    )
    assert "s3://b/raw" in capsys.readouterr().err
    assert time.monotonic() - started < 60


def test_failed_layout_check_leaves_a_published_dataset_alone(tmp_path: Path) -> None:
    """The source is checked before the output is touched; once writing starts, the output is
    unpublished first, so a failure there leaves no manifest."""
    source = write_prid(tmp_path / "raw")
    run(_config("prid2011", source, tmp_path / "ds"))
    with pytest.raises(Exception, match="source folder not found"):
        run(_config("prid2011", tmp_path / "missing", tmp_path / "ds"))
    Dataset.open(str(tmp_path / "ds"))
    _corrupt(source)
    with pytest.raises(Exception, match="corrupt image"):
        run(_config("prid2011", source, tmp_path / "ds"))
    with pytest.raises(DatasetError, match="no manifest"):
        Dataset.open(str(tmp_path / "ds"))


# -- streaming and atomicity ------------------------------------------------------------------


def test_bounded_map_keeps_order_and_bounds_the_work_in_flight() -> None:
    produced = 0
    peak = 0
    lock = threading.Lock()

    def items():
        nonlocal produced
        for i in range(200):
            produced += 1
            yield i

    def work(i: int) -> int:
        time.sleep(0.001 * (i % 3))
        return i * i

    consumed = 0
    for value in raw_frames.bounded_map(work, items(), workers=3, max_in_flight=5):
        assert value == consumed * consumed
        consumed += 1
        with lock:
            peak = max(peak, produced - consumed)
    assert consumed == 200 and peak <= 5

    def fail(i: int) -> int:
        if i == 7:
            raise ValueError("frame 7")
        return i

    with pytest.raises(ValueError, match="frame 7"):
        list(raw_frames.bounded_map(fail, range(100), workers=2, max_in_flight=4))


def _big_mars(root: Path, persons: int = 40, frames: int = 40) -> Path:
    rng = np.random.default_rng(0)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (16, 8, 3), dtype=np.uint8)).save(out, "JPEG")
    data = out.getvalue()
    for subset, offset in (("train", 1), ("test", 2)):
        for person in range(offset, 2 * persons + 1, 2):
            folder = root / f"bbox_{subset}" / f"{person:04d}"
            folder.mkdir(parents=True)
            for camera in (1, 2):
                for frame in range(1, frames + 1):
                    (folder / f"{person:04d}C{camera}T0001F{frame:03d}.jpg").write_bytes(data)
    return root


@pytest.mark.integration
def test_killed_ingest_publishes_nothing_and_a_rerun_completes(tmp_path: Path) -> None:
    source = _big_mars(tmp_path / "raw")  # 6,400 frames: a few seconds of work
    output = tmp_path / "ds"
    command = [
        *(sys.executable, "-m", "components.cli", "ingest", "--dataset", "mars", "--source", str(source)),
        *(
            "--output",
            str(output),
            "--row-group-rows",
            "64",
            "--shard-size-mb",
            "0.05",
            "--progress",
            "false",
        ),
    ]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (output / "frames" / "part-00000.parquet").exists():
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no shard appeared"
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not (output / "manifest.json").exists()
    with pytest.raises(DatasetError, match="no manifest"):
        Dataset.open(str(output))
    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    dataset = Dataset.open(str(output))
    dataset.verify()
    assert dataset.manifest["counts"]["frames"] == 40 * 2 * 40 * 2
    assert not [p for p in (output / "frames").iterdir() if p.name.startswith(".tmp")]


@pytest.mark.integration
@pytest.mark.slow
def test_ingest_logs_counts_to_mlflow(tmp_path: Path, mlflow_env) -> None:
    from mlflow.tracking import MlflowClient

    config = _config(
        "ilidsvid", write_ilids(tmp_path / "raw"), tmp_path / "ds", mlflow_experiment="ingest-test"
    )
    summary = run(config)
    client = MlflowClient(mlflow_env.uri)
    experiment = client.get_experiment_by_name("ingest-test")
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.info.status == "FINISHED"
    assert logged.data.params["dataset"] == "ilidsvid"
    assert logged.data.metrics["dataset_frames"] == summary["counts"]["frames"]
    assert logged.data.tags["dal.dataset"] == "ilidsvid"
    assert "ingest/manifest.json" in [a.path for a in client.list_artifacts(logged.info.run_id, "ingest")]

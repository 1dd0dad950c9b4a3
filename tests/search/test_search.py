"""``dal search`` on a tiny MARS-layout dataset whose gallery features the real ``dal extract``
wrote with a random model: tracklet-id, features-file and frame-folder queries, exclusions,
thresholds (given, from an evaluation, from a registered model version) and the outputs."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from components.common import storage
from components.common.config import ConfigError
from components.common.dataset import Dataset
from components.common.features import Features, read_features, write_features
from components.evaluate.config import EvaluateConfig
from components.evaluate.run import run as evaluate
from components.extract.config import ExtractConfig
from components.extract.run import run as extract
from components.search.config import SearchConfig
from components.search.queries import QueryError
from components.search.run import run
from components.search.threshold import ThresholdError
from tests.extract.helpers import write_dataset, write_model

REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("search")
    dataset, model, features = str(root / "mars"), str(root / "model.pt"), str(root / "features.parquet")
    write_dataset(dataset, "mars")
    write_model(model)
    extract(ExtractConfig(dataset=dataset, model=model, output=features, subset="all", progress=False))
    return {"root": root, "dataset": dataset, "model": model, "features": features}


def _run(data: dict, name: str, **kwargs) -> tuple[dict, pd.DataFrame]:
    kwargs.setdefault("features", data["features"])
    config = SearchConfig(output=str(data["root"] / name), device="cpu", **kwargs)
    summary = run(config)
    return summary, pq.read_table(Path(config.output) / "ranked.parquet").to_pandas()


def _cosines(features: Features, query_rows: np.ndarray) -> np.ndarray:
    q = features.feature[query_rows].astype(np.float64)
    return q @ features.feature.astype(np.float64).T


def test_gallery_tracklets_as_queries(data: dict) -> None:
    gallery = read_features(data["features"])
    summary, table = _run(data, "ids", query="2, 7", top_k=5, threshold="0.5", dataset=data["dataset"])
    assert (summary["query_kind"], summary["num_queries"], summary["exclude_same_camera"]) == ("ids", 2, True)
    assert list(table.columns) == [
        "query_tracklet", "query_name", "query_camera", "rank", "gallery_tracklet", "gallery_name",
        "gallery_camera", "score", "same_person",
    ]  # fmt: skip
    exact = _cosines(gallery, np.array([2, 7]))  # tracklet ids are the rows here (0..N-1)
    for i, query in enumerate((2, 7)):
        rows = table[table["query_tracklet"] == query]
        cam = int(gallery.camera_id[query])
        assert rows["rank"].tolist() == [1, 2, 3, 4, 5] and (rows["query_camera"] == cam).all()
        # The oracle: every other camera's tracklet by exact cosine, ties to the lower id.
        allowed = np.flatnonzero(gallery.camera_id != cam)
        want = allowed[np.lexsort((allowed, -exact[i, allowed]))][:5]
        assert rows["gallery_tracklet"].tolist() == want.tolist()
        np.testing.assert_allclose(rows["score"], exact[i, want], rtol=0, atol=gallery.feature_dim * 2.0**-23)
        assert (rows["same_person"] == (rows["score"] >= np.float32(0.5))).all()
        assert rows["gallery_name"].tolist() == [f"t{t:04d}" for t in want]
        assert (rows["query_name"] == f"t{query:04d}").all()
    csv = pd.read_csv(data["root"] / "ids" / "ranked.csv")
    assert csv["gallery_tracklet"].tolist() == table["gallery_tracklet"].tolist()
    np.testing.assert_allclose(csv["score"], table["score"], rtol=1e-6)
    settings = json.loads(pq.read_schema(data["root"] / "ids" / "ranked.parquet").metadata[b"dal"])
    assert (settings["threshold"], settings["threshold_source"], settings["top_k"]) == (0.5, "given", 5)
    picture = (data["root"] / "ids" / "ranklist.png").read_bytes()
    with Image.open(io.BytesIO(picture)) as image:
        assert image.format == "PNG" and image.size[0] > 300


def test_same_camera_kept_when_asked_but_never_the_query_itself(data: dict) -> None:
    gallery = read_features(data["features"])
    _, table = _run(data, "same-cam", query="2", top_k=len(gallery), exclude_same_camera="false")
    assert 2 not in table["gallery_tracklet"].tolist()
    assert len(table) == len(gallery) - 1  # everything else, this camera included
    assert (table["gallery_camera"] == gallery.camera_id[2]).any()
    assert "same_person" not in table.columns and "gallery_name" not in table.columns
    assert (data["root"] / "same-cam" / "ranklist.png").read_bytes()[:8] == PNG  # a score chart


def _subset(features: Features, rows: np.ndarray, **metadata) -> Features:
    fields = {k: v[rows] if isinstance(v, np.ndarray) else v for k, v in dataclasses.asdict(features).items()}
    fields["metadata"] = {**features.metadata, **metadata}
    return Features(**fields)


def test_a_features_file_of_the_same_dataset_and_of_another(data: dict) -> None:
    gallery = read_features(data["features"])
    same = str(data["root"] / "q-same.parquet")
    write_features(same, _subset(gallery, np.array([4, 9])))
    summary, table = _run(data, "q-same", query=same, top_k=3)
    assert summary["query_kind"] == "features" and summary["exclude_same_camera"] is True
    for query in (4, 9):
        rows = table[table["query_tracklet"] == query]
        assert query not in rows["gallery_tracklet"].tolist()
        assert (rows["gallery_camera"] != gallery.camera_id[query]).all()
    other = str(data["root"] / "q-other.parquet")
    write_features(other, _subset(gallery, np.array([4]), dataset="/elsewhere/footage"))
    summary, table = _run(data, "q-other", query=other, top_k=3)
    # Ids of other footage mean nothing here: tracklet 4 of the gallery is its own best match.
    assert summary["exclude_same_camera"] is False
    assert table["gallery_tracklet"].iloc[0] == 4 and table["score"].iloc[0] == pytest.approx(1.0, abs=1e-6)


def _frames_folder(data: dict, root: Path, tracklets: dict[str, int]) -> str:
    """Each named folder gets the stored frames of one gallery tracklet, as files."""
    dataset = Dataset.open(data["dataset"])
    for table in dataset.iter_frames(["tracklet_id", "frame_index", "image"]):
        for tracklet, index, image in zip(
            *(table.column(c).to_pylist() for c in table.column_names), strict=True
        ):
            for name, wanted in tracklets.items():
                if tracklet == wanted:
                    (root / name).mkdir(parents=True, exist_ok=True)
                    (root / name / f"{index:04d}.png").write_bytes(image)
    return str(root)


def test_frames_are_embedded_as_extraction_does(data: dict, tmp_path: Path) -> None:
    query = _frames_folder(data, tmp_path / "frames", {"alice": 3, "bob": 11})
    (tmp_path / "frames" / ".DS_Store").write_bytes(b"ignored")
    gallery = read_features(data["features"])
    summary, table = _run(data, "frames", query=query, top_k=2)  # the gallery's model by default
    assert (summary["query_kind"], summary["num_queries"], summary["exclude_same_camera"]) == (
        "frames",
        2,
        False,
    )
    top = table[table["rank"] == 1].set_index("query_name")
    # The same frames through the same model, preprocessing and pooling: the tracklet itself, cosine 1.
    assert top.loc["alice", "gallery_tracklet"] == 3 and top.loc["bob", "gallery_tracklet"] == 11
    assert top["score"].to_numpy() == pytest.approx(1.0, abs=gallery.feature_dim * 2.0**-23)
    assert (table["query_camera"] == -1).all() and table["query_tracklet"].tolist() == [0, 0, 1, 1]


def test_threshold_auto_from_an_evaluation(data: dict, tmp_path: Path) -> None:
    test_features = str(tmp_path / "test.parquet")
    extract(ExtractConfig(dataset=data["dataset"], model=data["model"], output=test_features, progress=False))
    evaluate(EvaluateConfig(dataset=data["dataset"], features=test_features, output=str(tmp_path / "eval"),
                            num_ranklist_queries=0))  # fmt: skip
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for rate in ("0.001", "0.01", "0.1"):
        summary, table = _run(data, f"auto-{rate}", query="2", threshold="auto", threshold_fpr=float(rate),
                              threshold_from=str(tmp_path / "eval"))  # fmt: skip
        assert summary["threshold"] == metrics[f"threshold_at_fpr_{rate}"]
        assert summary["threshold_source"] == str(tmp_path / "eval" / "metrics.json")
        assert (table["same_person"] == (table["score"] >= np.float32(summary["threshold"]))).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"query": "2,999"}, QueryError, "999 are not in the gallery"),
        ({"query": "/no/such/place"}, QueryError, "neither comma-separated tracklet ids"),
        ({"query": "2", "threshold": "auto"}, ThresholdError, "auto needs --threshold-from"),
        (
            {"query": "2", "threshold": "auto", "threshold_from": "/no/metrics.json"},
            ThresholdError,
            "does not exist",
        ),
        ({"query": "2", "dataset": "/no/dataset"}, Exception, "/no/dataset"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(data: dict, kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        _run(data, "never", **kwargs)
    assert not (data["root"] / "never").exists()


def test_bad_frame_folders_are_named(data: dict, tmp_path: Path) -> None:
    query = _frames_folder(data, tmp_path / "frames", {"alice": 3})
    (tmp_path / "frames" / "loose.png").write_bytes(b"x")
    with pytest.raises(QueryError, match="'loose.png' is not <tracklet>/<frame>"):
        _run(data, "never", query=query)
    (tmp_path / "frames" / "loose.png").unlink()
    (tmp_path / "frames" / "alice" / "notes.txt").write_text("x")
    with pytest.raises(QueryError, match="notes.txt' is not a frame"):
        _run(data, "never", query=query)
    (tmp_path / "frames" / "alice" / "notes.txt").unlink()
    with pytest.raises(QueryError, match="frame queries have no camera"):
        _run(data, "never", query=query, exclude_same_camera="true")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": "high"}, "threshold: must be a cosine similarity"),
        ({"threshold": "1.5"}, "threshold: must be a cosine similarity"),
        ({"threshold": "auto", "threshold_fpr": 0.05}, "threshold_fpr: must be one of 0.001, 0.01, 0.1"),
        ({"threshold": "0.3", "threshold_from": "x"}, "threshold_from: applies only with --threshold auto"),
        ({"top_k": 0}, "top_k"),
    ],
)
def test_config_is_validated(kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        SearchConfig(features="f", query="1", output="o", **kwargs)


def test_cli(data: dict) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}
    out = str(data["root"] / "cli")
    done = subprocess.run(
        [sys.executable, "-m", "components.search", "--features", data["features"], "--query", "2,5",
         "--output", out, "--top-k", "3", "--threshold", "0.2", "--device", "cpu"],
        cwd=REPO, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["num_queries"] == 2 and summary["threshold"] == 0.2
    args = ["--features", data["features"], "--query", "2", "--output", out, "--threshold", "x"]
    bad = subprocess.run(
        [sys.executable, "-m", "components.search", *args], cwd=REPO, capture_output=True, text=True, env=env
    )
    assert bad.returncode != 0 and "threshold: must be a cosine similarity" in bad.stderr


@pytest.mark.integration
def test_threshold_travels_with_the_registered_model(
    data: dict, mlflow_env, s3_bucket: str, tmp_path
) -> None:
    """evaluate -> aggregate -> registered version tag metric.threshold_at_fpr_0.01 -> search auto,
    embedding frame queries with the registered model; outputs on S3."""
    from mlflow.tracking import MlflowClient

    from components.common import registry
    from components.evaluate.aggregate import aggregate_metrics

    test_features = str(tmp_path / "test.parquet")
    extract(ExtractConfig(dataset=data["dataset"], model=data["model"], output=test_features, progress=False))
    evaluated = evaluate(EvaluateConfig(dataset=data["dataset"], features=test_features,
                                        output=str(tmp_path / "eval"), num_ranklist_queries=0))  # fmt: skip
    run_info = MlflowClient(mlflow_env.uri).get_run(evaluated["mlflow_run_id"])
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert run_info.data.metrics["threshold_at_fpr_0.01"] == metrics["threshold_at_fpr_0.01"]
    assert run_info.data.tags["dal.evaluation"] == "evaluated"
    aggregated = aggregate_metrics([metrics])
    numeric = {k: v for k, v in aggregated.items() if isinstance(v, float | int) and not isinstance(v, bool)}

    client = MlflowClient(mlflow_env.uri)
    experiment = client.create_experiment(f"search-{tmp_path.name}")
    run_id = client.create_run(experiment).info.run_id
    client.log_artifact(run_id, data["model"])  # model.pt at the root, as training logs it
    logged = client.create_logged_model(experiment, source_run_id=run_id, name="model")
    client.set_terminated(run_id)
    name = f"search-{tmp_path.name}"
    registry.register_candidate(mlflow_env.uri, name, str(logged.model_uri), numeric,
                                {"dataset": "mars", "storage_uri": data["model"]})  # fmt: skip

    query = _frames_folder(data, tmp_path / "frames", {"carol": 5})
    output = f"{s3_bucket}/search"
    summary = run(SearchConfig(features=data["features"], query=query, output=output, top_k=3, device="cpu",
                               threshold="auto", model=f"models:/{name}@candidate"))  # fmt: skip
    assert summary["threshold"] == metrics["threshold_at_fpr_0.01"]  # exact: repr round trip in the tag
    assert summary["threshold_source"] == f"models:/{name}/1 tag metric.threshold_at_fpr_0.01"
    table = pq.read_table(io.BytesIO(storage.read_bytes(f"{output}/ranked.parquet"))).to_pandas()
    assert table["gallery_tracklet"].iloc[0] == 5 and bool(table["same_person"].iloc[0])
    assert storage.read_bytes(f"{output}/ranklist.png")[:8] == PNG
    searched = client.get_run(summary["mlflow_run_id"])
    assert searched.data.tags["dal.step"] == "search" and searched.data.metrics["num_queries"] == 1
    assert {a.path for a in client.list_artifacts(summary["mlflow_run_id"])} >= {"ranked.csv", "ranklist.png"}

"""Users' own footage, without identity labels, to a searched gallery and a served model, with the
``dal`` commands of the README's "Your own cameras" walkthrough, run in this process:

synth (a stand-in for the user's cameras; its labels removed) -> ingest -> train (DAL, tracked on
a real MLflow server) -> extract (every tracklet: the gallery) -> evaluate (skipped: no labels)
-> search (by tracklet id, and from new frames through the model) -> export (ONNX, run here with
onnxruntime) -> ``mlflow models serve`` of the trained model, queried over HTTP.

Once for each raw layout: tracklet folders (read without their index) and videos with
MOTChallenge tracks (their labels.csv deleted).

Tolerances (as in tests/model/test_serving.py and tests/export/test_export.py): the same float32
operations on the same decoded frames, only batched differently, move an L2-normalised component
by ~layers x sqrt(terms) x 2**-24 ~ 1e-5, so SERVED_ATOL = 2e-5; ONNX Runtime against PyTorch is
bounded per frame by onnx_export.MAX_ABS_DIFF and max pooling plus renormalising (pooled norm
> 0.5, asserted) at most doubles it. A wrong model or pooling misses by ~1e-2.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from components.cli import main
from components.common import images
from components.common.dataset import Dataset
from components.common.features import Features, read_features
from components.ingest.datasets.base import UNLABELLED
from components.model.onnx_export import FLOAT_NCHW, MAX_ABS_DIFF, UINT8_NHWC
from tests.servers import post_json, served_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SIZE = (32, 16)  # frames and model input (H, W): tiny, for the CPU
SERVED_ATOL = 2e-5  # module docstring
# The ONNX input each layout is checked with: synthetic tracklet frames are stored at the model's
# size (uint8 straight in); video crops have their box's size (resized as extract resizes, float).
INPUT_FORMAT = {"tracklets": UINT8_NHWC, "videos": FLOAT_NCHW}


def _dal(capsys: pytest.CaptureFixture, *argv: object) -> dict:
    """Run one ``dal`` command; its printed summary (the JSON after any MLflow lines)."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 0, f"dal {argv[0]} exited with {code}:\n{captured.err[-3000:]}"
    return json.loads(captured.out[captured.out.index("{\n") :])


def _remove_labels(raw: Path, layout: str) -> None:
    """What a user without identity labels has: the frames and tracks only."""
    labels = [raw / "index.csv"] if layout == "tracklets" else sorted(raw.glob("*/labels.csv"))
    assert labels and all(p.is_file() for p in labels), "the synthetic layout changed"
    for path in labels:
        path.unlink()


def _frames(dataset: Dataset) -> pd.DataFrame:
    return pd.concat(t.to_pandas() for t in dataset.iter_frames(["tracklet_id", "frame_index", "image"]))


def _row(features: Features, tracklet: int) -> int:
    return int(np.flatnonzero(features.tracklet_id == tracklet)[0])


def _check_search_by_id(ranked: pd.DataFrame, gallery: Features, queries: list[int], top_k: int) -> None:
    """Exact top-k of cosine similarity over the other cameras' tracklets, recomputed here."""
    assert sorted(ranked["query_tracklet"].unique()) == sorted(queries)
    for query in queries:
        q = _row(gallery, query)
        rows = ranked[ranked["query_tracklet"] == query].sort_values("rank")
        others = np.flatnonzero(gallery.camera_id != gallery.camera_id[q])
        scores = gallery.feature[others].astype(np.float64) @ gallery.feature[q].astype(np.float64)
        best = np.sort(scores)[::-1][:top_k]
        assert rows["rank"].tolist() == list(range(1, len(best) + 1))
        assert (rows["gallery_camera"] != gallery.camera_id[q]).all()
        # float32 dot products of unit vectors: each within D x 2**-24 of the float64 one.
        tolerance = gallery.feature_dim * 2.0**-24
        np.testing.assert_allclose(rows["score"].to_numpy(), best, atol=tolerance, rtol=0)
        listed = [_row(gallery, t) for t in rows["gallery_tracklet"]]
        np.testing.assert_allclose(
            gallery.feature[listed].astype(np.float64) @ gallery.feature[q], best, atol=tolerance, rtol=0
        )


def _pooled_from_onnx(
    path: Path, frames: pd.DataFrame, tracklets: list[int], input_format: str
) -> np.ndarray:
    """The contract of components/model/onnx_export.py, followed outside the graph: decode, resize
    as extract does (float NCHW) or feed uint8 NHWC at the model's size, max-pool, normalise."""
    session = ort.InferenceSession(path.read_bytes(), providers=["CPUExecutionProvider"])
    pooled = []
    for tracklet in tracklets:
        decoded = [images.decode(bytes(b)) for b in frames.loc[frames["tracklet_id"] == tracklet, "image"]]
        if input_format == UINT8_NHWC:
            assert all(tuple(d.shape[1:]) == SIZE for d in decoded)
            batch = torch.stack(decoded).permute(0, 2, 3, 1).contiguous().numpy()
        else:
            batch = torch.stack([images.resize(d, SIZE) for d in decoded]).numpy()
        (per_frame,) = session.run(None, {"images": batch})  # the whole tracklet: batch = its length
        maximum = per_frame.max(axis=0).astype(np.float64)
        assert np.linalg.norm(maximum) > 0.5
        pooled.append(maximum / np.linalg.norm(maximum))
    return np.stack(pooled)


@pytest.mark.parametrize("layout", ["tracklets", "videos"])
def test_unlabelled_footage_trains_searches_exports_and_is_served(
    layout: str, mlflow_env, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    raw, ds, run = tmp_path / "cameras", tmp_path / "dataset", tmp_path / "run"
    height, width = SIZE
    _dal(capsys, "synth", "--layout", layout, "--output", raw, "--num-identities", 6,
         "--image-height", height, "--image-width", width)  # fmt: skip
    _remove_labels(raw, layout)

    # Ingest: every tracklet unlabelled, in more than one camera.
    _dal(capsys, "ingest", "--dataset", layout, "--source", raw, "--output", ds)
    dataset = Dataset.open(str(ds))
    tracklets = dataset.tracklets()
    assert set(tracklets["person_id"]) == {UNLABELLED} and tracklets["camera_id"].nunique() >= 2

    # Train DAL (it never reads person ids); MLflow gets label-free diagnostics only.
    trained = _dal(capsys, "train", "--dataset", ds, "--output", run, "--backbone", "timm:test_resnet",
                   "--weights", "", "--steps", 6, "--batch-size", 8, "--image-height", height,
                   "--image-width", width, "--workers", 0, "--log-every", 3, "--mlflow-tracking-uri",
                   mlflow_env.uri, "--mlflow-experiment", f"own-{layout}")  # fmt: skip
    assert trained["steps"] == 6 and trained["mlflow_model_uri"]
    metrics = MlflowClient(mlflow_env.uri).get_run(trained["mlflow_run_id"]).data.metrics
    assert {"consistent_tracklets", "anchor_nearest_similarity", "loss"} <= set(metrics)
    assert not [k for k in metrics if k.startswith("association_precision")]

    # Extract every tracklet (the gallery); evaluation is skipped with its note.
    features_uri = tmp_path / "features.parquet"
    _dal(capsys, "extract", "--dataset", ds, "--model", run / "model.pt", "--output", features_uri,
         "--subset", "all")  # fmt: skip
    gallery = read_features(str(features_uri))
    assert sorted(gallery.tracklet_id.tolist()) == sorted(tracklets["tracklet_id"].tolist())
    _dal(capsys, "evaluate", "--dataset", ds, "--features", features_uri, "--output", tmp_path / "eval")
    evaluation = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluation["evaluated"] is False and "no labelled" in evaluation["note"]

    # Search by tracklet id: the exact top-k over the other cameras.
    queries = [int(gallery.tracklet_id[0]), int(gallery.tracklet_id[-1])]
    _dal(capsys, "search", "--features", features_uri, "--query", ",".join(map(str, queries)),
         "--top-k", 4, "--dataset", ds, "--output", tmp_path / "search")  # fmt: skip
    ranked = pd.read_parquet(tmp_path / "search" / "ranked.parquet")
    _check_search_by_id(ranked, gallery, queries, top_k=4)
    assert (tmp_path / "search" / "ranklist.png").read_bytes().startswith(b"\x89PNG")

    # Search from new frames through the model: a copy of a tracklet's frames finds that tracklet.
    frames = _frames(dataset)
    probe = int(gallery.tracklet_id[len(gallery) // 2])
    folder = tmp_path / "query" / "visitor"
    folder.mkdir(parents=True)
    for i, image in enumerate(frames.loc[frames["tracklet_id"] == probe, "image"]):
        (folder / f"{i:04d}.jpg").write_bytes(bytes(image))
    _dal(capsys, "search", "--features", features_uri, "--query", tmp_path / "query", "--model",
         run / "model.pt", "--top-k", 3, "--output", tmp_path / "search-frames")  # fmt: skip
    found = pd.read_parquet(tmp_path / "search-frames" / "ranked.parquet").sort_values("rank")
    assert found["query_name"].iloc[0] == "visitor" and int(found["gallery_tracklet"].iloc[0]) == probe
    assert found["score"].iloc[0] == pytest.approx(1.0, abs=2 * SERVED_ATOL)

    # Export to ONNX (dynamic batch) and run it here: it reproduces the extracted features.
    input_format = INPUT_FORMAT[layout]
    _dal(capsys, "export", "--model", run / "model.pt", "--format", "onnx", "--input-format", input_format,
         "--output", tmp_path / "model.onnx")  # fmt: skip
    checked = [int(t) for t in gallery.tracklet_id[:3]]
    onnx_features = _pooled_from_onnx(tmp_path / "model.onnx", frames, checked, input_format)
    extracted = gallery.feature[[_row(gallery, t) for t in checked]]
    np.testing.assert_allclose(onnx_features, extracted, atol=2 * MAX_ABS_DIFF, rtol=0)

    # Serve the trained model and query it over HTTP with base64 frames of two tracklets.
    names = tracklets.set_index("tracklet_id")["name"]
    chosen = frames[frames["tracklet_id"].isin(checked[:2])]
    served_ids = [int(t) for t in chosen["tracklet_id"].unique()]  # answers: in order of first appearance
    rows = [[str(names.loc[t]), base64.b64encode(bytes(b)).decode("ascii")]
            for t, b in zip(chosen["tracklet_id"], chosen["image"], strict=True)]  # fmt: skip
    body = {"dataframe_split": {"columns": ["tracklet", "image"], "data": rows}}
    with served_model(trained["mlflow_model_uri"], mlflow_env.client_env, tmp_path / "serve.log") as url:
        status, answer = post_json(f"{url}/invocations", body)
    assert status == 200, answer
    predictions = answer["predictions"]
    assert [p["tracklet"] for p in predictions] == [str(names.loc[t]) for t in served_ids]
    counts = gallery.num_frames[[_row(gallery, t) for t in served_ids]]
    assert [p["num_frames"] for p in predictions] == counts.tolist()
    served = np.array([p["feature"] for p in predictions], dtype=np.float64)
    np.testing.assert_allclose(served, gallery.feature[[_row(gallery, t) for t in served_ids]],
                               atol=SERVED_ATOL, rtol=0)  # fmt: skip

"""``dal evaluate`` on tiny MARS-layout and PRID2011-layout datasets with features written directly."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.common.dataset import Dataset
from components.common.features import Features, FeaturesError, write_features
from components.evaluate.config import EvaluateConfig
from components.evaluate.protocols import ProtocolError
from components.evaluate.run import run
from tests.extract.helpers import write_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("evaluate")
    write_dataset(str(root / "mars"), "mars")
    write_dataset(str(root / "prid"), "prid2011", seed=1)
    return {"root": root, "mars": str(root / "mars"), "prid": str(root / "prid")}


def _features(
    dataset_root: str, subset: str = "test", split: int = 0, noise: float = 0.0, **meta
) -> Features:
    """One random direction per person (+ noise): noise 0 gives perfect retrieval."""
    dataset = Dataset.open(dataset_root)
    tracklets = dataset.tracklets() if subset == "all" else dataset.subset_tracklets(subset, split)
    rng = np.random.default_rng(split)
    directions = {p: rng.normal(size=16) for p in sorted(dataset.tracklets()["person_id"].unique())}
    matrix = np.stack([directions[p] + noise * rng.normal(size=16) for p in tracklets["person_id"]])
    return Features(
        tracklet_id=tracklets["tracklet_id"].to_numpy(),
        person_id=tracklets["person_id"].to_numpy(),
        camera_id=tracklets["camera_id"].to_numpy(),
        num_frames=tracklets["num_frames"].to_numpy(),
        feature=(matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32),
        metadata={"subset": subset, "split": split, "dataset_name": dataset.name, **meta},
    )


def _write(data: dict, features: Features, name: str) -> str:
    uri = str(data["root"] / f"{name}.parquet")
    write_features(uri, features)
    return uri


def _config(data: dict, dataset: str, features: str, name: str, **kwargs) -> EvaluateConfig:
    return EvaluateConfig(dataset=data[dataset], features=features, output=str(data["root"] / name), **kwargs)


def test_rerank_and_aqe_variants_are_scored_beside_the_plain_metrics(data: dict) -> None:
    from components.evaluate.metrics import METRIC_KEYS, evaluate_rank
    from components.evaluate.protocols import build_eval_set
    from components.evaluate.rerank import k_reciprocal_distances

    features = _features(data["mars"], noise=0.8)
    uri = _write(data, features, "mars-variants")
    plain = run(_config(data, "mars", uri, "plain", num_ranklist_queries=0))["metrics"]
    both = run(_config(data, "mars", uri, "both", rerank="4,3,0.3", aqe="on", num_ranklist_queries=0))
    metrics = json.loads((data["root"] / "both" / "metrics.json").read_text())
    for prefix in ("rerank_", "aqe_", "aqe_rerank_"):
        assert {prefix + k for k in METRIC_KEYS} <= set(metrics) and prefix + "rank1" in both["percent"]
    assert {k: metrics[k] for k in METRIC_KEYS} == {k: plain[k] for k in METRIC_KEYS}  # plain unchanged
    # The variant is the library's re-ranking of exactly the evaluated query and gallery.
    dataset = Dataset.open(data["mars"])
    eval_set = build_eval_set("mars", dataset.tracklets(), dataset.splits())
    row = {t: i for i, t in enumerate(features.tracklet_id)}
    q, g = ([row[t] for t in s["tracklet_id"]] for s in (eval_set.query, eval_set.gallery))
    ids = [s[c].to_numpy() for c in ("person_id", "camera_id") for s in (eval_set.query, eval_set.gallery)]
    expected = evaluate_rank(
        k_reciprocal_distances(features.feature[q], features.feature[g], 4, 3, 0.3), *ids
    )
    assert {k: metrics["rerank_" + k] for k in METRIC_KEYS} == {k: expected[k] for k in METRIC_KEYS}
    # lambda = 1 keeps only the (row-normalised) original distance: the plain ranking again.
    original = run(_config(data, "mars", uri, "lambda1", rerank="4,3,1.0", num_ranklist_queries=0))["metrics"]
    assert {k: original["rerank_" + k] for k in METRIC_KEYS} == {k: plain[k] for k in METRIC_KEYS}
    assert not [k for k in original if k.startswith("aqe_")]


def test_mars_protocol_outputs(data: dict) -> None:
    features = _write(data, _features(data["mars"], noise=0.8), "mars-noisy")
    summary = run(_config(data, "mars", features, "mars-out", num_ranklist_queries=3))
    out = data["root"] / "mars-out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["protocol"], metrics["split"], metrics["direction"], metrics["dataset"]) == (
        "mars", 0, "forward", "mars",
    )  # fmt: skip
    assert (metrics["num_queries"], metrics["num_gallery"], metrics["num_queries_without_match"]) == (
        5,
        17,
        0,
    )
    for key in ("rank1", "rank5", "rank10", "rank20", "mAP", "mAP_trapezoid", "mINP"):
        assert 0.0 <= metrics[key] <= 1.0
        assert summary["percent"][key] == pytest.approx(100 * metrics[key], abs=0.006)
    assert len(metrics["cmc"]) == 20 and metrics["cmc"][0] == metrics["rank1"]
    assert metrics["mAP_trapezoid"] <= metrics["mAP"]
    for name in ("cmc.png", "ranklist.png"):
        with Image.open(io.BytesIO((out / name).read_bytes())) as image:
            assert image.format == "PNG" and image.size[0] > 300
    assert summary["outputs"]["metrics"] == str(out / "metrics.json")


def test_perfect_features_score_one(data: dict) -> None:
    features = _write(data, _features(data["mars"]), "mars-perfect")
    summary = run(_config(data, "mars", features, "mars-perfect-out", num_ranklist_queries=0))
    assert (
        summary["metrics"]["rank1"] == summary["metrics"]["mAP"] == summary["metrics"]["mAP_trapezoid"] == 1.0
    )
    assert not (data["root"] / "mars-perfect-out" / "ranklist.png").exists()


def test_prid_split_from_features_and_reverse_direction(data: dict) -> None:
    features = _write(data, _features(data["prid"], split=2, noise=0.5), "prid-split2")
    forward = run(_config(data, "prid", features, "prid-fwd", num_ranklist_queries=2))
    assert (forward["protocol"], forward["split"], forward["direction"]) == ("splits", 2, "forward")
    assert forward["metrics"]["num_queries"] == forward["metrics"]["num_gallery"] == 4
    reverse = run(_config(data, "prid", features, "prid-rev", direction="reverse", split=2))
    assert reverse["direction"] == "reverse"
    metrics = json.loads((data["root"] / "prid-rev" / "metrics.json").read_text())
    assert metrics["direction"] == "reverse" and metrics["split"] == 2


def _mutated(data: dict, name: str, **changes) -> str:
    base = _features(data["mars"], noise=0.3)
    fields = {**base.__dict__}
    for key, change in changes.items():
        fields[key] = change(fields[key].copy() if hasattr(fields[key], "copy") else fields[key])
    return _write(data, Features(**fields), name)


def _set(index: int, value):
    def change(array):
        array[index] = value
        return array

    return change


def _train_subset(d: dict) -> str:
    return _write(d, _features(d["mars"], "train"), "train")


def _other_dataset(d: dict) -> str:
    return _mutated(d, "name", metadata=lambda m: {**m, "dataset_name": "prid2011"})


def _prid_split(split: int, subset: str = "test"):
    return lambda d: _write(d, _features(d["prid"], subset, split=split), f"prid-{subset}-{split}")


BAD_INPUTS = {
    "person": (
        "mars",
        lambda d: _mutated(d, "pid", person_id=_set(1, 99)),
        {},
        FeaturesError,
        "person_id of",
    ),
    "camera": ("mars", lambda d: _mutated(d, "cam", camera_id=_set(0, 5)), {}, FeaturesError, "camera_id of"),
    "unknown": (
        "mars",
        lambda d: _mutated(d, "ids", tracklet_id=_set(0, 999)),
        {},
        FeaturesError,
        "not in the",
    ),
    "nan": ("mars", lambda d: _mutated(d, "nan", feature=_set(3, np.nan)), {}, FeaturesError, "NaN or inf"),
    "train": ("mars", _train_subset, {}, ProtocolError, "train subset"),
    "dataset": ("mars", _other_dataset, {}, FeaturesError, "features of dataset 'prid2011'"),
    "split": (
        "prid",
        _prid_split(1),
        {"split": 2},
        ProtocolError,
        "extracted for split 1, evaluation asks for split 2",
    ),
    "protocol": ("prid", _prid_split(1), {"protocol": "mars"}, ProtocolError, "it has train/test splits"),
    "no split": ("prid", _prid_split(7, "all"), {}, ProtocolError, "split 7 does not exist"),
}


@pytest.mark.parametrize(
    ("dataset", "make", "kwargs", "error", "message"), BAD_INPUTS.values(), ids=BAD_INPUTS
)
def test_bad_input_is_a_clear_error_and_writes_nothing(data, dataset, make, kwargs, error, message) -> None:
    config = _config(data, dataset, make(data), "never", **kwargs)
    with pytest.raises(error, match=message):
        run(config)
    assert not (data["root"] / "never").exists()


def test_features_missing_protocol_tracklets(data: dict) -> None:
    full = _features(data["mars"])
    keep = np.arange(len(full)) != 2
    partial = Features(**{k: v[keep] if isinstance(v, np.ndarray) else v for k, v in full.__dict__.items()})
    with pytest.raises(ProtocolError, match="1 of the 17 gallery tracklets are missing"):
        run(_config(data, "mars", _write(data, partial, "partial"), "never"))


def test_dataset_without_queries(data: dict, tmp_path) -> None:
    root = str(tmp_path / "noquery")
    write_dataset(root, "mars")
    dataset = Dataset.open(root)
    # Rewrite the published tracklet table without query flags (an empty query set).
    tracklets = dataset.tracklets().assign(is_query=False)
    import pyarrow as pa
    import pyarrow.parquet as pq

    from components.common.dataset import TRACKLET_SCHEMA

    path = Path(root) / "tracklets.parquet"
    pq.write_table(pa.Table.from_pandas(tracklets, schema=TRACKLET_SCHEMA, preserve_index=False), path)
    manifest = json.loads((Path(root) / "manifest.json").read_text())
    manifest["files"]["tracklets"]["bytes"] = path.stat().st_size
    (Path(root) / "manifest.json").write_text(json.dumps(manifest))
    features = _write(data, _features(root), "noquery")
    with pytest.raises(ProtocolError, match="marks no query tracklets"):
        run(EvaluateConfig(dataset=root, features=features, output=str(tmp_path / "out")))


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}
    return subprocess.run(
        [sys.executable, "-m", "components.evaluate", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
    )


def test_cli_prints_metrics_and_fails_on_bad_input(data: dict) -> None:
    features = _write(data, _features(data["mars"], noise=0.8), "cli")
    ok = _cli("--dataset", data["mars"], "--features", features, "--output", str(data["root"] / "cli-out"))
    assert ok.returncode == 0, ok.stderr
    summary = json.loads(ok.stdout)
    assert set(summary["percent"]) == {"rank1", "rank5", "rank10", "rank20", "mAP", "mAP_trapezoid", "mINP"}
    assert "rank1 " in ok.stderr and " %" in ok.stderr  # the percent line is logged
    bad = _cli("--dataset", data["prid"], "--features", features, "--output", str(data["root"] / "cli-bad"))
    assert bad.returncode == 2 and "dal evaluate: error:" in bad.stderr
    assert "features and dataset do not match" in bad.stderr
    wrong = _cli("--dataset", data["mars"], "--features", features, "--output", "x", "--max-rank", "5")
    assert wrong.returncode != 0 and "max_rank: must be >= 20" in wrong.stderr


# -- verification (same-person threshold) -------------------------------------------------------
VERIFICATION = (
    "tpr_at_fpr_0.001", "tpr_at_fpr_0.01", "tpr_at_fpr_0.1",
    "threshold_at_fpr_0.001", "threshold_at_fpr_0.01", "threshold_at_fpr_0.1", "roc_auc",
)  # fmt: skip


def test_verification_metrics_and_roc_png(data: dict) -> None:
    features = _write(data, _features(data["mars"], noise=0.8), "mars-verify")
    summary = run(_config(data, "mars", features, "mars-verify-out", num_ranklist_queries=0))
    out = data["root"] / "mars-verify-out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["evaluated"] is True and summary["evaluated"] is True
    # The tiny MARS layout: queries are persons 4..8 in camera 0. Genuine pairs: their other-camera
    # tracklets (2 for even persons, 1 for odd) = 8. Impostors: the 17 gallery tracklets minus the
    # person's own and the junk one: 13 + 13 + 13 + 14 + 13 = 66.
    assert (metrics["num_genuine_pairs"], metrics["num_impostor_pairs"]) == (8, 66)
    for key in VERIFICATION:
        assert summary["metrics"][key] == metrics[key]
    assert metrics["tpr_at_fpr_0.001"] <= metrics["tpr_at_fpr_0.01"] <= metrics["tpr_at_fpr_0.1"]
    assert (
        metrics["threshold_at_fpr_0.001"]
        >= metrics["threshold_at_fpr_0.01"]
        >= metrics["threshold_at_fpr_0.1"]
    )
    # With 66 impostors, FPR 0.001 and 0.01 allow none: the threshold sits just above the best impostor.
    assert metrics["threshold_at_fpr_0.001"] == metrics["threshold_at_fpr_0.01"]
    assert 0.0 <= metrics["roc_auc"] <= 1.0
    with Image.open(io.BytesIO((out / "roc.png").read_bytes())) as image:
        assert image.format == "PNG" and image.size[0] > 300
    assert summary["outputs"]["roc"] == str(out / "roc.png")


def test_perfect_features_verify_perfectly(data: dict) -> None:
    features = _write(data, _features(data["mars"]), "mars-perfect-verify")
    metrics = run(_config(data, "mars", features, "mars-perfect-verify-out", num_ranklist_queries=0))[
        "metrics"
    ]
    assert metrics["roc_auc"] == 1.0
    assert metrics["tpr_at_fpr_0.001"] == metrics["tpr_at_fpr_0.01"] == metrics["tpr_at_fpr_0.1"] == 1.0
    assert metrics["threshold_at_fpr_0.001"] <= 1.0  # genuine pairs have cosine 1 and pass


# -- own footage without labels ------------------------------------------------------------------
def _own_footage(root: str, persons: list[int], cameras: list[int]) -> str:
    """A ``tracklets`` dataset (own footage) whose test tracklets carry these persons and cameras."""
    import pandas as pd

    from components.common.dataset import DatasetWriter
    from tests.extract.helpers import frame

    rng = np.random.default_rng(0)
    rows = []
    with DatasetWriter(root, "tracklets", row_group_rows=8) as writer:
        for tracklet, (person, camera) in enumerate(zip(persons, cameras, strict=True)):
            writer.add_frames(
                {
                    "tracklet_id": [tracklet] * 2,
                    "frame_index": [0, 1],
                    "person_id": [person] * 2,
                    "camera_id": [camera] * 2,
                    "image": [frame(max(person, 0), camera, i, rng) for i in range(2)],
                    "source_path": [f"t{tracklet}/{i}.png" for i in range(2)],
                }
            )
            rows.append({"tracklet_id": tracklet, "person_id": person, "camera_id": camera, "subset": "test",
                         "is_query": False, "num_frames": 2, "name": f"track{tracklet}"})  # fmt: skip
        writer.finish(pd.DataFrame(rows))
    return root


NO_LABELS = {
    "unlabelled": ([-1, -1, -1, -1], [0, 1, 0, 1], "no labelled test tracklets"),
    "one camera each": ([1, 1, 2, -1], [0, 0, 1, 1], "no person is labelled in two cameras"),
}


@pytest.mark.parametrize(("persons", "cameras", "reason"), NO_LABELS.values(), ids=NO_LABELS)
def test_own_footage_without_labels_is_skipped_with_a_note(
    tmp_path, caplog, persons, cameras, reason
) -> None:
    root = _own_footage(str(tmp_path / "own"), persons, cameras)
    features = str(tmp_path / "features.parquet")
    write_features(features, _features(root, subset="all", split=0))
    out = tmp_path / "out"
    with caplog.at_level("WARNING"):
        summary = run(EvaluateConfig(dataset=root, features=features, output=str(out)))
    assert summary["evaluated"] is False and reason in summary["note"] and summary["metrics"] == {}
    written = json.loads((out / "metrics.json").read_text())
    assert written == {"evaluated": False, "note": summary["note"], "dataset": "tracklets",
                       "protocol": "labelled", "split": 0, "direction": "forward"}  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]  # no plots
    assert any("NOT EVALUATED" in r.message and reason in r.message for r in caplog.records)


def test_labelled_own_footage_is_scored(tmp_path) -> None:
    root = _own_footage(str(tmp_path / "own"), [1, 1, 2, 2, -1], [0, 1, 0, 1, 0])
    features = str(tmp_path / "features.parquet")
    write_features(features, _features(root, subset="all", split=0))
    summary = run(EvaluateConfig(dataset=root, features=features, output=str(tmp_path / "out")))
    assert summary["evaluated"] is True and summary["protocol"] == "labelled"
    assert summary["metrics"]["rank1"] == 1.0 and summary["metrics"]["num_queries"] == 4


@pytest.mark.integration
def test_skipped_evaluation_is_tagged_in_mlflow(tmp_path, mlflow_env) -> None:
    from mlflow.tracking import MlflowClient

    root = _own_footage(str(tmp_path / "own"), [-1, -1], [0, 1])
    features = str(tmp_path / "features.parquet")
    write_features(features, _features(root, subset="all", split=0))
    summary = run(EvaluateConfig(dataset=root, features=features, output=str(tmp_path / "out")))
    client = MlflowClient(mlflow_env.uri)
    tags = client.get_run(summary["mlflow_run_id"]).data.tags
    assert tags["dal.evaluation"] == f"skipped: {summary['note']}" and tags["dal.dataset"] == "tracklets"
    assert {a.path for a in client.list_artifacts(summary["mlflow_run_id"])} == {
        "metrics.json",
        "config.json",
    }
    assert not client.get_run(summary["mlflow_run_id"]).data.metrics

"""``dal export --format onnx``: the command end to end, on a model.pt (local, S3) and on a
registered version (real MLflow server), and the ONNX it writes reproduces `dal extract`.

Tolerance: MAX_ABS_DIFF (1e-4), what the export checks per frame feature. Max pooling moves no
component by more than the largest frame difference; the pooled vector is then renormalised,
and with its norm above 0.5 (frames of one tracklet point in similar directions; asserted) that
at most doubles the error. Both paths compute float32 with the same operations, so the actual
differences are ~1e-7 and the bound has a wide margin; a wrong graph misses by ~1e-2.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from components.cli import main
from components.common import images, storage
from components.common.config import ConfigError
from components.common.dataset import Dataset
from components.common.features import read_features
from components.export.config import ExportConfig
from components.extract.config import ExtractConfig
from components.extract.run import run as extract
from components.model import onnx_export
from components.model.onnx_export import MAX_ABS_DIFF, UINT8_NHWC
from tests.extract.helpers import write_dataset, write_model


@pytest.fixture(autouse=True)
def _no_ambient_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # tracked only with mlflow_env


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("export")
    write_dataset(str(root / "ds"), "mars")  # frames stored at the model's input size, 32x16
    write_model(str(root / "model.pt"))
    output = str(root / "features.parquet")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        extract(
            ExtractConfig(
                dataset=str(root / "ds"), model=str(root / "model.pt"), output=output, progress=False
            )
        )
    return {"root": root, "model": str(root / "model.pt"), "features": read_features(output)}


def _run(capsys: pytest.CaptureFixture, *argv: str) -> dict:
    code = main(["export", *argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out[captured.out.index("{\n") :])  # after MLflow's "View run" lines


def _pooled_from_onnx(
    data: bytes, dataset_root: str, input_format: str, tracklet_ids: np.ndarray
) -> np.ndarray:
    """What the module docstring of onnx_export says to do outside the graph: decode (and resize,
    a no-op here), run the graph, max-pool each tracklet's frames, L2-normalise."""
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    frames = pd.concat(
        t.to_pandas() for t in Dataset.open(dataset_root).iter_frames(["tracklet_id", "image"])
    )
    pooled = []
    for tracklet in tracklet_ids:
        decoded = [images.decode(b) for b in frames.loc[frames["tracklet_id"] == tracklet, "image"]]
        if input_format == UINT8_NHWC:
            batch = torch.stack(decoded).permute(0, 2, 3, 1).contiguous().numpy()
        else:
            batch = torch.stack([images.resize(d, (32, 16)) for d in decoded]).numpy()
        (features,) = session.run(["features"], {"images": batch})
        top = features.max(axis=0)
        assert np.linalg.norm(top) > 0.5  # the renormalisation at most doubles an error (docstring)
        pooled.append(top / np.linalg.norm(top))
    return np.stack(pooled)


@pytest.mark.parametrize("input_format", ["uint8_nhwc", "float_nchw"])
def test_exported_graph_reproduces_dal_extract(data: dict, capsys, input_format: str) -> None:
    output = data["root"] / f"model-{input_format}.onnx"
    summary = _run(capsys, "--model", data["model"], "--output", str(output), "--input-format", input_format)
    assert summary["output"] == str(output) and summary["input_format"] == input_format
    assert summary["source_model"] == data["model"] and summary["backbone"] == "timm:test_efficientnet"
    assert summary["image_size"] == [32, 16] and summary["feature_dim"] == 256
    assert 0 <= summary["max_abs_diff"] <= MAX_ABS_DIFF and summary["check_batch_sizes"] == [1, 3]
    assert summary["mlflow_run_id"] == "" and summary["mlflow_model_uri"] == ""  # tracking off
    written = output.read_bytes()
    assert summary["bytes"] == len(written) and summary["sha256"] == storage.sha256_of(str(output))
    props = {p.key: p.value for p in onnx.load_model_from_string(written).metadata_props}
    assert props["dal.input_format"] == input_format and props["dal.source_model"] == data["model"]
    features = data["features"]
    pooled = _pooled_from_onnx(written, str(data["root"] / "ds"), input_format, features.tracklet_id)
    np.testing.assert_allclose(pooled, features.feature, atol=2 * MAX_ABS_DIFF, rtol=0)


def test_export_to_s3(data: dict, capsys, s3_bucket: str) -> None:
    output = f"{s3_bucket}/exports/model.onnx"
    summary = _run(capsys, "--model", data["model"], "--output", output)
    assert summary["input_format"] == "uint8_nhwc"  # the default
    written = storage.read_bytes(output)
    assert len(written) == summary["bytes"] and storage.list_files(f"{s3_bucket}/exports") == [output]
    onnx.checker.check_model(onnx.load_model_from_string(written))


def test_a_failed_check_writes_nothing(data: dict, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    class WrongMean(onnx_export.FrameEmbedding):
        def __init__(self, backbone, info, input_format) -> None:  # noqa: ANN001 - as the base
            super().__init__(backbone, dataclasses.replace(info, mean=(0.5, 0.5, 0.5)), input_format)

    monkeypatch.setattr(onnx_export, "FrameEmbedding", WrongMean)
    output = data["root"] / "wrong" / "model.onnx"
    assert main(["export", "--model", data["model"], "--output", str(output)]) == 2
    assert "ONNX features differ from PyTorch's by up to" in capsys.readouterr().err
    assert not output.exists() and not (output.parent.exists() and any(output.parent.iterdir()))


def test_a_missing_model_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["export", "--model", str(tmp_path / "none.pt"), "--output", str(tmp_path / "m.onnx")]) == 2
    assert "none.pt" in capsys.readouterr().err and not (tmp_path / "m.onnx").exists()


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="output: must name a file"):
        ExportConfig(model="m.pt", output="out/")
    with pytest.raises(ConfigError, match="input_format: must be one of uint8_nhwc, float_nchw"):
        ExportConfig(model="m.pt", output="m.onnx", input_format="nhwc")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="format: must be one of onnx"):
        ExportConfig(model="m.pt", output="m.onnx", format="tflite")  # type: ignore[arg-type]


@pytest.mark.integration
def test_registered_version_tracked(data: dict, capsys, mlflow_env, tmp_path: Path) -> None:
    """A registered alias: the version is pinned, the export run logs the ONNX model, the version
    gets a tag naming it, and the training run is left as training made it."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from components.common.registry import register_candidate
    from components.model import serving

    mlflow.set_tracking_uri(mlflow_env.uri)
    mlflow.set_experiment("export")
    frame = next(Dataset.open(str(data["root"] / "ds")).iter_frames(["image"])).column("image")[0].as_py()
    example = pd.DataFrame({"tracklet": ["a"], "image": [frame]})
    with mlflow.start_run() as training:  # what training publishes: model.pt and the serving model
        mlflow.log_artifact(data["model"])
        logged = serving.log_model(data["model"], example)
    version = register_candidate(
        mlflow_env.uri, "dal-export-test", logged, {"rank1": 0.5, "mAP": 0.4}, {"dataset": "mars"}
    )
    client = MlflowClient(mlflow_env.uri)
    models_before = _models_of(client, training.info)
    artifacts_before = [a.path for a in client.list_artifacts(training.info.run_id)]

    output = tmp_path / "champion.onnx"
    summary = _run(capsys, "--model", "models:/dal-export-test@candidate", "--output", str(output))
    assert summary["source_model"] == f"models:/dal-export-test/{version.version}"  # pinned
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["dal.step"] == "export"
    assert run.data.tags["dal.source_model"] == summary["source_model"]
    assert run.data.params["input_format"] == "uint8_nhwc"
    assert run.data.metrics["max_abs_diff"] == summary["max_abs_diff"]
    onnx_model = client.get_logged_model(summary["mlflow_model_uri"].removeprefix("models:/"))
    assert onnx_model.source_run_id == run.info.run_id and onnx_model.name == "onnx"
    tags = client.get_model_version("dal-export-test", version.version).tags
    assert tags["onnx.uint8_nhwc.model_uri"] == summary["mlflow_model_uri"]
    # The logged ONNX model serves the same features as the written file, via MLflow's pyfunc.
    pyfunc = mlflow.pyfunc.load_model(summary["mlflow_model_uri"])
    pixels = pyfunc.input_example["images"]
    direct = ort.InferenceSession(output.read_bytes(), providers=["CPUExecutionProvider"])
    served = pyfunc.predict({"images": pixels})["features"]
    np.testing.assert_array_equal(served, direct.run(None, {"images": pixels})[0])
    assert pyfunc.metadata.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 32, 16, 3)
    # Nothing was added to the training run.
    assert _models_of(client, training.info) == models_before == {logged.removeprefix("models:/")}
    assert [a.path for a in client.list_artifacts(training.info.run_id)] == artifacts_before


def _models_of(client, run_info) -> set[str]:  # noqa: ANN001 - MlflowClient, RunInfo
    """The ids of the logged models whose source run is ``run_info``'s."""
    found = client.search_logged_models([run_info.experiment_id])
    return {m.model_id for m in found if m.source_run_id == run_info.run_id}

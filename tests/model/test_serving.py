"""The serving pyfunc (components.model.serving) computes what `dal extract` computes.

Tolerance: both paths run the same float32 functions (decode, antialiased resize, normalise,
backbone, L2, pooling) on the CPU; only the batch composition differs (extract batches frames
by row group, serving by request row), and a convolution may sum in another order for another
batch size. float32 rounding (unit roundoff 2**-24 ~ 6e-8) over the backbone's layers, each
summing up to a few hundred products, bounds the relative change of a frame feature by
~ layers x sqrt(terms) x 6e-8 ~ 1e-5; L2-normalised components are at most 1, so 2e-5 absolute
(the bound tests/extract uses for streamed vs direct). Another model, pooling or preprocessing
moves components by ~1e-2 (checked below), far above it.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from components.common.dataset import Dataset
from components.common.features import Features, read_features
from components.extract.config import ExtractConfig
from components.extract.run import run as extract
from components.model import serving
from components.model.artifact import load_model
from components.train.publish import example_tracklets
from tests.extract.helpers import write_dataset, write_model
from tests.servers import post_json, served_model

ATOL = 2e-5  # module docstring
STORED = (40, 20)  # frames stored larger than the model's input: the resize is exercised


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("serving")
    write_dataset(str(root / "ds"), "mars", size=STORED, row_group_rows=5)
    write_model(str(root / "model.pt"))  # input 32x16, 256-d
    dataset = Dataset.open(str(root / "ds"))
    frames = pd.concat(t.to_pandas() for t in dataset.iter_frames(["tracklet_id", "frame_index", "image"]))
    extracted = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)  # extract untracked
        for pooling in ("max", "mean"):
            extracted[pooling] = _extract(dataset, root, pooling)
    return {"root": root, "dataset": dataset, "frames": frames, "extracted": extracted}


def _extract(dataset: Dataset, root: Path, pooling: str) -> Features:
    output = str(root / f"features-{pooling}.parquet")
    config = ExtractConfig(
        dataset=dataset.root,
        model=str(root / "model.pt"),
        output=output,
        subset="train",
        pooling=pooling,
        batch_size=4,
        progress=False,
    )
    extract(config)
    return read_features(output)


def _requested(data: dict, tracklets: list[int]) -> pd.DataFrame:
    """Every frame of ``tracklets``, interleaved (t1 f0, t2 f0, t1 f1, ...): a tracklet's rows
    need not be adjacent; ids as the dataset's tracklet names."""
    frames = data["frames"]
    names = data["dataset"].tracklets().set_index("tracklet_id")["name"]
    chosen = frames[frames["tracklet_id"].isin(tracklets)]
    order = chosen["tracklet_id"].map({t: i for i, t in enumerate(tracklets)})
    chosen = chosen.assign(order=order).sort_values(["frame_index", "order"])
    return pd.DataFrame(
        {
            serving.TRACKLET: [str(names.loc[t]) for t in chosen["tracklet_id"]],
            serving.IMAGE: [bytes(b) for b in chosen["image"]],
        }
    )


def _expected(data: dict, pooling: str, tracklets: list[int]) -> tuple[np.ndarray, np.ndarray]:
    features = data["extracted"][pooling]
    rows = [int(np.flatnonzero(features.tracklet_id == t)[0]) for t in tracklets]
    return features.feature[rows], features.num_frames[rows]


def test_embed_tracklets_equals_dal_extract(data: dict) -> None:
    model, info = load_model(str(data["root"] / "model.pt"))
    tracklets = [3, 0, 4]  # not sorted: the output keeps the order of first appearance
    frame = _requested(data, tracklets)
    names = data["dataset"].tracklets().set_index("tracklet_id")["name"]
    for pooling in ("max", "mean"):
        # batch_size 2: batches that mix tracklets and split them, unlike extract's.
        result = serving.embed_tracklets(
            model, info, frame["tracklet"].tolist(), frame["image"].tolist(), pooling=pooling, batch_size=2
        )
        expected, counts = _expected(data, pooling, tracklets)
        assert result.tracklets == [str(names.loc[t]) for t in tracklets]
        assert result.num_frames.tolist() == counts.tolist()
        assert result.features.dtype == np.float32
        np.testing.assert_allclose(result.features, expected, atol=ATOL, rtol=0)
    # The other pooling is far outside the tolerance: the comparison can fail.
    assert np.abs(result.features - _expected(data, "max", tracklets)[0]).max() > 100 * ATOL


def test_a_bad_frame_names_its_row_and_tracklet(data: dict) -> None:
    model, info = load_model(str(data["root"] / "model.pt"))
    frame = _requested(data, [0])
    images = frame["image"].tolist()
    images[1] = b"not an image"
    with pytest.raises(Exception, match=r"image: row 1 \(tracklet 't0000'\): cannot decode"):
        serving.embed_tracklets(model, info, frame["tracklet"].tolist(), images)
    with pytest.raises(Exception, match="pooling must be one of max, mean"):
        serving.embed_tracklets(model, info, ["a"], images[:1], pooling="median")


def _log(data: dict, name: str = "model") -> str:
    """The pyfunc of the test model in a new run of the current tracking store; its URI."""
    import mlflow

    train_ids = data["dataset"].subset_tracklets("train")["tracklet_id"].sort_values().to_numpy()
    example = example_tracklets(data["dataset"], train_ids)
    with mlflow.start_run():
        return serving.log_model(str(data["root"] / "model.pt"), example, name=name)


@contextlib.contextmanager
def _tracking(uri: str, artifact_location: str | None = None) -> Iterator[None]:
    """``uri`` as MLflow's global tracking URI for the block (experiment "serving")."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        if mlflow.get_experiment_by_name("serving") is None:
            mlflow.create_experiment("serving", artifact_location=artifact_location)
        mlflow.set_experiment("serving")
        yield
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def sqlite_model(data: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("store")
    with (
        pytest.MonkeyPatch.context() as patch,
        _tracking(f"sqlite:///{tmp / 'mlflow.db'}", (tmp / "art").as_uri()),
    ):
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield _log(data)


def test_logged_pyfunc_has_signature_example_and_its_code(data: dict, sqlite_model: str) -> None:
    import mlflow

    model = mlflow.pyfunc.load_model(sqlite_model)
    signature = model.metadata.signature
    assert [(c["name"], c["type"]) for c in signature.inputs.to_dict()] == [
        ("tracklet", "string"),
        ("image", "binary"),
    ]
    outputs = signature.outputs.to_dict()
    assert [(c["name"], c["type"]) for c in outputs] == [
        ("tracklet", "string"),
        ("num_frames", "long"),
        ("feature", "array"),
    ]
    assert outputs[2]["items"] == {"type": "float"}
    assert signature.params.to_dict() == [
        {"name": "pooling", "type": "string", "default": "max", "shape": None}
    ]
    # The example: the stored bytes of the first frames of two train tracklets.
    example = model.input_example
    assert example["tracklet"].tolist() == ["t0000"] * 3 + ["t0001"] * 3
    frames = data["frames"].sort_values(["tracklet_id", "frame_index"])
    stored = [bytes(b) for t in (0, 1) for b in frames.loc[frames["tracklet_id"] == t, "image"][:3]]
    assert [bytes(b) for b in example["image"]] == stored
    predicted = model.predict(example)
    assert predicted["tracklet"].tolist() == ["t0000", "t0001"]
    assert predicted["num_frames"].tolist() == [3, 3]
    # The model carries model.pt and the code it runs (no pickled object).
    local = Path(mlflow.artifacts.download_artifacts(sqlite_model))
    assert (local / "artifacts" / "model.pt").read_bytes() == (data["root"] / "model.pt").read_bytes()
    assert (local / "code" / "components" / "model" / "serving.py").is_file()
    assert not (local / "python_model.pkl").exists()


def test_pyfunc_input_errors_are_invalid_parameter_value(data: dict, sqlite_model: str) -> None:
    import mlflow

    model = mlflow.pyfunc.load_model(sqlite_model)
    frame = _requested(data, [0])
    with pytest.raises(MlflowException, match="pooling must be one of") as caught:
        model.predict(frame, params={"pooling": "median"})
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    broken = frame.assign(image=[b"\x89PNG broken"] + frame["image"].tolist()[1:])
    with pytest.raises(MlflowException, match=r"row 0 \(tracklet 't0000'\): cannot decode"):
        model.predict(broken)


@pytest.mark.integration
@pytest.mark.slow
def test_served_over_http_equals_dal_extract(data: dict, mlflow_env, tmp_path: Path) -> None:
    """`mlflow models serve` of the model logged to the tracking server answers real HTTP
    requests with the features `dal extract` writes for the same frames."""
    with _tracking(mlflow_env.uri):
        uri = _log(data)
    with served_model(uri, mlflow_env.client_env, tmp_path / "serve.log") as url:
        tracklets = [4, 1]
        frame = _requested(data, tracklets)
        encoded = [base64.b64encode(b).decode("ascii") for b in frame["image"]]
        invocations = f"{url}/invocations"
        split = {
            "columns": ["tracklet", "image"],
            "data": [list(r) for r in zip(frame["tracklet"], encoded, strict=True)],
        }
        records = [{"tracklet": t, "image": e} for t, e in zip(frame["tracklet"], encoded, strict=True)]
        names = data["dataset"].tracklets().set_index("tracklet_id")["name"]
        for body, pooling in (
            ({"dataframe_split": split}, "max"),  # the default pooling
            ({"dataframe_records": records, "params": {"pooling": "mean"}}, "mean"),
        ):
            status, answer = post_json(invocations, body)
            assert status == 200, answer
            predictions = answer["predictions"]
            expected, counts = _expected(data, pooling, tracklets)
            assert [p["tracklet"] for p in predictions] == [str(names.loc[t]) for t in tracklets]
            assert [p["num_frames"] for p in predictions] == counts.tolist()
            served = np.array([p["feature"] for p in predictions], dtype=np.float64)
            assert served.shape == expected.shape
            np.testing.assert_allclose(served, expected, atol=ATOL, rtol=0)
        # A frame that is no image: a client error naming the row, not a server error.
        body = {"dataframe_split": {**split, "data": [["t0004", base64.b64encode(b"junk").decode()]]}}
        status, answer = post_json(invocations, body)
        assert status == 400 and "row 0 (tracklet 't0004'): cannot decode" in answer["message"], answer

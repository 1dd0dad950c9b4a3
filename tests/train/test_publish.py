"""What training publishes to MLflow: the model with a real input example and the signature of its
output, and the dataset every step read as a run input (train, extract, evaluate), on a real
sqlite store."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import decode_jpeg

from components.common.dataset import Dataset
from components.common.errors import DalError
from components.common.tracking import start_pipeline_run
from components.model.artifact import IMAGENET_MEAN, IMAGENET_STD, load_model
from components.train.publish import example_frames
from components.train.summary import TrainSummary
from tests.train.test_support import Spec, tiny_config, write_dataset

SPEC = Spec(persons=4, cameras=2, frames=3, test_persons=2, row_group_rows=8, height=32, width=16)


@dataclass(frozen=True)
class Tracked:
    store: str
    parent: str
    dataset: Dataset
    run_dir: Path
    summary: TrainSummary


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracked]:
    """One short tracked training run under a pipeline parent run (artifacts beside the store)."""
    from components.train.run import run

    tmp = tmp_path_factory.mktemp("publish")
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    write_dataset(str(tmp / "ds"), SPEC)
    parent = start_pipeline_run(store, "exp", "job-1", "pipeline", {}, (tmp / "artifacts").as_uri())
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core box (see test_support.one_thread)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.delenv("MLFLOW_TRACKING_URI", raising=False)
            config = tiny_config(
                str(tmp / "ds"),
                str(tmp / "run"),
                steps=2,
                mlflow_tracking_uri=store,
                mlflow_parent_run_id=parent,
            )
            summary = run(config)
        yield Tracked(store, parent, Dataset.open(str(tmp / "ds")), tmp / "run", summary)
    finally:
        torch.set_num_threads(before)


def _first_frame(dataset: Dataset, tracklet: int) -> np.ndarray:
    """The first stored frame of ``tracklet`` as [0, 1] floats (3, H, W), decoded here."""
    for table in dataset.iter_frames(["tracklet_id", "image"]):
        ids = table.column("tracklet_id").to_numpy()
        hits = np.flatnonzero(ids == tracklet)
        if len(hits):
            data = bytearray(table.column("image")[int(hits[0])].as_py())
            return decode_jpeg(torch.frombuffer(data, dtype=torch.uint8)).float().div(255).numpy()
    raise AssertionError(f"no frame of tracklet {tracklet}")


def test_logged_model_has_real_frames_as_input_example(tracked: Tracked) -> None:
    import mlflow
    import mlflow.pyfunc
    from mlflow.models import Model

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", tracked.store)  # models:/ URIs resolve through it
        # The backbone (pytorch flavour) beside the serving pyfunc that is registered.
        run = mlflow.get_run(tracked.summary.mlflow_run_id)
        (backbone,) = mlflow.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}' AND name = 'backbone'",
            output_format="list",
        )
        uri = backbone.model_uri
        pyfunc = mlflow.pyfunc.load_model(uri)
        example = pyfunc.input_example
        signature = Model.load(uri).signature
        predicted = pyfunc.predict(example)
    assert isinstance(example, np.ndarray) and example.dtype == np.float32
    assert example.shape == (1, 3, 32, 16)  # one frame at the model's input size, NCHW
    # Real frames, normalised: tracklet 0 (a train tracklet) de-normalises to its decoded pixels.
    mean, std = np.array(IMAGENET_MEAN)[:, None, None], np.array(IMAGENET_STD)[:, None, None]
    assert example.std() > 0.1
    np.testing.assert_allclose(example[0] * std + mean, _first_frame(tracked.dataset, 0), atol=2 / 255)

    inputs, outputs = signature.inputs.inputs[0], signature.outputs.inputs[0]
    assert (inputs.type, inputs.shape) == (np.dtype(np.float32), (-1, 3, 32, 16))
    assert (outputs.type, outputs.shape) == (np.dtype(np.float32), (-1, 256))
    # The logged model's output on its example fits the signature and is the EMA model.pt's output.
    assert predicted.dtype == outputs.type and predicted.shape == (1, 256)
    model, _ = load_model(tracked.summary.model_uri)
    with torch.no_grad():
        expected = model(torch.from_numpy(example)).numpy()
    np.testing.assert_allclose(predicted, expected, rtol=1e-4, atol=1e-5)


def test_every_step_records_the_dataset_it_read(tracked: Tracked) -> None:
    from mlflow.tracking import MlflowClient

    from components.evaluate.config import EvaluateConfig
    from components.evaluate.run import run as evaluate
    from components.extract.config import ExtractConfig
    from components.extract.run import run as extract

    tracking = {"mlflow_tracking_uri": tracked.store, "mlflow_parent_run_id": tracked.parent}
    features = str(tracked.run_dir / "features.parquet")
    root = tracked.dataset.root
    extracted = extract(
        ExtractConfig(
            dataset=root, model=tracked.summary.model_uri, output=features, progress=False, **tracking
        )
    )
    evaluated = evaluate(
        EvaluateConfig(
            dataset=root, features=features, output=str(tracked.run_dir / "eval"), protocol="mars", **tracking
        )
    )
    client = MlflowClient(tracked.store)
    contexts = {}
    for run_id in (tracked.summary.mlflow_run_id, extracted["mlflow_run_id"], evaluated["mlflow_run_id"]):
        (logged,) = client.get_run(run_id).inputs.dataset_inputs
        assert (logged.dataset.name, logged.dataset.digest) == ("synthetic", tracked.dataset.digest)
        assert logged.dataset.source_type == "local" and root in logged.dataset.source
        contexts[client.get_run(run_id).data.tags["dal.step"]] = {t.key: t.value for t in logged.tags}
    assert contexts == {
        "train": {"mlflow.data.context": "training"},
        "extract": {"mlflow.data.context": "inference"},
        "evaluate": {"mlflow.data.context": "evaluation"},
    }


def test_example_frames_are_train_frames(tmp_path) -> None:
    write_dataset(str(tmp_path / "ds"), SPEC)
    dataset = Dataset.open(str(tmp_path / "ds"))
    is_train = (dataset.tracklets().sort_values("tracklet_id")["subset"] == "train").to_numpy().copy()
    is_train[0] = False  # the first tracklet is skipped: its frames must not appear
    frames = example_frames(dataset, dataset.row_groups(), is_train, (32, 16), count=2)
    assert frames.shape == (2, 3, 32, 16) and frames.dtype == np.float32
    for frame, tracklet in zip(frames, (1, 2), strict=True):
        np.testing.assert_allclose(frame, _first_frame(dataset, tracklet), atol=1e-6)
    resized = example_frames(dataset, dataset.row_groups(), is_train, (64, 32))
    assert resized.shape == (1, 3, 64, 32) and resized.min() >= 0 and resized.max() <= 1
    with pytest.raises(DalError, match="no train frames"):
        example_frames(dataset, dataset.row_groups(), np.zeros_like(is_train), (32, 16))

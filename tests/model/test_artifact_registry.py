"""``load_model("models:/<name>@<alias>")``: the registered version's model.pt, as training logged it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from components.common.errors import DalError
from components.common.registry import promote_champion, register_candidate
from components.common.tracking import TrackingOptions, step_run
from components.model.artifact import ModelInfo, load_model, save_model
from components.model.backbones import build_backbone
from components.train.publish import MODEL_FILE

BACKBONE = "timm:test_efficientnet"


@dataclasses.dataclass(frozen=True, kw_only=True)
class _TrainLike(TrackingOptions):
    backbone: str = BACKBONE


def _train_run(tracking_uri: str, tmp_path: Path, seed: int) -> tuple[str, Path]:
    """What training publishes (components.train.publish): model.pt at the root of its run and
    the backbone as a pytorch-flavour logged model, whose ``models:/<id>`` URI gets registered."""
    import mlflow.pytorch

    torch.manual_seed(seed)
    model = build_backbone(BACKBONE).eval()
    info = ModelInfo(backbone=BACKBONE, feature_dim=model.feature_dim, image_height=32, image_width=16)
    local = tmp_path / f"seed{seed}" / MODEL_FILE
    save_model(str(local), model, info)
    config = _TrainLike(mlflow_tracking_uri=tracking_uri, mlflow_experiment="reg")
    with step_run("train", config) as logger:
        logger.log_artifact(str(local))
        logged = mlflow.pytorch.log_model(
            model, name="model", pip_requirements=["torch"], serialization_format="pickle"
        )
    return str(logged.model_uri), local


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("reg", artifact_location=(tmp_path / "art").as_uri())
    return uri


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_champion_loads_the_registered_weights(tracking_uri: str, tmp_path: Path, monkeypatch) -> None:
    tags = {"dataset": "prid2011", "split": 0}
    first_uri, first_file = _train_run(tracking_uri, tmp_path, seed=1)
    v1 = register_candidate(tracking_uri, "dal-test", first_uri, {"rank1": 0.5, "mAP": 0.5}, tags)
    promote_champion(tracking_uri, "dal-test", v1.version)
    second_uri, second_file = _train_run(tracking_uri, tmp_path, seed=2)
    v2 = register_candidate(tracking_uri, "dal-test", second_uri, {"rank1": 0.4, "mAP": 0.5}, tags)
    assert not promote_champion(tracking_uri, "dal-test", v2.version).promoted

    expected, expected_info = load_model(str(first_file))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)  # what `dal extract` sees
    champion, info = load_model("models:/dal-test@champion")
    assert info == expected_info and _same_weights(champion, expected)
    candidate, _ = load_model("models:/dal-test@candidate")
    assert _same_weights(candidate, load_model(str(second_file))[0])
    assert not _same_weights(candidate, champion)  # the alias picks the version
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    by_version, _ = load_model("models:/dal-test/1", tracking_uri=tracking_uri)
    assert _same_weights(by_version, expected)
    with torch.no_grad():
        x = torch.rand(2, 3, 32, 16)
        assert torch.equal(by_version(x), expected(x))


def test_a_registered_uri_needs_a_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(DalError, match=r"models:/dal-test@champion: .*MLFLOW_TRACKING_URI"):
        load_model("models:/dal-test@champion")


def test_an_unknown_registered_model_is_a_clear_error(tracking_uri: str) -> None:
    with pytest.raises(DalError, match="models:/nothing@champion"):
        load_model("models:/nothing@champion", tracking_uri=tracking_uri)

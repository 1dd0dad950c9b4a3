"""The model registry on a real sqlite MLflow store: one version per call, aliases, promotion rule."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from components.common import registry
from components.common.registry import (
    CANDIDATE_ALIAS,
    CHAMPION_ALIAS,
    RegistryError,
    beats,
    promote_champion,
    register_candidate,
    resolve_registered_model,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """One store for the module (creating its tables takes seconds); each test its own model name."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    experiment = MlflowClient(uri).create_experiment("registry", artifact_location=(root / "art").as_uri())
    yield uri, experiment


@pytest.fixture(autouse=True)
def other_global_store(tmp_path: Path) -> Iterator[Path]:
    """A global tracking URI that is not the store: the registry must use only the one it is given."""
    decoy = tmp_path / "decoy"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(decoy.as_uri())
    yield decoy
    mlflow.set_tracking_uri(previous)
    assert not decoy.exists(), "something used the global tracking URI"


def _logged_model(store: tuple[str, str], tmp_path: Path, model_pt: bytes | None = b"weights") -> str:
    """A training-like run: model.pt at the root of its artifacts and a logged model; its URI."""
    uri, experiment = store
    client = MlflowClient(uri)
    run_id = client.create_run(experiment).info.run_id
    if model_pt is not None:
        local = tmp_path / run_id / registry.MODEL_ARTIFACT
        local.parent.mkdir(parents=True)
        local.write_bytes(model_pt)
        client.log_artifact(run_id, str(local))
    logged = client.create_logged_model(experiment, source_run_id=run_id, name="model")
    client.set_terminated(run_id)
    return str(logged.model_uri)


def _metrics(rank1: float, mAP: float) -> dict[str, float]:
    return {"rank1": rank1, "rank5": 0.9, "mAP": mAP, "rank1_std": 0.01, "num_splits": 10.0}


def _tags(dataset: str = "prid2011", job: str = "job-1") -> dict[str, object]:
    return {"dataset": dataset, "pipeline_job_id": job, "split": 0, "backbone": "mobilenet_v2",
            "storage_uri": f"s3://bucket/{job}/split0/model.pt"}  # fmt: skip


def _register(store, tmp_path, name: str, rank1: float, mAP: float, **tags) -> registry.RegisteredVersion:
    return register_candidate(
        store[0], name, _logged_model(store, tmp_path), _metrics(rank1, mAP), _tags(**tags)
    )


def _aliases(store, name: str) -> dict[str, str]:
    return {k: str(v) for k, v in MlflowClient(store[0]).get_registered_model(name).aliases.items()}


def test_first_candidate_is_registered_tagged_and_becomes_champion(store, tmp_path: Path) -> None:
    model_uri = _logged_model(store, tmp_path)
    version = register_candidate(store[0], "first", model_uri, _metrics(0.8125, 0.7), _tags())
    assert (version.name, version.version, version.aliases) == ("first", "1", (CANDIDATE_ALIAS,))
    assert version.metrics == _metrics(0.8125, 0.7)  # exact round trip through the tags
    assert version.tags["dataset"] == "prid2011" and version.tags["split"] == "0"
    assert version.tags["storage_uri"] == "s3://bucket/job-1/split0/model.pt"
    assert version.tags["mlflow_model_uri"] == model_uri and version.uri == "models:/first/1"
    client = MlflowClient(store[0])
    stored = client.get_model_version("first", "1")
    assert stored.tags["metric.rank1"] == "0.8125" and stored.tags["metric.mAP"] == "0.7"
    assert "rank1 81.25 %" in stored.description
    assert stored.run_id == MlflowClient(store[0]).get_logged_model(model_uri.split("/")[-1]).source_run_id
    assert "candidate" in client.get_registered_model("first").description

    decision = promote_champion(store[0], "first", version.version)
    assert decision.promoted and decision.champion_version is None and decision.champion_metrics is None
    assert decision.reason == "no champion yet" and decision.candidate_metrics["rank1"] == 0.8125
    assert _aliases(store, "first") == {CANDIDATE_ALIAS: "1", CHAMPION_ALIAS: "1"}
    tags = client.get_model_version("first", "1").tags
    assert tags["promotion"] == "promoted" and tags["promotion.champion_before"] == "none"
    assert tags["promotion.reason"] == "no champion yet"


def test_registering_the_same_logged_model_again_adds_no_version(store, tmp_path: Path) -> None:
    """A register task retried after it had registered: the same version, candidate again."""
    model_uri = _logged_model(store, tmp_path)
    first = register_candidate(store[0], "again", model_uri, _metrics(0.5, 0.4), _tags())
    other = register_candidate(store[0], "again", _logged_model(store, tmp_path), _metrics(0.4, 0.3), _tags())
    assert _aliases(store, "again") == {CANDIDATE_ALIAS: other.version}
    repeated = register_candidate(store[0], "again", model_uri, _metrics(0.5, 0.4), _tags())
    assert repeated.version == first.version
    assert len(MlflowClient(store[0]).search_model_versions("name = 'again'")) == 2
    assert _aliases(store, "again") == {CANDIDATE_ALIAS: first.version}


def test_worse_better_and_tied_runs(store, tmp_path: Path) -> None:
    name = "sequence"
    first = _register(store, tmp_path, name, 0.50, 0.40)
    assert promote_champion(store[0], name, first.version).promoted

    worse = _register(store, tmp_path, name, 0.45, 0.50)  # mAP up, rank-1 down: a trade-off
    decision = promote_champion(store[0], name, worse.version)
    assert not decision.promoted and decision.champion_version == "1"
    assert decision.champion_metrics["rank1"] == 0.50 and "does not beat" in decision.reason
    assert _aliases(store, name) == {CANDIDATE_ALIAS: "2", CHAMPION_ALIAS: "1"}
    assert MlflowClient(store[0]).get_model_version(name, "2").tags["promotion"] == "kept"

    better = _register(store, tmp_path, name, 0.60, 0.40)  # rank-1 up, mAP equal: dominates
    decision = promote_champion(store[0], name, better.version)
    assert decision.promoted and decision.champion_version == "1" and "beats" in decision.reason
    assert _aliases(store, name) == {CANDIDATE_ALIAS: "3", CHAMPION_ALIAS: "3"}

    tie = _register(store, tmp_path, name, 0.60, 0.40)
    decision = promote_champion(store[0], name, tie.version)
    assert not decision.promoted and decision.champion_version == "3"
    assert _aliases(store, name) == {CANDIDATE_ALIAS: "4", CHAMPION_ALIAS: "3"}
    tags = MlflowClient(store[0]).get_model_version(name, "4").tags
    assert tags["promotion"] == "kept" and tags["promotion.champion_before"] == "3"

    again = promote_champion(store[0], name, "3")  # the champion against itself
    assert not again.promoted and "already the champion" in again.reason
    versions = MlflowClient(store[0]).search_model_versions(f"name = '{name}'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3, 4]  # one version per call


def test_a_champion_of_another_dataset_is_refused(store, tmp_path: Path) -> None:
    name = "mixed"
    champion = _register(store, tmp_path, name, 0.5, 0.5, dataset="mars")
    promote_champion(store[0], name, champion.version)
    other = _register(store, tmp_path, name, 0.9, 0.9, dataset="ilidsvid")
    with pytest.raises(RegistryError, match="dataset 'ilidsvid' but the champion models:/mixed/1 .* 'mars'"):
        promote_champion(store[0], name, other.version)
    assert _aliases(store, name)[CHAMPION_ALIAS] == "1"
    assert "promotion" not in MlflowClient(store[0]).get_model_version(name, other.version).tags


@pytest.mark.parametrize(
    ("metrics", "tags", "model_uri", "message"),
    [
        (_metrics(0.5, 0.5), {"split": 0}, None, "needs a 'dataset' tag"),
        ({"rank1": 0.5}, _tags(), None, "needs metric 'mAP'"),
        ({**_metrics(0.5, 0.5), "rank5": float("nan")}, _tags(), None, "'rank5' is nan"),
        (_metrics(0.5, 0.5), _tags(), "runs:/abc/model", "not a logged model URI"),
        (_metrics(0.5, 0.5), _tags(), "models:/m-0000/1", "not a logged model URI"),
        (_metrics(0.5, 0.5), _tags(), "models:/m-doesnotexist", "models:/m-doesnotexist"),
    ],
)
def test_bad_candidates_register_nothing(store, tmp_path: Path, metrics, tags, model_uri, message) -> None:
    with pytest.raises(RegistryError, match=message):
        register_candidate(store[0], "refused", model_uri or _logged_model(store, tmp_path), metrics, tags)
    assert MlflowClient(store[0]).search_model_versions("name = 'refused'") == []


@pytest.mark.parametrize(
    ("candidate", "champion", "expected"),
    [
        ((0.6, 0.5), (0.5, 0.5), True),
        ((0.5, 0.6), (0.5, 0.5), True),
        ((0.6, 0.6), (0.5, 0.5), True),
        ((0.5, 0.5), (0.5, 0.5), False),  # a tie keeps the champion
        ((0.6, 0.4), (0.5, 0.5), False),  # a trade-off keeps it too
        ((0.4, 0.4), (0.5, 0.5), False),
    ],
)
def test_beats_is_pareto_dominance(candidate, champion, expected) -> None:
    as_metrics = lambda pair: {"rank1": pair[0], "mAP": pair[1]}  # noqa: E731
    assert beats(as_metrics(candidate), as_metrics(champion)) is expected


def test_resolve_downloads_the_runs_model_pt(store, tmp_path: Path) -> None:
    model_uri = _logged_model(store, tmp_path, model_pt=b"the exact bytes")
    version = register_candidate(store[0], "resolved", model_uri, _metrics(0.5, 0.5), _tags())
    promote_champion(store[0], "resolved", version.version)
    for uri in ("models:/resolved@champion", "models:/resolved/1", "models:/resolved@candidate"):
        path = resolve_registered_model(store[0], uri, str(tmp_path / "dl" / uri[-4:]))
        assert Path(path).name == "model.pt" and Path(path).read_bytes() == b"the exact bytes"


def test_resolve_falls_back_to_the_storage_uri_tag(store, tmp_path: Path) -> None:
    no_artifact = _logged_model(store, tmp_path, model_pt=None)
    register_candidate(store[0], "tagged", no_artifact, _metrics(0.5, 0.5), _tags(job="j9"))
    assert resolve_registered_model(store[0], "models:/tagged/1") == "s3://bucket/j9/split0/model.pt"
    untagged = {k: v for k, v in _tags().items() if k != "storage_uri"}
    register_candidate(store[0], "tagged", _logged_model(store, tmp_path, None), _metrics(0.5, 0.5), untagged)
    with pytest.raises(RegistryError, match="models:/tagged/2 .*neither a model.pt artifact"):
        resolve_registered_model(store[0], "models:/tagged/2")


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("models:/m-abc123", "not a registered model version URI"),
        ("models:/name/Production", "not a registered model version URI"),
        ("models:/name@", "not a registered model version URI"),
        ("runs:/abc/model.pt", "not a registered model version URI"),
        ("models:/nobody@champion", "models:/nobody@champion: "),
        ("models:/nobody/3", "models:/nobody/3: "),
    ],
)
def test_resolve_errors_name_the_uri(store, uri: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        resolve_registered_model(store[0], uri)


def test_unknown_alias_of_a_known_model(store, tmp_path: Path) -> None:
    _register(store, tmp_path, "noalias", 0.5, 0.5)  # a candidate, never promoted
    with pytest.raises(RegistryError, match="models:/noalias@champion"):
        resolve_registered_model(store[0], "models:/noalias@champion")


def test_the_artifact_name_is_the_one_training_logs() -> None:
    from components.train.publish import MODEL_FILE

    assert registry.MODEL_ARTIFACT == MODEL_FILE


@pytest.mark.integration
def test_through_a_tracking_server_with_artifacts_on_s3(mlflow_env, tmp_path: Path) -> None:
    """The production path: the server validates the version's source and proxies model.pt."""
    uri = mlflow_env.uri
    experiment = MlflowClient(uri).create_experiment(f"registry-{tmp_path.name}")
    server_store = (uri, experiment)
    model_uri = _logged_model(server_store, tmp_path, model_pt=b"served bytes")
    version = register_candidate(uri, f"served-{tmp_path.name}", model_uri, _metrics(0.5, 0.5), _tags())
    assert promote_champion(uri, version.name, version.version).promoted
    path = resolve_registered_model(uri, f"models:/{version.name}@champion", str(tmp_path / "dl"))
    assert Path(path).read_bytes() == b"served bytes"


def test_an_unscored_candidate_is_registered_with_its_note_and_never_promoted(store, tmp_path: Path) -> None:
    """Own footage without labels: no metrics to compare, so the champion stays where it is."""
    champion = _register(store, tmp_path, "own", 0.5, 0.4, dataset="tracklets")
    assert promote_champion(store[0], "own", champion.version).promoted
    note = "protocol labelled: no labelled test tracklets"
    unscored = register_candidate(
        store[0], "own", _logged_model(store, tmp_path), {}, _tags("tracklets"), unscored=note
    )
    assert unscored.metrics == {} and unscored.tags["evaluation"] == f"skipped: {note}"
    assert _aliases(store, "own") == {"candidate": unscored.version, "champion": champion.version}
    decision = promote_champion(store[0], "own", unscored.version)
    assert not decision.promoted and "not evaluated" in decision.reason
    assert _aliases(store, "own")["champion"] == champion.version
    with pytest.raises(registry.RegistryError, match="either scored"):
        register_candidate(
            store[0], "own", _logged_model(store, tmp_path), _metrics(0.5, 0.5), _tags(), unscored=note
        )

"""components/train/trainjob.py: the TrainJob manifests against the Trainer v2 CRDs, the watcher
against recorded API responses (tests/train/recorded: no cluster here), names, options.

The fake API below implements trainjob.TrainJobApi by replaying those responses; it stands in
for the Kubernetes API server only (nothing here touches S3 or MLflow).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.common.config import ConfigError, to_argv
from components.common.errors import DalError
from components.train import trainjob
from components.train.config import TrainConfig
from components.train.trainjob import (
    AlreadyExists,
    ApiUnavailable,
    NotFound,
    TrainJobError,
    TrainJobOptions,
    run_trainjob,
    trainjob_manifest,
    trainjob_name,
)
from tests.static.helpers import K8S, crd_errors, load_docs

RECORDED = Path(__file__).parent / "recorded"
ARGV = to_argv(TrainConfig(dataset="s3://dal/datasets/mars", output="s3://dal/runs/r/split-0/dal", steps=300))


def options(**overrides: Any) -> TrainJobOptions:
    return TrainJobOptions(**{"namespace": "dal", "poll_s": 30, "timeout_s": 3600, **overrides})


def manifest(**overrides: Any) -> dict[str, Any]:
    return trainjob_manifest("dal-train-r-s0", ARGV, options(**overrides), run_key="r", split=0)


# ---------------------------------------------------------------------------------------------
# Manifests against the CRDs


@pytest.mark.parametrize(
    "overrides",
    [
        {"gpus_per_node": 0},
        {"gpus_per_node": 8, "nodes": 4},
        {"runtime_kind": "ClusterTrainingRuntime", "runtime": "torch-distributed", "mlflow_secret": ""},
    ],
    ids=["cpu", "8-gpus", "cluster-runtime"],
)
def test_manifests_match_the_trainjob_crd(overrides: dict[str, Any]) -> None:
    job = manifest(**overrides)
    assert crd_errors(job) == []
    trainer = job["spec"]["trainer"]
    gpus = overrides.get("gpus_per_node", 1)
    assert trainer["numProcPerNode"] == max(1, gpus)
    for side in ("requests", "limits"):
        assert trainer["resourcesPerNode"][side].get("nvidia.com/gpu") == (str(gpus) if gpus else None)
    assert job["spec"]["runtimeRef"]["kind"] == options(**overrides).runtime_kind


def test_the_training_runtime_matches_its_crd() -> None:
    (runtime,) = load_docs(K8S / "base" / "trainingruntime.yaml")
    assert crd_errors(runtime) == []


@pytest.mark.parametrize(
    "path",
    [
        ("spec", "trainer", "numNode"),
        ("spec", "runtimeRef", "kindd"),
        ("spec", "trainer", "env", 0, "valueFromm"),
    ],
)
def test_a_misspelt_field_fails_the_crd_check(path: tuple[Any, ...]) -> None:
    job = manifest()
    target: Any = job
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = 1
    errors = crd_errors(job)
    assert any(repr(path[-1]) in e for e in errors), errors


def test_a_wrong_type_and_a_duplicate_env_fail_the_crd_check() -> None:
    job = manifest()
    job["spec"]["trainer"]["numNodes"] = "two"
    job["spec"]["trainer"]["env"].append(job["spec"]["trainer"]["env"][0])
    errors = crd_errors(job)
    assert any("numNodes" in e for e in errors) and any("duplicate" in e for e in errors), errors


def test_the_manifest_references_secrets_and_never_holds_values() -> None:
    env = {e["name"]: e for e in manifest()["spec"]["trainer"]["env"]}
    assert set(env) == {
        "DAL_STORE",
        "MLFLOW_TRACKING_URI",
        "AWS_MAX_ATTEMPTS",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "AWS_ENDPOINT_URL",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    }
    assert all(set(e) == {"name", "valueFrom"} for e in env.values())
    assert env["DAL_STORE"]["valueFrom"] == {"configMapKeyRef": {"name": "dal-config", "key": "DAL_STORE"}}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "dal-s3", "key": "AWS_SECRET_ACCESS_KEY"}
    }
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert not [n for n in env if n.startswith("PET_")], "the torch plugin rejects PET_* in trainer.env"
    without = {e["name"] for e in manifest(mlflow_secret="")["spec"]["trainer"]["env"]}
    assert not {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} & without


def test_the_manifest_runs_dal_train_under_torchrun_and_is_labelled() -> None:
    import argparse

    from components.common.config import add_arguments, from_args

    job = manifest()
    trainer = job["spec"]["trainer"]
    assert trainer["command"] == ["python", "-m", "torch.distributed.run"]
    assert trainer["args"][:2] == ["-m", "components.train"]
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser, TrainConfig)  # the flags of `dal train`
    parsed = from_args(TrainConfig, parser.parse_args(trainer["args"][2:]))
    assert parsed == TrainConfig(
        dataset="s3://dal/datasets/mars", output="s3://dal/runs/r/split-0/dal", steps=300
    )
    labels = job["metadata"]["labels"]
    assert (
        labels["app.kubernetes.io/part-of"] == "dal"
        and labels["dal/run-key"] == "r"
        and labels["dal/split"] == "0"
    )
    assert job["spec"]["labels"] == labels
    # Only fields every supported Trainer (v2.0 - v2.2) has: no podSpecOverrides.
    assert set(job["spec"]) == {"runtimeRef", "labels", "trainer"}
    # The digest is of the spec: another argv is another TrainJob.
    other = trainjob_manifest("dal-train-r-s0", [*ARGV, "--seed", "7"], options(), run_key="r", split=0)
    assert other["metadata"]["annotations"] != job["metadata"]["annotations"]


def test_torchrun_takes_nodes_rank_and_rendezvous_from_the_plugins_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The PET_* values of the torch plugin are torch.distributed.run's defaults (no flags needed)."""
    plugin_env = {
        "PET_NNODES": "4",
        "PET_NPROC_PER_NODE": "8",
        "PET_NODE_RANK": "2",
        "PET_MASTER_ADDR": "dal-train-r-s0-node-0-0.dal-train-r-s0",
        "PET_MASTER_PORT": "29500",
    }
    for key, value in plugin_env.items():
        monkeypatch.setenv(key, value)
    from torch.distributed.run import get_args_parser

    args = get_args_parser().parse_args(manifest()["spec"]["trainer"]["args"])
    assert (args.nnodes, args.nproc_per_node, args.node_rank) == ("4", "8", 2)
    assert (args.master_addr, args.master_port) == (plugin_env["PET_MASTER_ADDR"], 29500)
    assert args.module and args.training_script == "components.train"


# ---------------------------------------------------------------------------------------------
# Names and options


def test_names_are_deterministic_distinct_and_fit_jobset_pod_names() -> None:
    uuid = "3f2a9c1e-77b0-4d2b-9b1c-0123456789ab"  # a KFP run id
    assert trainjob_name(uuid, 3) == trainjob_name(uuid, 3)
    names = {
        trainjob_name(key, split)
        for key in (uuid, uuid.upper(), "run_1", "run-1", "x" * 200)
        for split in (0, 9, 10)
    }
    assert len(names) == 15
    for name in names:
        assert len(name) <= trainjob.MAX_NAME_LENGTH and name[0].isalpha(), name
        assert trainjob._DNS1123_LABEL.match(name), name
        assert len(f"{name}-node-0-9999-abcde") <= 63, "JobSet's webhook limit on pod names"
    assert trainjob_name("run1", 0) == "dal-train-run1-s0"  # readable when it can be
    with pytest.raises(DalError, match="run_key"):
        trainjob_name("", 0)


def test_label_values_stay_valid_for_any_run_key() -> None:
    labels = trainjob.trainjob_labels("a run/key with spaces " + "x" * 100, 2)
    assert len(labels["dal/run-key"]) <= 63 and trainjob._LABEL_VALUE.match(labels["dal/run-key"])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("nodes", 1),
        ("gpus_per_node", -1),
        ("image", " "),
        ("runtime_kind", "Runtime"),
        ("cpu", "lots"),
        ("memory", "0"),
        ("timeout_s", 0),
        ("timeout_s", 8 * 86_400),
        ("poll_s", 0.5),
        ("keep", "sometimes"),
        ("namespace", "Not_DNS"),
        ("mlflow_secret", "A B"),
    ],
)
def test_options_name_the_bad_field(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"^{field}:"):
        TrainJobOptions(**{"namespace": "dal", field: value})


def test_the_namespace_is_the_pods_own_read_when_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert trainjob.default_namespace(tmp_path / "missing") == "dal"
    (tmp_path / "namespace").write_text("team-a\n")
    assert trainjob.default_namespace(tmp_path / "namespace") == "team-a"
    monkeypatch.setattr(trainjob, "SERVICE_ACCOUNT_NAMESPACE", tmp_path / "namespace")
    assert TrainJobOptions().namespace == "team-a"
    assert trainjob.TRAINJOB_OPTIONS.defaults()["namespace"] == ""  # the compiled pipeline bakes in none


# ---------------------------------------------------------------------------------------------
# The watcher against recorded responses


class FakeApi:
    """Replays one recorded scenario as the API server would answer (trainjob.TrainJobApi)."""

    def __init__(self, scenario: str) -> None:
        self.recorded = json.loads((RECORDED / f"{scenario}.json").read_text())
        self.creates = list(self.recorded["create"])
        self.gets = list(self.recorded["get"])
        self.calls: list[tuple[str, str]] = []
        self.body: dict[str, Any] | None = None  # what the (earlier) launcher created

    def _status(self, answer: dict[str, Any], what: str) -> None:
        errors = {404: NotFound, 409: AlreadyExists, 503: ApiUnavailable}
        if answer["status"] in errors:
            raise errors[answer["status"]](f"{what}: HTTP {answer['status']}")

    def create_trainjob(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("create", body["metadata"]["name"]))
        self.body = copy.deepcopy(body)
        answer = self.creates.pop(0)
        self._status(answer, "create")
        return self._object({"metadata": {}, "status": {}})

    def get_trainjob(self, namespace: str, name: str) -> dict[str, Any]:
        self.calls.append(("get", name))
        answer = self.gets.pop(0) if len(self.gets) > 1 else self.gets[0]
        self._status(answer, "get")
        return self._object(answer["object"])

    def delete_trainjob(self, namespace: str, name: str) -> None:
        self.calls.append(("delete", name))

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        self.calls.append(("list_pods", label_selector))
        pods = self.recorded["pods"]["items"]
        key, _, value = label_selector.partition("=")
        return [p for p in pods if p["metadata"]["labels"].get(key) == value]

    def read_pod_log(self, namespace: str, pod: str, container: str, tail_lines: int) -> str:
        self.calls.append(("read_pod_log", f"{pod}/{container}"))
        lines = self.recorded["logs"][f"{pod}/{container}"].splitlines()
        return "\n".join(lines[-tail_lines:])

    def _object(self, server: dict[str, Any]) -> dict[str, Any]:
        assert self.body is not None
        job = copy.deepcopy(self.body)
        job["metadata"].update(server["metadata"])
        job["spec"].setdefault("suspend", False)  # CRD defaults
        job["spec"].setdefault("managedBy", "trainer.kubeflow.org/trainjob-controller")
        job["status"] = server["status"]
        return job

    def deletes(self) -> int:
        return sum(1 for call, _ in self.calls if call == "delete")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


def launch(scenario: str, **overrides: Any) -> tuple[FakeApi, list[str], Any]:
    """run_trainjob on a recorded scenario: (api, log lines, result or the TrainJobError)."""
    api = FakeApi(scenario)
    clock, lines = Clock(), []
    name, run_key = api.recorded["name"], api.recorded["run_key"]
    try:
        outcome: Any = run_trainjob(
            name,
            ARGV,
            options(**overrides),
            run_key=run_key,
            split=0,
            api=api,
            log=lines.append,
            clock=clock,
            sleep=clock.sleep,
        )
    except TrainJobError as exc:
        outcome = exc
    assert all(line.startswith(f"TrainJob dal/{name}: ") for line in lines), lines
    return api, [line.split(": ", 1)[1] for line in lines], outcome


@pytest.mark.parametrize(("keep", "deletes"), [("never", 1), ("on-failure", 1), ("always", 0)])
def test_created_running_complete(keep: str, deletes: int) -> None:
    api, log, result = launch("complete", keep=keep)
    assert result.state == "Complete" and result.start == "created", result
    assert result.message == "AllJobsCompleted: jobset completed successfully"
    assert result.deleted is bool(deletes) and api.deletes() == deletes
    assert log[0].startswith("created (TrainingRuntime dal-torch, 2 nodes x 1 processes")
    assert "no status yet" in log
    assert "jobs node: active=1 ready=0 succeeded=0 failed=0 suspended=0" in log
    assert any(line.startswith("status read failed") for line in log)  # the recorded 503
    # Transitions only: the repeated status is logged once.
    assert log.count("jobs node: active=1 ready=1 succeeded=0 failed=0 suspended=0") == 1
    assert (
        "Complete=True (AllJobsCompleted); jobs node: active=0 ready=0 succeeded=1 failed=0 suspended=0"
        in log
    )
    assert not [c for c, _ in api.calls if c in ("list_pods", "read_pod_log")]
    assert result.seconds == 5 * 30  # five waits between six status reads


@pytest.mark.parametrize(("keep", "deletes"), [("never", 1), ("on-failure", 0), ("always", 0)])
def test_a_failed_job_reports_its_pods_and_raises(keep: str, deletes: int) -> None:
    api, log, error = launch("failed_oom", keep=keep)
    name = api.recorded["name"]
    assert isinstance(error, TrainJobError) and error.result.state == "Failed"
    text = str(error)
    assert f"TrainJob dal/{name} failed (FailedJobs: jobset failed due to one or more job failures)" in text
    assert f"pod {name}-node-0-0-x7k2p container node: OOMKilled exit 137" in text
    assert f"pod {name}-node-0-1-q9w4m container node: Error exit 1" in text
    assert api.deletes() == deletes and error.result.deleted is bool(deletes)
    assert ("kept: kubectl -n dal describe trainjob" in text) is (deletes == 0)
    assert ("list_pods", f"jobset.sigs.k8s.io/jobset-name={name}") in api.calls
    # The last log lines of each failed pod, in order.
    assert "  | [rank0]: step 12000/100000 loss 2.901 assoc 0.421 lr 0.0100 3.0 it/s" in log
    assert (
        "  | torch.distributed.elastic.multiprocessing.errors.ChildFailedError: components.train FAILED"
        in log
    )
    assert log.index(f"pod {name}-node-0-0-x7k2p container node: OOMKilled exit 137") < log.index(
        "  | [rank0]: step 12000/100000 loss 2.901 assoc 0.421 lr 0.0100 3.0 it/s"
    )


def test_log_lines_are_bounded() -> None:
    _, log, _ = launch("failed_oom", log_lines=2)
    shown = [line for line in log if line.startswith("  | [rank0]")]
    assert len(shown) == 2 and shown[-1].startswith("  | [rank0]: step 12000")


def test_a_retried_task_adopts_the_running_trainjob() -> None:
    api, log, result = launch("adopt_existing")
    assert result.state == "Complete" and result.start == "adopted"
    assert [c for c, _ in api.calls].count("create") == 1 and api.deletes() == 1  # on-failure: done, deleted
    assert log[0].startswith("exists (created 2026-12-01T09:12:00Z, status: jobs node: active=1 ready=1")
    assert log[0].endswith("adopting it")


def test_a_trainjob_of_another_spec_is_not_adopted() -> None:
    api = FakeApi("adopt_existing")
    original = api._object

    def other_spec(server: dict[str, Any]) -> dict[str, Any]:
        job = original(server)
        job["metadata"]["annotations"][trainjob.SPEC_DIGEST_ANNOTATION] = "0000000000000000"
        return job

    api._object = other_spec  # type: ignore[method-assign]
    with pytest.raises(DalError, match="exists with another spec") as caught:
        run_trainjob(
            api.recorded["name"],
            ARGV,
            options(),
            run_key="r",
            split=0,
            api=api,
            log=lambda _: None,
            sleep=lambda _: None,
        )
    assert "kubectl -n dal delete trainjob" in str(caught.value) and api.deletes() == 0


def test_a_failed_trainjob_found_is_deleted_and_created_anew() -> None:
    api, log, result = launch("recreate_failed")
    assert result.state == "Complete" and result.start == "recreated"
    calls = [c for c, _ in api.calls]
    # create (409), get (Failed), delete, get (deleting), get (404), create, get..., delete (done).
    assert calls[:6] == ["create", "get", "delete", "get", "get", "create"], calls
    assert calls.count("delete") == 2
    assert log[0].startswith("exists and failed (FailedJobs: jobset failed due to one or more job failures)")
    assert log[1].startswith("recreated (")


@pytest.mark.parametrize(("keep", "deletes"), [("on-failure", 1), ("always", 0)])
def test_a_timeout_reports_unschedulable_pods_and_raises(keep: str, deletes: int) -> None:
    api, log, error = launch("timeout_unschedulable", keep=keep, timeout_s=120)
    assert isinstance(error, TrainJobError) and error.result.state == "Timeout"
    text = str(error)
    assert f"TrainJob dal/{api.recorded['name']} did not finish within 120s" in text
    assert "Pending (Unschedulable: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu." in text
    assert api.deletes() == deletes, "a timed-out TrainJob holds nodes: only keep=always leaves it"
    assert 120 <= error.result.seconds <= 150
    assert not [c for c, _ in api.calls if c == "read_pod_log"], "pods that never ran have no log"


def test_an_unreachable_api_server_gives_up() -> None:
    api = FakeApi("complete")
    api.gets = [{"status": 503}]
    clock = Clock()
    with pytest.raises(DalError, match="status reads failed in a row"):
        run_trainjob(
            api.recorded["name"],
            ARGV,
            options(),
            run_key="r",
            split=0,
            api=api,
            log=lambda _: None,
            clock=clock,
            sleep=clock.sleep,
        )


def test_api_errors_are_translated() -> None:
    from kubernetes.client.exceptions import ApiException

    conflict = ApiException(status=409, reason="Conflict")
    conflict.body = json.dumps({"reason": "AlreadyExists", "message": 'trainjobs "x" already exists'})
    assert isinstance(trainjob._api_error("create", conflict), AlreadyExists)
    assert isinstance(trainjob._api_error("get", ApiException(status=404, reason="Not Found")), NotFound)
    assert isinstance(trainjob._api_error("get", ApiException(status=503)), ApiUnavailable)
    assert isinstance(trainjob._api_error("get", ConnectionResetError("reset")), ApiUnavailable)
    with pytest.raises(TypeError):  # a bug is not an unavailable server
        trainjob._api_error("get", TypeError("bad call"))
    forbidden = trainjob._api_error("create", ApiException(status=403, reason="Forbidden"))
    assert "dal-pipeline-runner" in str(forbidden) and not isinstance(forbidden, ApiUnavailable)


def test_recorded_pods_are_the_jobset_pods_of_the_trainjob() -> None:
    """The fixtures follow JobSet's naming: <jobset>-<replicatedJob>-<job index>-<pod index>-<suffix>."""
    for path in sorted(RECORDED.glob("*.json")):
        recorded = json.loads(path.read_text())
        assert recorded["name"] == trainjob_name(recorded["run_key"], 0), path.name
        for pod in recorded["pods"]["items"]:
            labels = pod["metadata"]["labels"]
            index = labels["batch.kubernetes.io/job-completion-index"]
            assert pod["metadata"]["name"].startswith(f"{recorded['name']}-node-0-{index}-"), path.name
            assert labels["jobset.sigs.k8s.io/replicatedjob-name"] == trainjob.NODE
            assert len(pod["metadata"]["name"]) <= 63


def test_no_kubernetes_client_is_imported_until_needed() -> None:
    import subprocess
    import sys

    code = "import sys, components.train.trainjob; print('kubernetes' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "False"


def test_the_runtime_yaml_is_what_the_options_name() -> None:
    (runtime,) = load_docs(K8S / "base" / "trainingruntime.yaml")
    defaults = options()
    assert (runtime["kind"], runtime["metadata"]["name"]) == (defaults.runtime_kind, defaults.runtime)
    assert yaml.safe_dump(runtime).count("elasticPolicy") == 0

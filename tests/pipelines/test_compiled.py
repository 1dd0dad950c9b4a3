"""Layer 3: the compiled pipeline is checked in, and changes to it are deliberate."""

from __future__ import annotations

import difflib

import yaml

from components.evaluate.config import EVALUATE_OPTIONS
from components.extract.config import EXTRACT_OPTIONS
from components.train.config import TRAIN_OPTIONS
from components.train.trainjob import TRAINJOB_OPTIONS
from pipelines.cli import COMPILED, compile_pipeline


def _compiled(tmp_path) -> str:
    return compile_pipeline(tmp_path / "dal_pipeline.yaml").read_text()


def test_compiled_pipeline_matches_golden(tmp_path) -> None:
    fresh, golden = _compiled(tmp_path), COMPILED.read_text()
    if fresh != golden:
        diff = "".join(
            difflib.unified_diff(golden.splitlines(True), fresh.splitlines(True), "golden", "fresh", n=2)
        )
        raise AssertionError(
            f"{COMPILED} is out of date; run `make compile` and review the change:\n{diff[:4000]}"
        )


def test_compiled_pipeline_wiring(tmp_path) -> None:
    documents = list(yaml.safe_load_all(_compiled(tmp_path)))
    spec, platform = documents[0], documents[1]
    components = spec["components"]
    dag = spec["root"]["dag"]["tasks"]
    exit_dag = components["comp-exit-handler-1"]["dag"]["tasks"]
    assert dag["finish-run"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert {"ingest", "prepare-source", "plan-splits", "for-loop-2", "aggregate", "report"} <= set(exit_dag)
    assert (
        exit_dag["for-loop-2"]["parameterIterator"]["items"]["inputParameter"]
        == "pipelinechannel--plan-splits-Output"
    )
    loop = components["comp-for-loop-2"]["dag"]["tasks"]
    assert set(loop) == {
        "condition-branches-3",
        "publish-models",
        "extract",
        "evaluate",
        "extract-2",
        "evaluate-2",
    }

    # Training: one pod, or a TrainJob launcher when nodes > 1; both joined by dsl.OneOf.
    branches = components["comp-condition-branches-3"]["dag"]["tasks"]
    multi, single = branches["condition-4"], branches["condition-5"]
    assert multi["triggerPolicy"]["condition"] == "int(inputs.parameter_values['pipelinechannel--nodes']) > 1"
    assert (
        single["triggerPolicy"]["condition"]
        == "!(int(inputs.parameter_values['pipelinechannel--nodes']) > 1)"
    )
    assert set(components["comp-condition-4"]["dag"]["tasks"]) == {"train-multinode"}
    assert set(components["comp-condition-5"]["dag"]["tasks"]) == {"train"}
    trained = loop["publish-models"]["inputs"]["parameters"]["trained"]["taskOutputParameter"]
    assert trained["producerTask"] == "condition-branches-3"
    # Retries with backoff on every step that may be preempted; the train tasks resume.
    retried = {
        "train": components["comp-condition-5"]["dag"]["tasks"]["train"],
        **{name: loop[name] for name in ("extract", "evaluate", "extract-2", "evaluate-2")},
    }
    for name, task in retried.items():
        assert (
            task["retryPolicy"]["maxRetryCount"] == 3 and task["retryPolicy"]["backoffDuration"] == "30s"
        ), name
    # The TrainJob restarts its nodes itself (the runtime's failurePolicy): no relaunch by KFP.
    assert "retryPolicy" not in components["comp-condition-4"]["dag"]["tasks"]["train-multinode"]
    # The launcher creates the TrainJob from the image parameter; it holds no GPU itself.
    launcher = spec["deploymentSpec"]["executors"]["exec-train-multinode"]["container"]
    assert "train_on_trainjob" in " ".join(launcher["command"])
    assert "accelerator" not in launcher.get("resources", {})

    # The initial weights (the models step's second model) go through extract / evaluate too.
    initial = loop["extract-2"]["inputs"]
    assert initial["artifacts"]["model"]["taskOutputArtifact"] == {
        "outputArtifactKey": "initial_model",
        "producerTask": "publish-models",
    }
    assert initial["parameters"]["variant"]["runtimeValue"]["constant"] == "initial"
    assert {"aggregate", "aggregate-2"} <= set(exit_dag)
    # One registration per run, outside the loop, on the collected splits; then promotion.
    assert "register-candidate" in exit_dag and "promote-champion" in exit_dag
    register = exit_dag["register-candidate"]["inputs"]["parameters"]
    assert register["trained"]["taskOutputParameter"]["producerTask"] == "for-loop-2"
    assert register["metrics"]["taskOutputParameter"]["producerTask"] == "aggregate"
    promote = exit_dag["promote-champion"]["inputs"]["parameters"]["version"]["taskOutputParameter"]
    assert promote["producerTask"] == "register-candidate"
    # What the KFP UI renders: an HTML page per split and a Markdown + HTML summary.
    assert (
        components["comp-evaluate"]["outputDefinitions"]["artifacts"]["report"]["artifactType"]["schemaTitle"]
        == "system.HTML"
    )
    report = components["comp-report"]["outputDefinitions"]["artifacts"]
    assert {k: v["artifactType"]["schemaTitle"] for k, v in report.items()} == {
        "table": "system.Markdown",
        "curves": "system.HTML",
    }

    # Every step option is a parameter, its default generated from the step's dataclass.
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    for step in (TRAIN_OPTIONS, EXTRACT_OPTIONS, EVALUATE_OPTIONS, TRAINJOB_OPTIONS):
        assert parameters[step.parameter]["parameterType"] == "STRUCT"
        assert parameters[step.parameter]["defaultValue"] == step.defaults(), step.parameter
    assert parameters["nodes"]["defaultValue"] == 1

    # Caching: on for the source and ingest steps only.
    assert exit_dag["ingest"]["cachingOptions"]["enableCache"] is True
    assert exit_dag["prepare-source"]["cachingOptions"]["enableCache"] is True
    assert not retried["train"]["cachingOptions"].get("enableCache", False)
    # The train step asks for `gpus` GPUs, and every container runs the image parameter.
    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert (
        train["resources"]["accelerator"]["resourceCount"]
        == "{{$.inputs.parameters['pipelinechannel--gpus']}}"
    )
    for name, executor in spec["deploymentSpec"]["executors"].items():
        assert "pipelinechannel--image" in executor["container"]["image"], name
        assert "pip install" not in " ".join(executor["container"]["command"]), name
    # Credentials only from Kubernetes Secrets: never pipeline parameters.
    assert not [
        p for p in parameters if any(word in p.lower() for word in ("secret", "password", "key_id", "token"))
    ]
    secret_like = ("secret", "password", "key_id", "token")
    for step in (TRAIN_OPTIONS, EXTRACT_OPTIONS, EVALUATE_OPTIONS):
        assert not [n for n in step.names if any(w in n for w in secret_like)], step.parameter
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, config in executors.items():
        keys = {
            (s["secretName"], k["envVar"]): s.get("optional", False)
            for s in config["secretAsEnv"]
            for k in s["keyToEnv"]
        }
        assert keys[("dal-s3", "AWS_ACCESS_KEY_ID")] is False, name
        assert keys[("dal-s3", "AWS_SECRET_ACCESS_KEY")] is False, name
        assert keys[("dal-s3", "AWS_ENDPOINT_URL")] is True, name  # AWS S3 itself needs none
        assert keys[("dal-mlflow-auth", "MLFLOW_TRACKING_PASSWORD")] is True, name
        assert config["securityContext"]["runAsNonRoot"] is True, name
    assert executors["exec-train"]["emptyDirMounts"][0]["mountPath"] == "/dev/shm"

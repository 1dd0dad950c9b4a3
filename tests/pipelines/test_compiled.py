"""Layer 3: the compiled pipeline is checked in, and changes to it are deliberate."""

from __future__ import annotations

import difflib

import yaml

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
    dag = spec["root"]["dag"]["tasks"]
    exit_dag = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    assert dag["finish-run"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert {"ingest", "prepare-source", "plan-splits", "for-loop-2", "aggregate"} <= set(exit_dag)
    assert (
        exit_dag["for-loop-2"]["parameterIterator"]["items"]["inputParameter"]
        == "pipelinechannel--plan-splits-Output"
    )
    loop = spec["components"]["comp-for-loop-2"]["dag"]["tasks"]
    assert set(loop) == {"train", "extract", "evaluate", "register-model", "extract-2", "evaluate-2"}
    # The initial weights (the train step's second model) go through extract / evaluate too.
    initial = loop["extract-2"]["inputs"]
    assert initial["artifacts"]["model"]["taskOutputArtifact"] == {
        "outputArtifactKey": "initial_model",
        "producerTask": "train",
    }
    assert initial["parameters"]["variant"]["runtimeValue"]["constant"] == "initial"
    assert {"aggregate", "aggregate-2"} <= set(exit_dag)
    # Caching: on for the source and ingest steps only.
    assert exit_dag["ingest"]["cachingOptions"]["enableCache"] is True
    assert exit_dag["prepare-source"]["cachingOptions"]["enableCache"] is True
    assert not loop["train"]["cachingOptions"].get("enableCache", False)
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
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert not [
        p for p in parameters if any(word in p.lower() for word in ("secret", "password", "key_id", "token"))
    ]
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, config in executors.items():
        secrets = {s["secretName"]: s for s in config["secretAsEnv"]}
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= {
            k["envVar"] for k in secrets["dal-s3"]["keyToEnv"]
        }, name
        assert secrets["dal-mlflow-auth"]["optional"] is True, name
        assert config["securityContext"]["runAsNonRoot"] is True, name
    assert executors["exec-train"]["emptyDirMounts"][0]["mountPath"] == "/dev/shm"

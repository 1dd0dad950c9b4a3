"""scripts/docker_run.sh (the `make docker-run*` targets), checked in its DRY_RUN mode: the docker
commands it would run are parsed and inspected; no Docker engine is needed."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from tests.static.helpers import REPO, run

SCRIPT = REPO / "scripts" / "docker_run.sh"
IMAGE = "registry.example.org/dal-reid:0.1.0-cpu"
STEPS = ["synth", "ingest", "train", "extract", "evaluate"]


def dry_run(tmp_path: Path, *argv: str, **env: str) -> list[tuple[list[str], list[str]]]:
    """(docker options, container command) of every docker run the script would start."""
    result = run(
        ["bash", SCRIPT, *argv],
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "DRY_RUN": "1", "DAL_IMAGE": IMAGE, **env},
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    commands = []
    for line in result.stdout.splitlines():
        words = shlex.split(line)
        assert words[:2] == ["docker", "run"], line
        at = words.index(IMAGE)
        commands.append((words[2:at], words[at + 1 :]))
    return commands


def option(options: list[str], name: str) -> list[str]:
    return [options[i + 1] for i, word in enumerate(options) if word == name]


def flag(command: list[str], name: str) -> str:
    (value,) = option(command, name)
    return value


def test_script_is_valid_bash_and_executable() -> None:
    assert os.access(SCRIPT, os.X_OK)
    result = run(["bash", "-n", SCRIPT])
    assert result.returncode == 0, result.stderr


def test_shellcheck() -> None:
    shellcheck = REPO / ".venv-lint" / "bin" / "shellcheck"
    assert shellcheck.exists(), f"{shellcheck} is missing: run `make setup`"
    result = run([shellcheck, SCRIPT, REPO / "docker" / "entrypoint.sh"])
    assert result.returncode == 0, result.stdout


def test_whole_pipeline_runs_the_steps_in_order_each_reading_what_the_previous_wrote(tmp_path: Path) -> None:
    commands = [command for _, command in dry_run(tmp_path, "all")]
    assert [c[0] for c in commands] == STEPS
    synth, ingest, train, extract, evaluate = commands
    assert flag(synth, "--output") == flag(ingest, "--source")
    assert flag(ingest, "--output") == flag(train, "--dataset") == flag(extract, "--dataset")
    assert flag(extract, "--dataset") == flag(evaluate, "--dataset")
    assert flag(extract, "--model") == flag(train, "--output") + "/model.pt"
    assert flag(extract, "--output") == flag(evaluate, "--features")
    for command in commands:  # everything lands in the mounted work dir
        for name in ("--output", "--dataset", "--source", "--model", "--features"):
            for value in option(command, name):
                assert value.startswith("/work/") or name == "--dataset" and value == "mars", (name, value)


def test_hardened_like_the_cluster(tmp_path: Path) -> None:
    work = tmp_path / "data"
    for options, _ in dry_run(tmp_path, "all", WORK=str(work)):
        assert {"--rm", "--init", "--read-only"} <= set(options)
        assert option(options, "--cap-drop") == ["ALL"]
        assert option(options, "--security-opt") == ["no-new-privileges"]
        assert option(options, "--volume") == [f"{work}:/work"]
        assert option(options, "--user") == [f"{os.getuid()}:{os.getgid()}"]
        assert sorted(t.split(":")[0] for t in option(options, "--tmpfs")) == ["/home/dal", "/tmp"]
        assert option(options, "--shm-size"), "DataLoader workers need shared memory"


def test_relative_work_dir_becomes_absolute(tmp_path: Path) -> None:
    ((options, _),) = dry_run(tmp_path, "synth", WORK="rel/work")
    assert option(options, "--volume") == [f"{tmp_path}/rel/work:/work"]


def test_settings_pass_by_name_only(tmp_path: Path) -> None:
    secrets = {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEVALUE",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t-value-never-on-a-command-line",
        "AWS_ENDPOINT_URL": "http://host.docker.internal:9000",
        "MLFLOW_TRACKING_URI": "http://host.docker.internal:5000",
        "MLFLOW_TRACKING_PASSWORD": "mlflow-password-value",
    }
    host_files = {
        "AWS_CA_BUNDLE": "/host/ca.pem",
        "AWS_PROFILE": "host-profile-name",
        "AWS_SHARED_CREDENTIALS_FILE": "/host/credentials",
    }
    unrelated = {"GITHUB_TOKEN": "unrelated-token-value"}
    result = run(
        ["bash", SCRIPT, "all"],
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "DRY_RUN": "1",
            **secrets,
            **host_files,
            **unrelated,
        },
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    for value in [*secrets.values(), *host_files.values(), *unrelated.values()]:
        assert value not in result.stdout + result.stderr
    for line in result.stdout.splitlines():
        passed = option(shlex.split(line), "--env")
        assert passed == sorted(secrets), passed


def test_step_arguments_parse_with_the_cli(tmp_path: Path) -> None:
    from components import cli

    commands = [command for _, command in dry_run(tmp_path, "all")]
    assert [c[0] for c in commands] == STEPS
    for command in commands:
        try:
            cli.build_parser().parse_args(command)
        except SystemExit as exc:
            pytest.fail(
                f"dal {command[0]} rejects the defaults of docker_run.sh: {command} (exit {exc.code})"
            )


def test_train_with_several_processes_and_gpus(tmp_path: Path) -> None:
    ((options, command),) = dry_run(tmp_path, "train", NPROC="2", GPUS="all")
    assert option(options, "--gpus") == ["all"]
    at = command.index("components.train")
    assert command[: at + 1] == [
        "python",
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "components.train",
    ]
    assert command[at + 1 :][:2] == ["--dataset", "/work/datasets/mars"]


def test_store_on_s3(tmp_path: Path) -> None:
    commands = dict((c[0], c) for _, c in dry_run(tmp_path, "all", DAL_STORE="s3://bucket/prefix/"))
    assert flag(commands["synth"], "--output") == "/work/raw/mars"  # raw layouts are local files
    assert flag(commands["ingest"], "--output") == "s3://bucket/prefix/datasets/mars"
    assert flag(commands["evaluate"], "--features") == "s3://bucket/prefix/features/mars.parquet"


def test_given_arguments_follow_the_defaults_and_win(tmp_path: Path) -> None:
    ((_, command),) = dry_run(tmp_path, "synth", "--layout", "prid2011", "--output", "/work/raw/prid")
    assert command[-4:] == ["--layout", "prid2011", "--output", "/work/raw/prid"]
    assert command[:5] == ["synth", "--layout", "mars", "--output", "/work/raw/mars"]
    from components import cli

    parsed = cli.build_parser().parse_args(command)  # argparse: the last occurrence wins
    assert (parsed.layout, parsed.output) == ("prid2011", "/work/raw/prid")


@pytest.mark.parametrize("argv", [["bogus"], [], ["all", "--steps", "3"]])
def test_bad_usage_fails(argv: list[str], tmp_path: Path) -> None:
    result = run(["bash", SCRIPT, *argv], env={"PATH": os.environ["PATH"], "DRY_RUN": "1"}, cwd=tmp_path)
    assert result.returncode == 2
    assert "scripts/docker_run.sh STEP" in result.stderr
    assert not result.stdout

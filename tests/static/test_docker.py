"""Static checks of docker/ (no Docker engine here): hadolint and checkov with nothing unexplained,
the build context, the versions against requirements/constraints.txt and pyproject.toml, the image
layout (non-root, entrypoint) and the entrypoint script's behaviour."""

from __future__ import annotations

import json
import os
import re
import shutil
import tomllib
from pathlib import Path

import pytest

from tests.static.helpers import (
    DOCKERFILE,
    DOCKERIGNORE,
    REPO,
    arg_default,
    dockerfile_instructions,
    dockerfile_stages,
    run,
    tool,
)

TEXT = DOCKERFILE.read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
CONSTRAINTS = {
    name.lower(): version
    for name, _, version in (
        line.partition("==") for line in (REPO / "requirements/constraints.txt").read_text().splitlines()
    )
    if version and not name.startswith("#")
}
# hadolint rules ignored in docker/Dockerfile (`# hadolint ignore=...`), each with its reason.
# Empty: the Dockerfile has no findings.
HADOLINT_ALLOWED: dict[str, str] = {}
# checkov checks skipped in docker/Dockerfile (`# checkov:skip=...`), each with its reason.
CHECKOV_SKIPS = {
    "CKV_DOCKER_7": "every FROM is ${PYTHON_IMAGE}, pinned by tag and digest; checkov ignores ARGs"
}
FINAL_STAGES = ("dal", "mlflow")


def hadolint(path: Path) -> list[dict]:
    result = run([tool("hadolint"), "-f", "json", "--no-color", path], timeout=120)
    assert result.stdout.strip().startswith("["), result.stdout + result.stderr
    return json.loads(result.stdout)


def test_missing_linter_says_run_make_setup() -> None:
    with pytest.raises(pytest.fail.Exception, match="make setup"):
        tool("no-such-linter")


def test_hadolint_finds_nothing_unexplained() -> None:
    findings = hadolint(DOCKERFILE)
    unexplained = [
        f"line {f['line']}: {f['code']} {f['message']}" for f in findings if f["code"] not in HADOLINT_ALLOWED
    ]
    assert not unexplained, "\n".join(unexplained)
    ignored = set(re.findall(r"hadolint ignore=([\w,]+)", TEXT))
    ignored = {code for group in ignored for code in group.split(",")}
    assert ignored <= set(HADOLINT_ALLOWED), f"explain {ignored - set(HADOLINT_ALLOWED)} in HADOLINT_ALLOWED"


def test_hadolint_control(tmp_path: Path) -> None:
    """Control: hadolint as called here does report problems."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    codes = {f["code"] for f in hadolint(bad)}
    assert {"DL3007", "DL3013"} <= codes, codes


def test_checkov_finds_nothing_unexplained(tmp_path: Path) -> None:
    control = tmp_path / "control" / "Dockerfile"
    control.parent.mkdir()
    control.write_text("FROM python:latest\nRUN pip install requests\n")
    result = run(
        [tool("checkov"), "-f", DOCKERFILE, "-f", control, "--framework", "dockerfile", "--skip-download"]
        + ["-o", "json"],
        timeout=600,
    )
    assert result.stdout.strip(), result.stderr
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [c for r in reports for c in r["results"].get("failed_checks", [])]
    skipped = [c for r in reports for c in r["results"].get("skipped_checks", [])]
    ours = [c for c in failed if not c["file_abs_path"].startswith(str(tmp_path))]
    assert not ours, "\n".join(f"{c['check_id']} {c['check_name']} {c['file_line_range']}" for c in ours)
    assert any(c["file_abs_path"] == str(control) for c in failed), "control: checkov reported nothing"
    for check in skipped:
        assert check["check_id"] in CHECKOV_SKIPS, f"undocumented skip {check['check_id']}"
        assert (check["check_result"].get("suppress_comment") or "").strip(), (
            f"{check['check_id']}: no reason"
        )


def test_versions_agree_with_constraints_and_pyproject() -> None:
    assert arg_default(TEXT, "TORCH_VERSION") == CONSTRAINTS["torch"]
    assert arg_default(TEXT, "TORCHVISION_VERSION") == CONSTRAINTS["torchvision"]
    versions = set(re.findall(r"^ARG DAL_VERSION=(\S+)", TEXT, flags=re.MULTILINE))
    assert versions == {PYPROJECT["project"]["version"]}, versions
    for name in ("mlflow", "boto3"):  # the MLflow server runs the clients' versions
        assert name in CONSTRAINTS


def test_base_image_is_pinned_by_tag_and_digest_and_matches_requires_python() -> None:
    image = arg_default(TEXT, "PYTHON_IMAGE")
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-(\w+)@sha256:[0-9a-f]{64}", image)
    assert match, f"PYTHON_IMAGE {image}: want python:X.Y.Z-slim-<debian>@sha256:<digest>"
    requires = PYPROJECT["project"]["requires-python"]  # ">=3.11,<3.12"
    assert f">={match.group(1)}.{match.group(2)}" in requires, (image, requires)
    for stage, instructions in dockerfile_stages(TEXT).items():
        for keyword, arguments in instructions:
            if keyword == "FROM":
                assert arguments.split()[0] == "${PYTHON_IMAGE}", f"stage {stage}: FROM {arguments}"


def test_image_layout() -> None:
    stages = dockerfile_stages(TEXT)
    assert list(stages)[-1] == "dal", "the step image must be the default (last) target"
    for name in FINAL_STAGES:
        instructions = stages[name]
        keywords = [k for k, _ in instructions]
        users = [a for k, a in instructions if k == "USER"]
        assert users == ["10001:10001"], f"{name}: run as the fixed non-root UID/GID"
        assert "HEALTHCHECK" in keywords, f"{name}: HEALTHCHECK (or HEALTHCHECK NONE, explained)"
        runs = " ".join(a for k, a in instructions if k == "RUN")
        assert "pip install" not in runs and "apt-get" not in runs, f"{name}: installs belong in a builder"
        assert any(k == "COPY" and a.startswith("--from=") for k, a in instructions), f"{name}: copies a venv"
    dal = dict(stages["dal"])
    assert json.loads(dal["ENTRYPOINT"]) == ["dal-entrypoint"]
    copies = [a for k, a in stages["dal"] if k == "COPY"]
    assert any(a.endswith("docker/entrypoint.sh /usr/local/bin/dal-entrypoint") for a in copies), copies
    assert json.loads(dict(stages["mlflow"])["ENTRYPOINT"]) == ["mlflow"]
    builder = " ".join(a for k, a in stages["builder"] if k == "RUN")
    assert re.search(r"\bcpu\)", builder) and re.search(r"\bcuda\)", builder), "both VARIANTs"
    assert "+cpu" in builder and "${TORCH_CPU_INDEX}" in builder
    for name in ("builder", "mlflow-builder"):
        runs = " ".join(a for k, a in stages[name] if k == "RUN")
        assert "-c requirements/constraints.txt" in runs and "pip check" in runs, name


def test_writable_locations_are_under_home() -> None:
    env = " ".join(a for k, a in dockerfile_stages(TEXT)["dal"] if k == "ENV")
    for variable in ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "MPLCONFIGDIR", "TORCH_HOME"):
        match = re.search(rf"\b{variable}=(\S+)", env)
        assert match and match.group(1).startswith("/home/dal"), variable


def test_invoked_programs_exist() -> None:
    """What the images run: the `dal` console script, the modules of the smoke test, mlflow."""
    assert PYPROJECT["project"]["scripts"]["dal"] == "components.cli:main"
    from components import cli

    assert callable(cli.main)
    smoke = next(a for k, a in dockerfile_instructions(TEXT) if k == "RUN" and "import torch" in a)
    modules = re.search(r"import ([\w., ]+);", smoke).group(1)
    import importlib.util

    for module in (m.strip() for m in modules.split(",")):
        assert importlib.util.find_spec(module) is not None, module
    packages = (REPO / "docker/mlflow-server.txt").read_text().split()
    assert "mlflow" in packages and "boto3" in packages
    assert any(p.startswith("psycopg2-binary==") for p in packages), "pin the PostgreSQL driver"


# ---------------------------------------------------------------------------------------------
# Build context


def _regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def excluded(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore semantics: the last pattern matching the path or a parent wins."""
    parts = path.split("/")
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch("/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            result = not negate
    return result


def test_build_context() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = []
    for keyword, arguments in dockerfile_instructions(TEXT):
        if keyword == "COPY" and "--from=" not in arguments:
            words = [w for w in arguments.split() if not w.startswith("--")]
            sources.extend(words[:-1])
    assert sources, "no COPY found"
    for source in sources:
        root = REPO / source
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        files = [f for f in files if "__pycache__" not in f.parts]
        assert files, source
        for file in files:
            relative = file.relative_to(REPO).as_posix()
            assert not excluded(relative, patterns), (
                f"{relative} is COPYed but excluded from the build context"
            )
    for relative in (
        ".venv/bin/python",
        ".venv-lint/bin/hadolint",
        ".git/HEAD",
        "work/datasets/mars/manifest.json",
        "tests/conftest.py",
        "mlruns/0/meta.yaml",
        "k8s/base/mlflow.yaml",
        "components/common/__pycache__/storage.cpython-311.pyc",
        "requirements/lint.txt",
        ".pytest_cache/v/cache/nodeids",
    ):
        assert excluded(relative, patterns), f"{relative} would be sent to the Docker daemon"


def test_dockerignore_matcher_control() -> None:
    assert excluded("a/b.py", ["*"]) and not excluded("a/b.py", ["*", "!a"])
    assert excluded("a/__pycache__/x.pyc", ["*", "!a", "**/__pycache__"])
    assert not excluded("a/b.py", ["b.py"])


# ---------------------------------------------------------------------------------------------
# Entrypoint


@pytest.fixture
def fake_dal(tmp_path: Path) -> dict[str, str]:
    """PATH with a `dal` that prints its arguments (the real one would need the image)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    dal = bin_dir / "dal"
    dal.write_text('#!/bin/sh\necho "dal $*"\n')
    dal.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin"}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "--dataset", "s3://b/d"], "dal train --dataset s3://b/d"),
        ([], "dal"),
        (["--help"], "dal --help"),
        (["sh", "-c", "echo from sh"], "from sh"),
        (["dal", "evaluate"], "dal evaluate"),
    ],
)
def test_entrypoint(argv: list[str], expected: str, fake_dal: dict[str, str]) -> None:
    sh = shutil.which("sh")
    assert sh
    entrypoint = REPO / "docker/entrypoint.sh"
    assert os.access(entrypoint, os.X_OK), "docker/entrypoint.sh must be executable"
    result = run([sh, entrypoint, *argv], env=fake_dal, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_subcommands_are_not_programs_on_path() -> None:
    """The entrypoint runs a first argument found on PATH as a program, so no dal subcommand may be
    one (a `dal test` would run /usr/bin/test). This Debian machine stands in for the Debian base."""
    from components import cli

    for name in [*cli.STEPS, *cli.COMMANDS]:
        for directory in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"):
            assert not (Path(directory) / name).exists(), f"{directory}/{name} would shadow `dal {name}`"

"""Static checks of the Kubernetes manifests in k8s/ (no cluster here).

* every manifest file passes ``kubernetes-validate --strict`` (one file at a time);
* the PyTorchJob, which kubernetes-validate passes unseen as an unknown kind, against a JSON schema
  of the PyTorchJob v1 API (tests/static/schemas) and its pod templates as PodTemplates;
* the overlays' patches apply, and what they produce passes the same checks;
* checkov finds nothing beyond the skips listed (with their reasons) in SKIPS;
* no literal secret anywhere; every container pinned, sized and locked down;
* the commands the manifests run exist (``-m components.train``, ``mlflow server`` flags).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.static.helpers import (
    K8S,
    REPO,
    containers,
    kubernetes_validate,
    kustomization_dirs,
    load_docs,
    manifest_files,
    pod_templates,
    rendered,
    run,
    split_image,
    tool,
)

PYTORCHJOB_SCHEMA = json.loads((Path(__file__).parent / "schemas" / "pytorchjob-v1.schema.json").read_text())
OVERLAYS = sorted(p for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists())
# The Secrets the manifests may reference; their keys are documented in each overlay's
# secrets/*.env.example (values never in the repository).
SECRETS = {"dal-s3": "s3.env.example", "dal-postgres": "postgres.env.example", "dal-mlflow-auth": None}
# checkov findings skipped in the manifests (checkov.io/skipN annotations) and why; a skip of any
# other check, or one without a reason, fails test_checkov.
SKIPS = {
    "CKV_K8S_43": "images are pinned by version tag, digests are per registry (overlay images transformer)",
    "CKV_K8S_35": "AWS SDK, pyarrow, libpq, MinIO, postgres read credentials from env vars (from Secrets)",
    "CKV_K8S_15": "IfNotPresent with immutable version tags; also serves images loaded into kind/minikube",
    "CKV_K8S_40": "postgres only: the image's postgres user is UID 999",
    "CKV_K8S_8": "training pods only (batch): nothing to probe, the operator follows exit codes",
    "CKV_K8S_9": "training pods only (batch): nothing to probe, the operator follows exit codes",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)


def all_docs() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in manifest_files():
        for doc in load_docs(path):
            yield path, doc


def rendered_variants() -> list[tuple[str, list[dict[str, Any]]]]:
    """Every kustomization that renders (base, component, each overlay); test_overlays_render
    reports those that do not, so that collection never breaks on them."""
    variants = []
    for directory in kustomization_dirs():
        try:
            variants.append((str(directory.relative_to(REPO)), rendered(directory)))
        except Exception:  # reported by test_overlays_render
            continue
    return variants


def pytorchjobs() -> list[Any]:
    """The PyTorchJob as every kustomization renders it, as pytest params."""
    return [
        pytest.param(f"{name}:{doc['metadata']['name']}", doc, id=f"{name}:{doc['metadata']['name']}")
        for name, docs in rendered_variants()
        for doc in docs
        if doc["kind"] == "PyTorchJob"
    ]


# ---------------------------------------------------------------------------------------------
# kubernetes-validate


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_passes_kubernetes_validate(path: Path) -> None:
    result = kubernetes_validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    # Unknown kinds are only warned about ("Couldn't find schema"); the PyTorchJob is checked
    # against its own schema below, anything else would go unchecked.
    for line in (result.stdout + result.stderr).splitlines():
        if "Couldn't find schema" in line:
            assert "PyTorchJob" in line, f"{path}: a kind nothing validates: {line}"


def test_kubernetes_validate_rejects_unknown_fields(tmp_path: Path) -> None:
    """Control: --strict is in effect, so a misspelt field fails (the tool can fail)."""
    (_, doc) = next((p, d) for p, d in all_docs() if d["kind"] == "Deployment")
    broken = copy.deepcopy(doc)
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = kubernetes_validate(path)
    assert result.returncode != 0, result.stdout + result.stderr


@pytest.mark.parametrize(("name", "job"), pytorchjobs())
def test_pytorchjob_pod_templates_pass_kubernetes_validate(
    name: str, job: dict[str, Any], tmp_path: Path
) -> None:
    for label, template in pod_templates(job):
        wrapped = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {
                "name": label.split("/")[-1].lower(),
                "namespace": job["metadata"].get("namespace", "dal"),
            },
            "template": template,
        }
        path = tmp_path / f"{label.replace('/', '-')}.yaml"
        path.write_text(yaml.safe_dump(wrapped))
        result = kubernetes_validate(path)
        assert result.returncode == 0, f"{name} {label}:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_overlay_output_passes_kubernetes_validate(overlay: Path, tmp_path: Path) -> None:
    """The resources the overlay changes (patches, images) are still valid; the PyTorchJob has its
    own checks above."""
    files = {(d["kind"], d["metadata"]["name"]): d for _, d in all_docs()}
    changed = [
        d
        for d in rendered(overlay)
        if d["kind"] != "PyTorchJob" and d != files.get((d["kind"], d["metadata"]["name"]))
    ]
    assert changed, f"{overlay.name} changes nothing?"
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump_all(changed))
    result = kubernetes_validate(path)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# PyTorchJob


@pytest.mark.parametrize(("name", "job"), pytorchjobs())
def test_pytorchjob_matches_the_v1_api(name: str, job: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(PYTORCHJOB_SCHEMA)
    errors = sorted(jsonschema.Draft202012Validator(PYTORCHJOB_SCHEMA).iter_errors(job), key=str)
    assert not errors, "\n".join(f"{name} {list(e.absolute_path)}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    "mutation",
    [
        "unknown spec field",
        "two masters",
        "no pytorch container",
        "elastic without Worker",
        "bad restartPolicy",
    ],
)
def test_pytorchjob_schema_rejects_invalid_jobs(mutation: str) -> None:
    """Control: the schema is strict enough to catch what the operator would reject."""
    job = copy.deepcopy(next(doc for _, doc in all_docs() if doc["kind"] == "PyTorchJob"))
    worker = job["spec"]["pytorchReplicaSpecs"]["Worker"]
    if mutation == "unknown spec field":
        job["spec"]["elasticPolicy"]["rdzvBackends"] = "c10d"
    elif mutation == "two masters":
        job["spec"]["pytorchReplicaSpecs"]["Master"] = {**copy.deepcopy(worker), "replicas": 2}
    elif mutation == "no pytorch container":
        worker["template"]["spec"]["containers"][0]["name"] = "trainer"
    elif mutation == "elastic without Worker":
        job["spec"]["pytorchReplicaSpecs"] = {
            "Master": {**job["spec"]["pytorchReplicaSpecs"].pop("Worker"), "replicas": 1}
        }
    elif mutation == "bad restartPolicy":
        worker["restartPolicy"] = "Sometimes"
    assert not jsonschema.Draft202012Validator(PYTORCHJOB_SCHEMA).is_valid(job)


def _torchrun(container: dict[str, Any]) -> tuple[list[str], str, list[str]]:
    """(torch.distributed.run options, module run with -m, module args) of a training container."""
    command = [*container.get("command", []), *container.get("args", [])]
    assert command[:3] == ["python", "-m", "torch.distributed.run"], command
    rest = command[3:]
    module_at = rest.index("-m")
    return rest[:module_at], rest[module_at + 1], rest[module_at + 2 :]


@pytest.mark.parametrize(("name", "job"), pytorchjobs())
def test_pytorchjob_is_consistent(name: str, job: dict[str, Any]) -> None:
    spec = job["spec"]
    elastic = spec["elasticPolicy"]
    for replica, replica_spec in spec["pytorchReplicaSpecs"].items():
        pod = replica_spec["template"]["spec"]
        (trainer,) = [c for c in pod["containers"] if c["name"] == "pytorch"]
        options, _, _ = _torchrun(trainer)
        nproc = [o.split("=", 1)[1] for o in options if o.startswith("--nproc-per-node=")]
        assert nproc == [spec["nprocPerNode"]], f"{name} {replica}: --nproc-per-node {nproc} vs nprocPerNode"
        gpus = trainer["resources"].get("limits", {}).get("nvidia.com/gpu")
        image_variant = split_image(trainer["image"])[1].rsplit("-", 1)[-1]
        if gpus is None:
            assert image_variant == "cpu", f"{name} {replica}: no GPU but image {trainer['image']}"
        else:
            assert image_variant == "cuda", f"{name} {replica}: GPUs but image {trainer['image']}"
            assert str(gpus) == spec["nprocPerNode"], f"{name} {replica}: one GPU per process"
        ports = {p["name"]: p["containerPort"] for p in trainer.get("ports", [])}
        assert ports.get("pytorchjob-port") == elastic["rdzvPort"], f"{name} {replica}: rendezvous port"
        assert any(v.get("mountPath") == "/dev/shm" for v in trainer["volumeMounts"]), (
            "shared memory for DataLoader"
        )
        shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
        assert shm["emptyDir"]["medium"] == "Memory"
    workers = spec["pytorchReplicaSpecs"]["Worker"]["replicas"]
    assert elastic["minReplicas"] <= workers <= elastic["maxReplicas"], name
    assert elastic["rdzvBackend"] == "c10d"


def test_training_command_runs_an_existing_module() -> None:
    """`-m components.train` needs components/train/__main__.py; torch.distributed.run must exist."""
    job = next(doc for _, doc in all_docs() if doc["kind"] == "PyTorchJob")
    for _, template in pod_templates(job):
        (trainer,) = [c for c in template["spec"]["containers"] if c["name"] == "pytorch"]
        _, module, _ = _torchrun(trainer)
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"{module} is not importable"
        if spec.submodule_search_locations:  # a package: `python -m` runs its __main__
            main = Path(next(iter(spec.submodule_search_locations))) / "__main__.py"
            assert main.exists(), (
                f"`python -m {module}` needs {main.relative_to(REPO)} (the training step's CLI)"
            )
        torch_spec = importlib.util.find_spec("torch")
        assert torch_spec is not None and torch_spec.origin is not None
        assert (Path(torch_spec.origin).parent / "distributed" / "run.py").exists()


def test_training_arguments_parse_with_dal_train() -> None:
    from components import cli

    job = next(doc for _, doc in all_docs() if doc["kind"] == "PyTorchJob")
    for _, template in pod_templates(job):
        (trainer,) = [c for c in template["spec"]["containers"] if c["name"] == "pytorch"]
        _, _, arguments = _torchrun(trainer)
        expanded = [re.sub(r"\$\((\w+)\)", "s3://bucket", a) for a in arguments]
        try:
            cli.build_parser().parse_args(["train", *expanded])
        except SystemExit as exc:
            pytest.fail(f"dal train rejects the PyTorchJob's arguments {arguments} (exit {exc.code})")


def test_mlflow_server_command_exists() -> None:
    """The flags and settings the MLflow Deployment passes exist in the pinned MLflow."""
    import mlflow.environment_variables
    from mlflow.cli import server

    deployment = next(
        d for _, d in all_docs() if d["kind"] == "Deployment" and d["metadata"]["name"] == "dal-mlflow"
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["mlflow"] and container["args"][0] == "server"
    options = {option for param in server.params for option in param.opts}
    flags = [a for a in container["args"] if a.startswith("--")]
    assert set(flags) <= options, f"unknown mlflow server flags: {set(flags) - options}"
    for env in container["env"]:
        if env["name"].startswith("MLFLOW_SERVER_"):
            assert hasattr(mlflow.environment_variables, env["name"]), env["name"]


def test_bucket_job_script_compiles() -> None:
    job = next(d for _, d in all_docs() if d["kind"] == "Job" and d["metadata"]["name"] == "dal-minio-bucket")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["python", "-c"]
    compile(container["command"][2], "dal-minio-bucket", "exec")


# ---------------------------------------------------------------------------------------------
# Kustomizations


def test_every_manifest_is_in_a_kustomization_and_every_reference_exists() -> None:
    referenced: set[Path] = set()
    for directory in kustomization_dirs():
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        entries = [
            *kustomization.get("resources", []),
            *kustomization.get("components", []),
            *[p["path"] for p in kustomization.get("patches", []) if "path" in p],
        ]
        for entry in entries:
            path = (directory / entry).resolve()
            assert path.exists(), f"{directory.relative_to(REPO)}: {entry} does not exist"
            referenced.add(path)
        for generator in kustomization.get("secretGenerator", []):
            for env_file in generator.get("envs", []):
                assert (directory / f"{env_file}.example").exists(), (
                    f"{directory}: document {env_file}.example"
                )
    for path in manifest_files():
        assert path.resolve() in referenced, f"{path.relative_to(REPO)} is in no kustomization"


def test_overlays_render() -> None:
    for overlay in kustomization_dirs():
        docs = rendered(overlay)
        keys = [(d["kind"], d["metadata"]["name"]) for d in docs]
        assert len(keys) == len(set(keys)), f"{overlay.name}: duplicate resources"
        assert all(d["metadata"].get("namespace", "dal") == "dal" for d in docs if d["kind"] != "Namespace")


# ---------------------------------------------------------------------------------------------
# Secrets


def test_no_literal_secrets() -> None:
    for path, doc in [*all_docs(), *((Path(n), d) for n, docs in rendered_variants() for d in docs)]:
        if doc["kind"] == "Secret":
            assert not doc.get("data") and not doc.get("stringData"), f"{path}: a Secret with literal data"
        for label, template in pod_templates(doc):
            for container in containers(template["spec"]):
                for env in container.get("env", []):
                    if SECRET_NAME.search(env["name"]):
                        assert "valueFrom" in env and "value" not in env, (
                            f"{path} {label}: {env['name']} literal"
                        )
    for directory in kustomization_dirs():
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        for generator in kustomization.get("secretGenerator", []):
            assert set(generator) <= {"name", "envs", "options", "type"}, f"{directory}: {generator}"
    for example in K8S.rglob("*.env.example"):
        for line in example.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                if SECRET_NAME.search(key):
                    assert value == "", f"{example}: {key} must stay empty in the example"


def test_secret_env_files_are_git_ignored(tmp_path: Path) -> None:
    git = shutil.which("git")
    if git is None:
        pytest.skip("git not available")
    for example in K8S.rglob("*.env.example"):
        real = example.with_suffix("")  # secrets/s3.env
        result = run([git, "check-ignore", "--no-index", "-q", real], cwd=REPO)
        assert result.returncode == 0, f"{real.relative_to(REPO)} would be committed: git-ignore it"


def test_secret_references_are_documented() -> None:
    documented: dict[str, set[str]] = {}
    for name, example in SECRETS.items():
        if example is None:
            continue
        for overlay in OVERLAYS:
            keys = {
                line.lstrip("# ").partition("=")[0]
                for line in (overlay / "secrets" / example).read_text().splitlines()
                if "=" in line
            }
            documented[name] = documented.get(name, keys) & keys
    for path, doc in all_docs():
        for label, template in pod_templates(doc):
            for container in containers(template["spec"]):
                for source in container.get("envFrom", []):
                    if "secretRef" in source:
                        ref = source["secretRef"]
                        assert ref["name"] in SECRETS, f"{path} {label}: unknown Secret {ref['name']}"
                        assert SECRETS[ref["name"]] or ref.get("optional"), f"{path} {label}: {ref['name']}"
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert ref["name"] in SECRETS, f"{path} {label}: unknown Secret {ref['name']}"
                        assert ref["key"] in documented.get(ref["name"], set()), (
                            f"{path} {label}: {ref['name']}/{ref['key']} is not in every overlay's example"
                        )


# ---------------------------------------------------------------------------------------------
# Containers


def _check_pod(where: str, template: dict[str, Any]) -> list[str]:
    problems = []
    pod = template["spec"]
    context = pod.get("securityContext", {})
    if context.get("runAsNonRoot") is not True or not context.get("runAsUser"):
        problems.append(f"{where}: pod runAsNonRoot/runAsUser")
    if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: seccompProfile RuntimeDefault")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{where}: automountServiceAccountToken must be false (no pod here uses the API)")
    if not pod.get("serviceAccountName"):
        problems.append(f"{where}: a named service account")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for volume in volumes.values():
        if "emptyDir" in volume and not volume["emptyDir"].get("sizeLimit"):
            problems.append(f"{where}: emptyDir {volume['name']} without sizeLimit")
    for container in containers(pod):
        name = f"{where}/{container['name']}"
        repository, tag, digest = split_image(container["image"])
        if not digest and (not tag or tag == "latest"):
            problems.append(f"{name}: image {container['image']} not pinned")
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in resources.get(kind, {}):
                    problems.append(f"{name}: no {kind}.{resource}")
        sc = container.get("securityContext", {})
        expected = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True}
        for key, value in expected.items():
            if sc.get(key) is not value:
                problems.append(f"{name}: securityContext.{key} must be {value}")
        if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
            problems.append(f"{name}: capabilities must drop ALL and add none")
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        if "/tmp" not in mounts:
            problems.append(f"{name}: a writable /tmp (read-only root filesystem)")
    return problems


@pytest.mark.parametrize("variant", kustomization_dirs(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_container_is_pinned_sized_and_locked_down(variant: Path) -> None:
    problems = [
        problem
        for doc in rendered(variant)
        for where, template in pod_templates(doc)
        for problem in _check_pod(where, template)
    ]
    assert not problems, "\n".join(problems)


def test_container_checks_can_fail() -> None:
    """Control: a root, unbounded, unpinned container is caught."""
    template = {"spec": {"containers": [{"name": "c", "image": "busybox:latest"}]}}
    problems = _check_pod("Pod/x", template)
    assert len(problems) >= 8, problems


def test_our_images_carry_the_project_version() -> None:
    version = re.search(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    seen = set()
    for name, docs in rendered_variants():
        for doc in docs:
            for where, template in pod_templates(doc):
                for container in containers(template["spec"]):
                    repository, tag, _ = split_image(container["image"])
                    if repository.rsplit("/", 1)[-1] in ("dal-reid", "dal-mlflow"):
                        seen.add(repository)
                        assert re.fullmatch(rf"{re.escape(version)}(-cpu|-cuda)?", tag), (
                            f"{name} {where}: {tag}"
                        )
                        if repository.endswith("dal-reid"):
                            assert tag.endswith(("-cpu", "-cuda")), (
                                f"{name} {where}: the variant belongs in the tag"
                            )
    assert seen == {"dal-reid", "dal-mlflow"}


# ---------------------------------------------------------------------------------------------
# checkov


def test_checkov(tmp_path: Path) -> None:
    """checkov over k8s/ plus the PyTorchJob's pod templates as Pods (checkov skips unknown kinds),
    and a deliberately bad Pod as a control that the run can fail."""
    scan = tmp_path / "scan"
    shutil.copytree(K8S, scan / "k8s")
    for _, doc in all_docs():
        if doc["kind"] != "PyTorchJob":
            continue
        for label, template in pod_templates(doc):
            metadata = {
                "name": label.split("/", 1)[1].replace("/", "-").lower(),
                "namespace": doc["metadata"]["namespace"],
                "labels": template.get("metadata", {}).get("labels", {}),
                "annotations": doc["metadata"].get("annotations", {}),
            }
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}
            (scan / f"pytorchjob-{metadata['name']}.yaml").write_text(yaml.safe_dump(pod))
    control = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "control", "namespace": "dal"},
        "spec": {
            "containers": [{"name": "c", "image": "busybox:1.37", "securityContext": {"privileged": True}}]
        },
    }
    (scan / "control.yaml").write_text(yaml.safe_dump(control))

    result = run(
        [tool("checkov"), "-d", scan, "--framework", "kubernetes", "--skip-download", "-o", "json"],
        timeout=600,
    )
    assert result.stdout.strip(), result.stderr
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [c for r in reports for c in r["results"].get("failed_checks", [])]
    skipped = [c for r in reports for c in r["results"].get("skipped_checks", [])]
    passed = [c for r in reports for c in r["results"].get("passed_checks", [])]

    assert any(c["file_path"].endswith("control.yaml") for c in failed), (
        "control: checkov did not flag a privileged pod"
    )
    unexpected = [f"{c['check_id']} {c['file_path']} {c['resource']}: {c['check_name']}" for c in failed]
    unexpected = [u for u in unexpected if "control.yaml" not in u]
    assert not unexpected, "\n".join(unexpected)
    for check in skipped:
        assert check["check_id"] in SKIPS, f"undocumented skip {check['check_id']} in {check['file_path']}"
        assert (check["check_result"].get("suppress_comment") or "").strip(), (
            f"{check['check_id']}: no reason"
        )
        if check["check_id"] == "CKV_K8S_40":
            assert "dal-postgres" in check["resource"], check["resource"]
        if check["check_id"] in ("CKV_K8S_8", "CKV_K8S_9"):
            assert "dal-train" in check["resource"], check["resource"]
    scanned = {c["resource"].split(".")[0] for c in passed}
    assert {"Deployment", "StatefulSet", "Job", "Pod", "Role"} <= scanned, scanned


def test_pod_security_labels() -> None:
    (namespace,) = [d for _, d in all_docs() if d["kind"] == "Namespace"]
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert labels["pod-security.kubernetes.io/enforce"] in ("baseline", "restricted")


def test_pipeline_runner_role_is_least_privilege() -> None:
    (role,) = [d for _, d in all_docs() if d["kind"] == "Role"]
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], (
            rule
        )
        assert "secrets" not in rule["resources"], rule
        if "pods" in rule["resources"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule
    assert not [d for _, d in all_docs() if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]

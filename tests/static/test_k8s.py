"""Static checks of the Kubernetes manifests in k8s/ (no cluster here).

* every manifest file passes ``kubernetes-validate --strict`` (one file at a time);
* the TrainingRuntime, which kubernetes-validate passes unseen as an unknown kind, against the
  Kubeflow Trainer v2 CRD's openAPIV3Schema (shared/data/k8s-crds; unknown fields rejected) and
  its Job templates as batch/v1 Jobs; its shape is the one components/train/trainjob.py expects;
* the overlays' patches apply (each to a resource), and what they produce passes the same checks;
* checkov finds nothing beyond the skips listed (with their reasons) in SKIPS;
* no literal secret anywhere; every container pinned, sized and locked down;
* the commands the manifests run exist (``-m components.train``, ``mlflow server`` flags);
* the pipeline runner's Role allows exactly the API calls of components/train/trainjob.py.
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

import pytest
import yaml

from components.train import trainjob
from tests.static.helpers import (
    K8S,
    REPO,
    TRAINING_RUNTIME_KINDS,
    containers,
    crd_errors,
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
    "CKV_K8S_8": "training pods only (batch): nothing to probe, the JobSet follows exit codes",
    "CKV_K8S_9": "training pods only (batch): nothing to probe, the JobSet follows exit codes",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)
# Resource kinds validated against a CRD here (kubernetes-validate only warns about them).
CRD_KINDS = TRAINING_RUNTIME_KINDS


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


def training_runtimes() -> list[Any]:
    """The TrainingRuntime as every kustomization renders it, as pytest params."""
    return [
        pytest.param(f"{name}:{doc['metadata']['name']}", doc, id=f"{name}:{doc['metadata']['name']}")
        for name, docs in rendered_variants()
        for doc in docs
        if doc["kind"] in TRAINING_RUNTIME_KINDS
    ]


def the_runtime() -> dict[str, Any]:
    (runtime,) = [doc for _, doc in all_docs() if doc["kind"] in TRAINING_RUNTIME_KINDS]
    return runtime


def _node(runtime: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(replicatedJob, pod spec, container) of the torch runtime's trainer, both named "node"."""
    (job,) = [j for j in runtime["spec"]["template"]["spec"]["replicatedJobs"] if j["name"] == trainjob.NODE]
    pod = job["template"]["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == trainjob.NODE]
    return job, pod, container


# ---------------------------------------------------------------------------------------------
# kubernetes-validate


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_passes_kubernetes_validate(path: Path) -> None:
    result = kubernetes_validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    # Unknown kinds are only warned about ("Couldn't find schema"); the TrainingRuntime is checked
    # against its CRD below, anything else would go unchecked.
    for line in (result.stdout + result.stderr).splitlines():
        if "Couldn't find schema" in line:
            assert any(kind in line for kind in CRD_KINDS), f"{path}: a kind nothing validates: {line}"


def test_kubernetes_validate_rejects_unknown_fields(tmp_path: Path) -> None:
    """Control: --strict is in effect, so a misspelt field fails (the tool can fail)."""
    (_, doc) = next((p, d) for p, d in all_docs() if d["kind"] == "Deployment")
    broken = copy.deepcopy(doc)
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = kubernetes_validate(path)
    assert result.returncode != 0, result.stdout + result.stderr


def _as_jobs(runtime: dict[str, Any]) -> list[dict[str, Any]]:
    """The runtime's replicatedJob templates as batch/v1 Jobs (what JobSet creates from them)."""
    return [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": f"{runtime['metadata']['name']}-{job['name']}",
                "namespace": runtime["metadata"].get("namespace", "dal"),
                "labels": job["template"].get("metadata", {}).get("labels", {}),
            },
            "spec": job["template"]["spec"],
        }
        for job in runtime["spec"]["template"]["spec"]["replicatedJobs"]
    ]


@pytest.mark.parametrize(("name", "runtime"), training_runtimes())
def test_training_runtime_jobs_pass_kubernetes_validate(
    name: str, runtime: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text(yaml.safe_dump_all(_as_jobs(runtime)))
    result = kubernetes_validate(path)
    assert result.returncode == 0, f"{name}:\n{result.stdout}{result.stderr}"
    assert "Couldn't find schema" not in result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_overlay_output_passes_kubernetes_validate(overlay: Path, tmp_path: Path) -> None:
    """The resources the overlay changes (patches, images) are still valid; the TrainingRuntime has
    its own checks above."""
    files = {(d["kind"], d["metadata"]["name"]): d for _, d in all_docs()}
    changed = [
        d
        for d in rendered(overlay)
        if d["kind"] not in CRD_KINDS and d != files.get((d["kind"], d["metadata"]["name"]))
    ]
    assert changed, f"{overlay.name} changes nothing?"
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump_all(changed))
    result = kubernetes_validate(path)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# TrainingRuntime


@pytest.mark.parametrize(("name", "runtime"), training_runtimes())
def test_training_runtime_matches_the_crd(name: str, runtime: dict[str, Any]) -> None:
    errors = crd_errors(runtime)
    assert not errors, f"{name}:\n" + "\n".join(errors)


@pytest.mark.parametrize(
    "mutation",
    [
        "typo in a container",
        "typo in mlPolicy",
        "bad numProcPerNode",
        "numNodes with elasticPolicy",
        "duplicate env names",
        "replicas not an integer",
    ],
)
def test_crd_check_rejects_invalid_runtimes(mutation: str) -> None:
    """Control: the CRD check catches what the API server would reject."""
    runtime = copy.deepcopy(the_runtime())
    _, pod, container = _node(runtime)
    torch = runtime["spec"]["mlPolicy"]["torch"]
    if mutation == "typo in a container":
        container["imagePullPolicyy"] = "Always"
    elif mutation == "typo in mlPolicy":
        torch["numProcsPerNode"] = torch.pop("numProcPerNode")
    elif mutation == "bad numProcPerNode":
        torch["numProcPerNode"] = "many"
    elif mutation == "numNodes with elasticPolicy":
        torch["elasticPolicy"] = {"maxNodes": 2}
    elif mutation == "duplicate env names":
        container["env"] = [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]
    elif mutation == "replicas not an integer":
        runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["replicas"] = "two"
    assert crd_errors(runtime), mutation


@pytest.mark.parametrize(("name", "runtime"), training_runtimes())
def test_training_runtime_is_what_trainjob_expects(name: str, runtime: dict[str, Any]) -> None:
    """The names and settings components/train/trainjob.py and the torch plugin rely on."""
    options = trainjob.TrainJobOptions(namespace="dal")
    assert runtime["kind"] == options.runtime_kind and runtime["metadata"]["name"] == options.runtime, name
    assert runtime["metadata"]["namespace"] == options.namespace
    policy = runtime["spec"]["mlPolicy"]
    assert "elasticPolicy" not in policy["torch"], "removed in Trainer v2.2"
    assert isinstance(policy["torch"]["numProcPerNode"], int), "auto would start one process per CPU"
    job, pod, container = _node(runtime)
    labels = job["template"]["metadata"]["labels"]
    assert labels["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer", "the torch plugin finds it so"
    assert job["template"]["spec"]["completionMode"] == "Indexed", "PET_NODE_RANK is the completion index"
    assert job["template"]["spec"]["backoffLimit"] == 0 and pod["restartPolicy"] == "Never", (
        "a failed node restarts the whole JobSet, not one pod"
    )
    assert runtime["spec"]["template"]["spec"]["failurePolicy"]["maxRestarts"] >= 1
    # The TrainJob overrides no pod fields (they differ between Trainer releases): the runtime
    # names the account, one without Kubernetes API access (rbac.yaml).
    assert pod["serviceAccountName"] == "dal-train"
    # NetworkPolicy dal-train admits the nodes to each other by this label.
    (policy_doc,) = [
        d for _, d in all_docs() if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "dal-train"
    ]
    selector = policy_doc["spec"]["podSelector"]["matchLabels"]
    pod_labels = job["template"]["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items(), (selector, pod_labels)
    assert any(m["mountPath"] == "/dev/shm" for m in container["volumeMounts"]), (
        "shared memory for DataLoader"
    )
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert not [e for e in container.get("env", []) if e["name"].startswith("PET_")], "the plugin sets PET_*"


def test_training_command_runs_an_existing_module() -> None:
    """`-m components.train` needs components/train/__main__.py; torch.distributed.run must exist."""
    _, _, container = _node(the_runtime())
    manifest = trainjob.trainjob_manifest(
        "dal-train-x-s0", [], trainjob.TrainJobOptions(namespace="dal"), run_key="x", split=0
    )
    trainer = manifest["spec"]["trainer"]
    for command in ([*container["command"], *container["args"]], [*trainer["command"], *trainer["args"]]):
        assert command[:3] == ["python", "-m", "torch.distributed.run"], command
        assert command[3] == "-m", f"{command}: no torchrun flags (the torch plugin's PET_* set them)"
        spec = importlib.util.find_spec(command[4])
        assert spec is not None, f"{command[4]} is not importable"
        if spec.submodule_search_locations:  # a package: `python -m` runs its __main__
            main = Path(next(iter(spec.submodule_search_locations))) / "__main__.py"
            assert main.exists(), f"`python -m {command[4]}` needs {main.relative_to(REPO)}"
    torch_spec = importlib.util.find_spec("torch")
    assert torch_spec is not None and torch_spec.origin is not None
    assert (Path(torch_spec.origin).parent / "distributed" / "run.py").exists()


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


def test_overlay_patches_match_a_resource() -> None:
    """kustomize silently skips a targeted patch that matches nothing; here that is an error."""
    unmatched: list[str] = []
    for directory in kustomization_dirs():
        rendered(directory, unmatched)
    assert not unmatched, "patches that change nothing (retarget or remove them):\n" + "\n".join(unmatched)


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
                        seen.add(repository.rsplit("/", 1)[-1])
                        assert re.fullmatch(rf"{re.escape(version)}(-cpu|-cuda)?", tag), (
                            f"{name} {where}: {tag}"
                        )
                        if repository.endswith("dal-reid"):
                            assert tag.endswith(("-cpu", "-cuda")), (
                                f"{name} {where}: the variant belongs in the tag"
                            )
    assert seen == {"dal-reid", "dal-mlflow"}


def test_training_runtime_image_is_the_pipeline_default() -> None:
    """The runtime's image is only a default (each TrainJob names its own), the pipeline's one."""
    from components.common.kfp_io import DEFAULT_IMAGE

    _, _, container = _node(the_runtime())
    assert container["image"] == DEFAULT_IMAGE == trainjob.TrainJobOptions(namespace="dal").image


# ---------------------------------------------------------------------------------------------
# checkov


def test_checkov(tmp_path: Path) -> None:
    """checkov over k8s/ plus the TrainingRuntime's pod templates as Pods (checkov skips unknown kinds),
    and a deliberately bad Pod as a control that the run can fail."""
    scan = tmp_path / "scan"
    shutil.copytree(K8S, scan / "k8s")
    for _, doc in all_docs():
        if doc["kind"] not in CRD_KINDS:
            continue
        for label, template in pod_templates(doc):
            metadata = {
                "name": label.split("/", 1)[1].replace("/", "-").lower(),
                "namespace": doc["metadata"]["namespace"],
                "labels": template.get("metadata", {}).get("labels", {}),
                "annotations": doc["metadata"].get("annotations", {}),
            }
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}
            (scan / f"{doc['kind'].lower()}-{metadata['name']}.yaml").write_text(yaml.safe_dump(pod))
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
            assert "dal-torch" in check["resource"], check["resource"]
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
        assert "patch" not in rule["verbs"] and "update" not in rule["verbs"], rule
    assert not [d for _, d in all_docs() if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]


# The Kubernetes client calls of trainjob.KubernetesApi and the RBAC permission each needs.
CLIENT_CALL_PERMISSIONS = {
    "create_namespaced_custom_object": "create",
    "get_namespaced_custom_object": "get",
    "delete_namespaced_custom_object": "delete",
    "list_namespaced_pod": ("", "pods", "list"),
    "read_namespaced_pod_log": ("", "pods/log", "get"),
}


class _Recorder:
    """Stands in for a kubernetes client API object and records what is called on it."""

    def __init__(self, calls: list[tuple[str, tuple[Any, ...]]]) -> None:
        self._calls = calls

    def __getattr__(self, method: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self._calls.append((method, args))
            return (
                type("Response", (), {"data": b'{"items": []}'})() if method == "list_namespaced_pod" else {}
            )

        return call


def _permissions_trainjob_uses() -> set[tuple[str, str, str]]:
    calls: list[tuple[str, tuple[Any, ...]]] = []
    api = trainjob.KubernetesApi(_Recorder(calls), _Recorder(calls))
    body = {"metadata": {"name": "x"}}
    api.create_trainjob("dal", body)
    api.get_trainjob("dal", "x")
    api.delete_trainjob("dal", "x")
    api.list_pods("dal", "a=b")
    api.read_pod_log("dal", "p", "node", 10)
    # Every method of the Protocol was called above.
    protocol = {m for m in vars(trainjob.TrainJobApi) if not m.startswith("_")}
    assert protocol == {"create_trainjob", "get_trainjob", "delete_trainjob", "list_pods", "read_pod_log"}
    permissions = set()
    for method, args in calls:
        assert method in CLIENT_CALL_PERMISSIONS, f"trainjob.py calls {method}: add its RBAC permission here"
        permission = CLIENT_CALL_PERMISSIONS[method]
        if isinstance(permission, str):  # custom objects: group, version, namespace, plural, ...
            group, _, _, plural = args[:4]
            permission = (group, plural, permission)
        permissions.add(permission)
    return permissions


def test_pipeline_runner_role_allows_exactly_what_trainjob_calls() -> None:
    (role,) = [
        d for _, d in all_docs() if d["kind"] == "Role" and d["metadata"]["name"] == "dal-pipeline-runner"
    ]
    launcher = {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "resourceNames": ["kfp-launcher"],
        "verbs": ["get"],
    }
    assert launcher in role["rules"], "the KFP launcher reads its ConfigMap"
    allowed = {
        (group, resource, verb)
        for rule in role["rules"]
        if rule != launcher
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert not [r for r in role["rules"] if r != launcher and r.get("resourceNames")]
    used = _permissions_trainjob_uses()
    assert allowed == used, (
        f"Role allows but unused: {allowed - used}; used but not allowed: {used - allowed}"
    )


def test_trainjob_env_references_are_documented() -> None:
    """The Secret keys a TrainJob references exist in every overlay's example; values never inline."""
    documented: dict[str, set[str]] = {}
    for name, example in SECRETS.items():
        for overlay in OVERLAYS if example else []:
            keys = {
                line.lstrip("# ").partition("=")[0]
                for line in (overlay / "secrets" / example).read_text().splitlines()
                if "=" in line
            }
            documented[name] = documented.get(name, keys) & keys
    (config,) = [
        d
        for d in rendered(K8S / "base")
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "dal-config"
    ]
    options = trainjob.TrainJobOptions(namespace="dal")
    manifest = trainjob.trainjob_manifest("dal-train-x-s0", [], options, run_key="x", split=0)
    for env in manifest["spec"]["trainer"]["env"]:
        assert "value" not in env, env
        source = env["valueFrom"]
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            assert ref["name"] == config["metadata"]["name"] and ref["key"] in config["data"], ref
        else:
            ref = source["secretKeyRef"]
            assert ref["name"] in SECRETS, ref
            if SECRETS[ref["name"]] is None:
                assert ref.get("optional") is True, f"{ref}: an optional Secret"
            else:
                assert ref["key"] in documented[ref["name"]], f"{ref}: not in every overlay's example"

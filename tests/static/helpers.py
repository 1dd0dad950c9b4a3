"""Helpers of the static checks of docker/ and k8s/ (nothing here needs a Docker engine or a cluster).

The linters (hadolint, kubernetes-validate, checkov) live in their own virtual environment,
``.venv-lint`` (``make setup``), so that their pins never meet the project's; the tests run them as
programs from there (``DAL_LINT_BIN`` points elsewhere if needed).
"""

from __future__ import annotations

import copy
import functools
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
DOCKERFILE = REPO / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / "docker" / "Dockerfile.dockerignore"
LINT_BIN = Path(os.environ.get("DAL_LINT_BIN", str(REPO / ".venv-lint" / "bin")))
# The Kubernetes release the manifests are validated against (1.31: oldest release still in
# common managed-cluster support windows when this was written; every field used exists there).
KUBERNETES_VERSION = "1.31"


def tool(name: str) -> Path:
    """A linter from .venv-lint; a clear failure when it is not installed."""
    path = LINT_BIN / name
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"{name} not found in {LINT_BIN}: run `make setup` (it creates .venv-lint with hadolint, "
            "kubernetes-validate and checkov from requirements/lint.txt)",
            pytrace=False,
        )
    return path


def run(args: list[Any], timeout: float = 600, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def kubernetes_validate(path: Path) -> subprocess.CompletedProcess[str]:
    """kubernetes-validate --strict on one file (the tool takes files, not folders)."""
    return run([tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, path], timeout=120)


def load_docs(path: Path) -> list[dict[str, Any]]:
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def manifest_files() -> list[Path]:
    """Every Kubernetes manifest under k8s/ (kustomizations excluded)."""
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


# ---------------------------------------------------------------------------------------------
# Pod specs inside workload kinds

# Kubeflow Trainer v2 runtimes: a JobSet template whose replicatedJobs hold Job templates.
TRAINING_RUNTIME_KINDS = ("TrainingRuntime", "ClusterTrainingRuntime")


def pod_templates(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(label, pod template with metadata and spec) of every pod a resource would create."""
    kind = doc.get("kind")
    name = doc.get("metadata", {}).get("name", "?")
    spec = doc.get("spec", {})
    if kind == "Pod":
        yield f"Pod/{name}", {"metadata": doc.get("metadata", {}), "spec": spec}
    elif kind == "PodTemplate":
        yield f"PodTemplate/{name}", doc["template"]
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield f"{kind}/{name}", spec["template"]
    elif kind == "CronJob":
        yield f"{kind}/{name}", spec["jobTemplate"]["spec"]["template"]
    elif kind in TRAINING_RUNTIME_KINDS:
        for replicated_job in spec.get("template", {}).get("spec", {}).get("replicatedJobs", []):
            yield f"{kind}/{name}/{replicated_job['name']}", replicated_job["template"]["spec"]["template"]


def containers(pod_spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod_spec.get("initContainers", [])
    yield from pod_spec.get("containers", [])


def split_image(image: str) -> tuple[str, str, str]:
    """(repository, tag, digest) of an image reference; missing parts are ''."""
    rest, _, digest = image.partition("@")
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        repository, _, tag = rest.rpartition(":")
    else:
        repository, tag = rest, ""
    return repository, tag, digest


# ---------------------------------------------------------------------------------------------
# The part of `kustomize build` our overlays use (kustomize itself is not available here):
# resources and components, inline JSON 6902 patches, strategic-merge patch files of mappings,
# and the images transformer. Anything else in a kustomization is reported, not ignored.

SUPPORTED_KUSTOMIZATION_KEYS = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "components",
    "patches",
    "images",
    "secretGenerator",
    "generatorOptions",
}


def _merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _merge(base.get(key), value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(patch)


def _matches(doc: dict[str, Any], target: dict[str, Any]) -> bool:
    group, _, version = doc["apiVersion"].rpartition("/")
    return (
        target.get("kind", doc["kind"]) == doc["kind"]
        and target.get("name", doc["metadata"]["name"]) == doc["metadata"]["name"]
        and target.get("group", group) == group
        and target.get("version", version) == version
    )


def rendered(directory: Path, unmatched: list[str] | None = None) -> list[dict[str, Any]]:
    """The resources of a kustomization (or component) directory after its own patches.

    A targeted patch that matches nothing is skipped, as kustomize does (kubernetes-sigs/kustomize
    #4379), and described in ``unmatched`` (test_overlay_patches_match_a_resource fails on it)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED_KUSTOMIZATION_KEYS
    if unknown:
        raise AssertionError(
            f"{directory}: kustomization keys {sorted(unknown)} are not covered by the tests"
        )
    docs: list[dict[str, Any]] = []
    for entry in [*kustomization.get("resources", []), *kustomization.get("components", [])]:
        path = (directory / entry).resolve()
        docs.extend(rendered(path, unmatched) if path.is_dir() else load_docs(path))
    for patch in kustomization.get("patches", []):
        if "patch" in patch:
            operations = yaml.safe_load(patch["patch"])
            targets = [d for d in docs if _matches(d, patch["target"])]
            if not targets:
                if unmatched is not None:
                    unmatched.append(f"{directory.relative_to(REPO)}: patch target {patch['target']}")
                continue
            if len(targets) != 1:
                raise AssertionError(
                    f"{directory}: patch target {patch['target']} matches {len(targets)} resources"
                )
            index = docs.index(targets[0])
            docs[index] = jsonpatch.apply_patch(targets[0], operations)
        else:
            (partial,) = load_docs(directory / patch["path"])
            targets = [
                d for d in docs if _matches(d, {k: partial[k] for k in ("kind",)} | partial["metadata"])
            ]
            if len(targets) != 1:
                raise AssertionError(f"{directory}: patch {patch['path']} matches {len(targets)} resources")
            docs[docs.index(targets[0])] = _merge(targets[0], partial)
    for image in kustomization.get("images", []):
        for doc in docs:
            for _, template in pod_templates(doc):
                for container in containers(template["spec"]):
                    repository, tag, digest = split_image(container["image"])
                    if repository == image["name"]:
                        repository = image.get("newName", repository)
                        tag = image.get("newTag", tag)
                        digest = image.get("digest", digest)
                        container["image"] = (
                            repository + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
                        )
    return docs


# ---------------------------------------------------------------------------------------------
# Dockerfile instructions


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        pending += stripped
        keyword, _, arguments = pending.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def dockerfile_stages(text: str) -> dict[str, list[tuple[str, str]]]:
    """Instructions per build stage, keyed by stage name ('' for global ARGs before any FROM)."""
    stages: dict[str, list[tuple[str, str]]] = {"": []}
    current = ""
    for keyword, arguments in dockerfile_instructions(text):
        if keyword == "FROM":
            words = shlex.split(arguments)
            current = words[-1] if len(words) >= 3 and words[-2].upper() == "AS" else f"stage{len(stages)}"
            stages[current] = []
        stages[current].append((keyword, arguments))
    return stages


def arg_default(text: str, name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)", text, flags=re.MULTILINE)
    assert match, f"docker/Dockerfile: no ARG {name}=<default>"
    return match.group(1)


# ---------------------------------------------------------------------------------------------
# Custom resources against their CRDs' openAPIV3Schema (the API server's structural schema rules,
# as JSON Schema): unknown fields are rejected wherever the CRD lists properties, unless it says
# x-kubernetes-preserve-unknown-fields; int-or-string is either; list-type map keys are unique;
# the CEL rules (x-kubernetes-validations) are evaluated by their Python equivalents below, and a
# rule that has none fails the check rather than passing unseen.

CRDS = Path(os.environ.get("DAL_K8S_CRDS", str(REPO.parent / "shared" / "data" / "k8s-crds")))
# CEL rule -> what it checks on create (rules on oldSelf only constrain updates).
CEL_RULES: dict[str, Any] = {
    "self > 0 || self in ['auto', 'cpu', 'gpu']": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool) and v > 0) or v in ("auto", "cpu", "gpu")
    ),
    "!(has(self.numNodes) && (has(self.torch) && has(self.torch.elasticPolicy)))": lambda v: (
        not ("numNodes" in v and "elasticPolicy" in v.get("torch", {}))
    ),
    "!(has(self.torch) && has(self.mpi))": lambda v: not ("torch" in v and "mpi" in v),
    "self in ['trainer.kubeflow.org/trainjob-controller', 'kueue.x-k8s.io/multikueue']": lambda v: (
        v in ("trainer.kubeflow.org/trainjob-controller", "kueue.x-k8s.io/multikueue")
    ),
}
_DROPPED = {"description", "default", "format", "x-kubernetes-map-type", "x-kubernetes-list-type"}
_KEPT = {"type", "required", "enum", "pattern", "maxLength", "minLength", "minimum", "maximum"}
_KEPT |= {"maxItems", "minItems", "maxProperties", "minProperties", "uniqueItems", "exclusiveMinimum"}


def _structural(node: dict[str, Any]) -> dict[str, Any]:
    """One openAPIV3Schema node as JSON Schema (see above)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or (key == "x-kubernetes-preserve-unknown-fields" and value):
            continue
        if key in _KEPT:
            out[key] = value
        elif key == "properties":
            out[key] = {name: _structural(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = _structural(value) if isinstance(value, dict) else value
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [_structural(child) for child in value]
        elif key == "x-kubernetes-int-or-string":
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        elif key in ("x-kubernetes-validations", "x-kubernetes-list-map-keys"):
            out[key] = value
        elif key == "nullable":
            continue  # handled with type below
        else:
            raise AssertionError(f"CRD schema keyword {key!r} is not modelled by tests/static/helpers.py")
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in node and "additionalProperties" not in node and not preserve:
        out["additionalProperties"] = False
    return out


def _cel(validator: Any, rules: list[dict[str, str]], instance: Any, schema: Any) -> Iterator[Any]:
    for rule in rules:
        if "oldSelf" in rule["rule"]:
            continue
        check = CEL_RULES.get(rule["rule"])
        if check is None:
            yield jsonschema.ValidationError(
                f"CEL rule not modelled in tests/static/helpers.py: {rule['rule']}"
            )
        elif not check(instance):
            yield jsonschema.ValidationError(f"{rule.get('message', rule['rule'])} (got {instance!r})")


def _list_map_keys(validator: Any, keys: list[str], instance: Any, schema: Any) -> Iterator[Any]:
    if not isinstance(instance, list):
        return
    seen = [tuple(item.get(k) for k in keys) for item in instance if isinstance(item, dict)]
    duplicates = sorted({key for key in seen if seen.count(key) > 1}, key=str)
    if duplicates:
        yield jsonschema.ValidationError(f"duplicate list-map keys {keys}: {duplicates}")


_CRD_VALIDATOR = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    {"x-kubernetes-validations": _cel, "x-kubernetes-list-map-keys": _list_map_keys},
)


@functools.cache
def crd_validator(kind: str, version: str = "v1alpha1") -> Any:
    """A validator of ``kind`` objects from the CRD in CRDS that defines it (built once: the CRDs
    are large)."""
    if not CRDS.is_dir():
        pytest.fail(
            f"no CRDs at {CRDS} (set DAL_K8S_CRDS to the folder of the Trainer v2 CRDs)", pytrace=False
        )
    for path in sorted(CRDS.glob("*.yaml")):
        with path.open() as handle:  # the C loader: these files are ~1 MB
            crds = [
                d for d in yaml.load_all(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if d
            ]
        for crd in crds:
            if crd.get("kind") == "CustomResourceDefinition" and crd["spec"]["names"]["kind"] == kind:
                (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
                schema = _structural(served["schema"]["openAPIV3Schema"])
                schema["properties"]["apiVersion"] = {"const": f"{crd['spec']['group']}/{version}"}
                schema["properties"]["kind"] = {"const": kind}
                schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "spec"})
                return _CRD_VALIDATOR(schema)
    pytest.fail(f"no CRD of kind {kind} in {CRDS}", pytrace=False)


def crd_errors(doc: dict[str, Any]) -> list[str]:
    """What the CRD of ``doc``'s kind rejects in it (empty: valid)."""
    validator = crd_validator(doc["kind"], doc["apiVersion"].rpartition("/")[2])
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [
        f"{doc['kind']} {'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors
    ]

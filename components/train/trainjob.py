"""Multi-node ``dal train`` as a Kubeflow Trainer v2 TrainJob, created and followed by the KFP task.

The KFP training task builds one TrainJob per split (``trainjob_manifest``), creates it and waits
for it (``run_trainjob``); the torch runtime starts ``python -m torch.distributed.run -m
components.train ...`` on every node. What this module relies on, read from the Trainer source
(github.com/kubeflow/trainer, tags v2.0.0 and v2.0.1; API ``trainer.kubeflow.org/v1alpha1``):

* the trainer is the replicatedJob *and* container named ``node`` of a runtime whose Job template
  carries ``trainer.kubeflow.org/trainjob-ancestor-step: trainer`` (pkg/constants/constants.go:
  ``Node``, ``AncestorTrainer``); ``trainer.image/command/args/resourcesPerNode`` replace the
  container's, ``trainer.env`` is merged into it, ``valueFrom`` included (pkg/apply, jobset
  builder); the JobSet has the TrainJob's name, so pods carry ``jobset.sigs.k8s.io/jobset-name``;
* the torch plugin (pkg/runtime/framework/plugins/torch/torch.go) sets ``PET_NNODES``,
  ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK`` (the Job completion index), ``PET_MASTER_ADDR``
  (``<name>-node-0-0.<name>``) and ``PET_MASTER_PORT`` (29500) and rejects them in
  ``trainer.env``; torch.distributed.run takes every option's default from ``PET_<OPTION>``
  (torch/distributed/argparse_util.py), so the command carries no rendezvous flags. With
  ``numProcPerNode: auto`` and no GPU in ``resourcesPerNode`` the plugin starts one process per
  CPU, hence an explicit count here (GPUs per node, or 1 on CPU nodes);
* conditions: ``Complete`` / ``Failed`` are copied from the JobSet's (reasons ``AllJobsCompleted``,
  ``FailedJobs``, ``ReachedMaxRestarts``; kubernetes-sigs/jobset), ``Suspended`` from
  ``spec.suspend``; the pre-release of February 2025 whose CRDs ``shared/data/k8s-crds`` holds
  (main at a55f03a8c, controller-gen v0.16.5) also sets ``Created``, and ``status.jobsStatus`` is
  filled from v2.1.0 on: both are only logged, only Complete/Failed end the wait;
* JobSet's webhook requires ``<name>-node-<job>-<pod>-<5 chars>`` to be a DNS-1035 label (<= 63),
  which bounds the TrainJob's name (``MAX_NAME_LENGTH``);
* the TrainJob uses only fields that v2.0, v2.1 and v2.2 share (``runtimeRef``, ``labels``,
  ``trainer``): no ``podSpecOverrides`` (renamed ``podTemplateOverrides`` in v2.1, replaced by
  ``runtimePatches`` in v2.2), so the runtime's pod template carries the service account
  (``dal-train``), the volumes and the security context; a ClusterTrainingRuntime used instead
  must do the same;
* ``mlPolicy.torch.elasticPolicy`` was removed in v2.2: not used (fixed world size; a failed node
  restarts the whole JobSet, k8s/base/trainingruntime.yaml, and ``dal train`` resumes from its
  checkpoint).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

from components.common.config import require
from components.common.errors import DalError
from components.common.kfp_io import DEFAULT_IMAGE
from components.common.options import StepOptions

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
PLURAL = "trainjobs"
# The torch runtime's trainer: replicatedJob and container name (Trainer v2.0 constants.Node).
NODE = "node"
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
SPEC_DIGEST_ANNOTATION = "dal/spec-sha256"
# Pod names are <name>-node-0-<index>-<5 chars> and must stay <= 63 (JobSet webhook): 45 leaves
# room for 4-digit node indices.
MAX_NAME_LENGTH = 45
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
FALLBACK_NAMESPACE = "dal"
DAY_S = 86_400
# Long enough for a full MARS run on two nodes many times over; short enough that a job whose pods
# can never be scheduled does not hold the pipeline for weeks.
DEFAULT_TIMEOUT_S = 2 * DAY_S
MAX_TIMEOUT_S = 7 * DAY_S
# How long a deleted TrainJob may take to go (foreground deletion waits for its JobSet and pods).
DELETE_TIMEOUT_S = 600
# Consecutive failed status reads tolerated while waiting (API server restarts, network blips).
MAX_UNAVAILABLE_POLLS = 10

Keep = Literal["never", "on-failure", "always"]
RuntimeKind = Literal["TrainingRuntime", "ClusterTrainingRuntime"]
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def default_namespace(path: Path | None = None) -> str:
    """The pod's own namespace (its service account's), else ``dal``; read when called."""
    try:
        namespace = (path or SERVICE_ACCOUNT_NAMESPACE).read_text().strip()
    except OSError:
        return FALLBACK_NAMESPACE
    return namespace or FALLBACK_NAMESPACE


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainJobOptions:
    nodes: int = dataclasses.field(default=2, metadata=_help("training nodes (pods), at least 2"))
    gpus_per_node: int = dataclasses.field(
        default=1, metadata=_help("GPUs per node = processes per node; 0: CPU nodes, one process each")
    )
    image: str = dataclasses.field(default=DEFAULT_IMAGE, metadata=_help("image of the training nodes"))
    # "" resolves when the options are built (in the pod), not when the pipeline is compiled.
    namespace: str = dataclasses.field(
        default="",
        metadata=_help("namespace of the TrainJob; '': the pod's own (its service account's), else dal"),
    )
    runtime: str = dataclasses.field(default="dal-torch", metadata=_help("the training runtime's name"))
    runtime_kind: RuntimeKind = dataclasses.field(
        default="TrainingRuntime", metadata=_help("TrainingRuntime (namespaced) or ClusterTrainingRuntime")
    )
    config_map: str = dataclasses.field(default="dal-config", metadata=_help("ConfigMap: DAL_STORE, ..."))
    s3_secret: str = dataclasses.field(default="dal-s3", metadata=_help("Secret with the AWS_* keys"))
    mlflow_secret: str = dataclasses.field(
        default="dal-mlflow-auth",
        metadata=_help("optional Secret with MLFLOW_TRACKING_USERNAME/PASSWORD ('' for none)"),
    )
    cpu: str = dataclasses.field(default="8", metadata=_help("CPU per node (request = limit)"))
    memory: str = dataclasses.field(default="32Gi", metadata=_help("memory per node (request = limit)"))
    timeout_s: int = dataclasses.field(
        default=DEFAULT_TIMEOUT_S, metadata=_help(f"give up after this many seconds (<= {MAX_TIMEOUT_S})")
    )
    poll_s: float = dataclasses.field(default=30.0, metadata=_help("seconds between status reads"))
    keep: Keep = dataclasses.field(
        default="on-failure",
        metadata=_help(
            "never: delete the TrainJob when done; on-failure: keep a failed one for debugging; "
            "always: keep every one"
        ),
    )
    log_lines: int = dataclasses.field(default=50, metadata=_help("log lines shown per failed pod"))

    def __post_init__(self) -> None:
        if not self.namespace:
            object.__setattr__(self, "namespace", default_namespace())
        require(self.nodes >= 2, "nodes", f"must be >= 2 (one node trains in the KFP pod), got {self.nodes}")
        require(self.gpus_per_node >= 0, "gpus_per_node", f"must be >= 0, got {self.gpus_per_node}")
        require(bool(self.image.strip()), "image", "must not be empty")
        for field in ("namespace", "runtime", "config_map", "s3_secret"):
            value = getattr(self, field)
            require(bool(_DNS1123_LABEL.match(value)), field, f"must be a DNS-1123 name, got {value!r}")
        require(
            self.mlflow_secret == "" or bool(_DNS1123_LABEL.match(self.mlflow_secret)),
            "mlflow_secret",
            f"must be a DNS-1123 name or '', got {self.mlflow_secret!r}",
        )
        require(
            self.runtime_kind in ("TrainingRuntime", "ClusterTrainingRuntime"),
            "runtime_kind",
            f"must be TrainingRuntime or ClusterTrainingRuntime, got {self.runtime_kind!r}",
        )
        for field in ("cpu", "memory"):
            value = getattr(self, field)
            require(bool(_QUANTITY.match(value)), field, f"must be a Kubernetes quantity, got {value!r}")
            require(float(re.sub(r"[^0-9.]", "", value)) > 0, field, f"must be > 0, got {value!r}")
        require(
            0 < self.timeout_s <= MAX_TIMEOUT_S,
            "timeout_s",
            f"must be in (0, {MAX_TIMEOUT_S}] seconds, got {self.timeout_s}",
        )
        require(1 <= self.poll_s <= 600, "poll_s", f"must be in [1, 600] seconds, got {self.poll_s}")
        require(
            self.keep in ("never", "on-failure", "always"),
            "keep",
            f"never, on-failure or always, got {self.keep!r}",
        )
        require(1 <= self.log_lines <= 1000, "log_lines", f"must be in [1, 1000], got {self.log_lines}")

    @property
    def procs_per_node(self) -> int:
        return max(1, self.gpus_per_node)


# The pipeline's `trainjob_options` parameter: every field but those the pipeline sets per task.
TRAINJOB_OPTIONS = StepOptions(
    "trainjob_options", TrainJobOptions, frozenset({"nodes", "gpus_per_node", "image"})
)


# ---------------------------------------------------------------------------------------------
# Names and the manifest


def _digest(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _slug(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")


def trainjob_name(run_key: str, split: int) -> str:
    """``dal-train-<run key>-s<split>``: the same for a retried task (which then adopts the TrainJob
    it finds); a lossy or too long run key is cut and suffixed with its hash so names stay distinct."""
    if not run_key:
        raise DalError("trainjob_name: run_key is empty")
    if split < 0:
        raise DalError(f"trainjob_name: split must be >= 0, got {split}")
    prefix, suffix = "dal-train-", f"-s{split}"
    slug = _slug(run_key)
    name = f"{prefix}{slug}{suffix}"
    if slug != run_key or len(name) > MAX_NAME_LENGTH:
        tail = f"-{_digest(run_key)}{suffix}"
        name = f"{prefix}{slug[: MAX_NAME_LENGTH - len(prefix) - len(tail)].rstrip('-')}{tail}"
        name = name.replace("--", "-")  # an empty slug
    return name


def _label_value(text: str) -> str:
    if len(text) <= 63 and _LABEL_VALUE.match(text):
        return text
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:54].strip("-_.")
    return f"{cleaned}-{_digest(text)}" if cleaned else _digest(text)


def trainjob_labels(run_key: str, split: int) -> dict[str, str]:
    return {
        "app.kubernetes.io/part-of": "dal",
        "app.kubernetes.io/component": "training",
        "dal/run-key": _label_value(run_key),
        "dal/split": str(split),
    }


def _ref_env(name: str, source: str, obj: str, key: str, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": obj, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {source: ref}}


def _env(options: TrainJobOptions) -> list[dict[str, Any]]:
    """References only: the values stay in the ConfigMap and the Secrets."""
    config = [
        _ref_env(key, "configMapKeyRef", options.config_map, key)
        for key in ("DAL_STORE", "MLFLOW_TRACKING_URI", "AWS_MAX_ATTEMPTS")
    ]
    s3 = [
        _ref_env(key, "secretKeyRef", options.s3_secret, key)
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")
    ]
    # AWS S3 itself needs no endpoint (the external-s3 overlay leaves the key out).
    s3.append(_ref_env("AWS_ENDPOINT_URL", "secretKeyRef", options.s3_secret, "AWS_ENDPOINT_URL", True))
    mlflow = (
        [
            _ref_env(key, "secretKeyRef", options.mlflow_secret, key, True)
            for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
        ]
        if options.mlflow_secret
        else []
    )
    return config + s3 + mlflow


def trainjob_manifest(
    name: str, train_argv: list[str], options: TrainJobOptions, *, run_key: str, split: int
) -> dict[str, Any]:
    """The TrainJob running ``dal train <train_argv>`` on ``options.nodes`` nodes (a pure function)."""
    if not _DNS1123_LABEL.match(name) or len(name) > MAX_NAME_LENGTH or not name[0].isalpha():
        raise DalError(f"TrainJob name {name!r}: not a DNS-1035 label of <= {MAX_NAME_LENGTH} characters")
    resources: dict[str, str] = {"cpu": options.cpu, "memory": options.memory}
    if options.gpus_per_node:
        resources["nvidia.com/gpu"] = str(options.gpus_per_node)
    labels = trainjob_labels(run_key, split)
    spec: dict[str, Any] = {
        "runtimeRef": {"name": options.runtime, "apiGroup": GROUP, "kind": options.runtime_kind},
        "labels": labels,  # onto the JobSet and its Jobs
        "trainer": {
            "image": options.image,
            "command": ["python", "-m", "torch.distributed.run"],
            "args": ["-m", "components.train", *train_argv],
            "numNodes": options.nodes,
            "numProcPerNode": options.procs_per_node,
            # Requests = limits: Guaranteed QoS, so that node pressure evicts other pods first.
            "resourcesPerNode": {"requests": dict(resources), "limits": dict(resources)},
            "env": _env(options),
        },
        # No podSpecOverrides: v2.1 renamed it (podTemplateOverrides) and v2.2 replaced it
        # (runtimePatches); the runtime's pod template names the account and the volumes.
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": {
            "name": name,
            "namespace": options.namespace,
            "labels": dict(labels),
            # A retried task adopts an existing TrainJob only when it would have created this one.
            "annotations": {SPEC_DIGEST_ANNOTATION: spec_digest(spec)},
        },
        "spec": spec,
    }


def spec_digest(spec: Mapping[str, Any]) -> str:
    return _digest(json.dumps(spec, sort_keys=True, separators=(",", ":")), 16)


# ---------------------------------------------------------------------------------------------
# The API


class NotFound(DalError):
    """The object does not exist (HTTP 404)."""


class AlreadyExists(DalError):
    """An object of that name exists (HTTP 409)."""


class ApiUnavailable(DalError):
    """The API server did not answer usefully (5xx, 429, connection); worth another try."""


class TrainJobApi(Protocol):
    """The Kubernetes calls ``run_trainjob`` makes (RBAC: k8s/base/rbac.yaml allows exactly these)."""

    def create_trainjob(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...

    def get_trainjob(self, namespace: str, name: str) -> dict[str, Any]: ...

    def delete_trainjob(self, namespace: str, name: str) -> None: ...

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...

    def read_pod_log(self, namespace: str, pod: str, container: str, tail_lines: int) -> str: ...


class KubernetesApi:
    """``TrainJobApi`` over the ``kubernetes`` client; objects come back as the API's JSON."""

    def __init__(self, custom_objects: Any, core: Any) -> None:
        self._custom = custom_objects
        self._core = core

    @classmethod
    def from_environment(cls) -> KubernetesApi:
        """In a pod: its service account; elsewhere: the kube config (kubectl's context)."""
        from kubernetes import client, config  # lazy: only the launcher needs the client

        try:
            config.load_incluster_config()
        except config.ConfigException:
            try:
                config.load_kube_config()
            except (config.ConfigException, OSError) as exc:
                raise DalError(
                    f"Kubernetes API: no in-cluster service account and no kube config ({exc})"
                ) from exc
        return cls(client.CustomObjectsApi(), client.CoreV1Api())

    def _call(self, what: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except Exception as exc:
            raise _api_error(what, exc) from exc

    def create_trainjob(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        what = f"create TrainJob {namespace}/{body['metadata']['name']}"
        # Strict: the API server rejects fields the installed CRD does not know instead of dropping them.
        return self._call(
            what,
            self._custom.create_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            body,
            field_validation="Strict",
        )

    def get_trainjob(self, namespace: str, name: str) -> dict[str, Any]:
        what = f"get TrainJob {namespace}/{name}"
        return self._call(
            what, self._custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
        )

    def delete_trainjob(self, namespace: str, name: str) -> None:
        # Foreground: the TrainJob goes only after its JobSet and pods, so a new one of the same name
        # never meets the old JobSet.
        self._call(
            f"delete TrainJob {namespace}/{name}",
            self._custom.delete_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            propagation_policy="Foreground",
        )

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        response = self._call(
            f"list pods {label_selector} in {namespace}",
            self._core.list_namespaced_pod,
            namespace,
            label_selector=label_selector,
            _preload_content=False,  # the API's JSON, not client models
        )
        return list(json.loads(response.data).get("items", []))

    def read_pod_log(self, namespace: str, pod: str, container: str, tail_lines: int) -> str:
        return str(
            self._call(
                f"read the log of pod {namespace}/{pod}",
                self._core.read_namespaced_pod_log,
                pod,
                namespace,
                container=container,
                tail_lines=tail_lines,
            )
        )


def _api_error(what: str, exc: Exception) -> DalError:
    import urllib3  # the kubernetes client's HTTP library

    status = getattr(exc, "status", None)
    if not isinstance(status, int):
        if isinstance(exc, OSError | urllib3.exceptions.HTTPError):  # no HTTP answer at all
            return ApiUnavailable(f"{what}: {type(exc).__name__}: {exc}")
        raise exc  # a bug, not the API server's answer
    detail = ""
    try:
        body = json.loads(getattr(exc, "body", "") or "{}")
        detail = body.get("message", "")
    except (TypeError, ValueError):
        detail = str(getattr(exc, "body", ""))[:500]
    message = f"{what}: HTTP {status} {getattr(exc, 'reason', '')}: {detail}".rstrip(": ")
    if status == 404:
        return NotFound(message)
    if status == 409:
        return AlreadyExists(message)
    if status == 429 or status >= 500:
        return ApiUnavailable(message)
    if status in (401, 403):
        return DalError(
            f"{message} (run the pipeline with service account dal-pipeline-runner, bound to the Role "
            "of k8s/base/rbac.yaml; is Kubeflow Trainer v2 installed?)"
        )
    return DalError(message)


# ---------------------------------------------------------------------------------------------
# Running it


@dataclasses.dataclass(frozen=True)
class TrainJobResult:
    name: str
    namespace: str
    state: Literal["Complete", "Failed", "Timeout"]
    seconds: float  # from the call to the end of the wait
    start: Literal["created", "adopted", "recreated"]  # what was found under that name
    deleted: bool  # by the keep policy
    message: str  # the terminal condition's reason and message


class TrainJobError(DalError):
    """The TrainJob failed or timed out; ``result`` says which and whether it was kept."""

    def __init__(self, message: str, result: TrainJobResult) -> None:
        super().__init__(message)
        self.result = result


def _condition(job: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in job.get("status", {}).get("conditions", []) or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


def terminal_state(job: Mapping[str, Any]) -> Literal["Complete", "Failed"] | None:
    for kind in ("Failed", "Complete"):  # Failed first: a job cannot be both, be pessimistic
        if _condition(job, kind):
            return kind  # type: ignore[return-value]
    return None


def _describe(job: Mapping[str, Any]) -> str:
    """One line of what the status says (compared between polls to log transitions only)."""
    status = job.get("status", {}) or {}
    parts = [
        f"{c.get('type')}={c.get('status')}" + (f" ({c['reason']})" if c.get("reason") else "")
        for c in status.get("conditions", []) or []
    ]
    for jobs in status.get("jobsStatus", []) or []:
        counts = " ".join(
            f"{k}={jobs.get(k, 0)}" for k in ("active", "ready", "succeeded", "failed", "suspended")
        )
        parts.append(f"jobs {jobs.get('name')}: {counts}")
    return "; ".join(parts) or "no status yet"


def _terminal_message(job: Mapping[str, Any], state: str) -> str:
    condition = _condition(job, state) or {}
    return ": ".join(p for p in (condition.get("reason", ""), condition.get("message", "")) if p)


def _should_delete(keep: Keep, state: str) -> bool:
    if keep == "always":
        return False
    # A timed-out TrainJob is still running and holding nodes: only keep=always leaves it.
    return keep == "never" or state in ("Complete", "Timeout")


def run_trainjob(
    name: str,
    train_argv: list[str],
    options: TrainJobOptions,
    *,
    run_key: str,
    split: int,
    api: TrainJobApi | None = None,
    log: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> TrainJobResult:
    """Create the TrainJob (or adopt the one a previous try of this task left), wait for it to
    complete, apply ``options.keep``; a failure or timeout raises TrainJobError after reporting
    the failed pods (container reason, exit code, last log lines)."""
    api = api if api is not None else KubernetesApi.from_environment()
    manifest = trainjob_manifest(name, train_argv, options, run_key=run_key, split=split)
    namespace = options.namespace
    started = clock()
    say = _Logger(log, f"TrainJob {namespace}/{name}")
    start = _create_or_adopt(api, manifest, options, say, clock, sleep)
    state, job = _wait(api, namespace, name, options, say, clock, sleep, started + options.timeout_s)
    message = _terminal_message(job, state) if state != "Timeout" else ""
    pods: list[dict[str, Any]] = []
    if state == "Complete":
        say(f"complete after {clock() - started:.0f}s" + (f" ({message})" if message else ""))
    else:
        pods = _pods(api, namespace, name)  # before any deletion takes them
        _report_pods(api, namespace, name, pods, options, say)
    deleted = False
    if _should_delete(options.keep, state):
        deleted = _delete(api, namespace, name, say)
    elif state != "Complete":
        say(
            f"kept (keep={options.keep}): kubectl -n {namespace} describe trainjob {name}; "
            "delete it when done"
        )
    result = TrainJobResult(name, namespace, state, clock() - started, start, deleted, message)
    if state == "Complete":
        return result
    kept = "deleted" if deleted else f"kept: kubectl -n {namespace} describe trainjob {name}"
    if state == "Timeout":
        raise TrainJobError(
            f"TrainJob {namespace}/{name} did not finish within {options.timeout_s}s "
            f"(last status: {_describe(job)}; pods: {_pod_summary(pods)}); {kept}",
            result,
        )
    failures = "; ".join(_failure_lines(pods)) or "no failed pod left to inspect"
    raise TrainJobError(f"TrainJob {namespace}/{name} failed ({message}); {failures}; {kept}", result)


class _Logger:
    def __init__(self, log: Callable[[str], None], prefix: str) -> None:
        self._log, self._prefix = log, prefix

    def __call__(self, text: str) -> None:
        self._log(f"{self._prefix}: {text}")


def _create_or_adopt(
    api: TrainJobApi,
    manifest: dict[str, Any],
    options: TrainJobOptions,
    say: _Logger,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> Literal["created", "adopted", "recreated"]:
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    recreated = False
    for _ in range(3):  # create; on a failed or vanishing one, create again; never loop forever
        try:
            api.create_trainjob(namespace, manifest)
        except AlreadyExists:
            pass
        else:
            trainer = manifest["spec"]["trainer"]
            say(
                f"{'re' if recreated else ''}created ({options.runtime_kind} {options.runtime}, "
                f"{trainer['numNodes']} nodes x {trainer['numProcPerNode']} processes, "
                f"image {trainer['image']})"
            )
            return "recreated" if recreated else "created"
        try:
            existing = api.get_trainjob(namespace, name)
        except NotFound:
            continue  # deleted in between: create it
        found = existing.get("metadata", {}).get("annotations", {}).get(SPEC_DIGEST_ANNOTATION)
        wanted = manifest["metadata"]["annotations"][SPEC_DIGEST_ANNOTATION]
        if found != wanted:
            raise DalError(
                f"TrainJob {namespace}/{name} exists with another spec ({SPEC_DIGEST_ANNOTATION} {found!r}, "
                f"this task's {wanted!r}): not adopting it; delete it (kubectl -n {namespace} delete "
                f"trainjob {name}) and retry"
            )
        deleting = bool(existing.get("metadata", {}).get("deletionTimestamp"))
        if not deleting and terminal_state(existing) != "Failed":
            created = existing.get("metadata", {}).get("creationTimestamp", "?")
            say(f"exists (created {created}, status: {_describe(existing)}): adopting it")
            return "adopted"
        if deleting:
            say("exists and is being deleted: waiting for it to go, then creating it anew")
        else:
            say(
                f"exists and failed ({_terminal_message(existing, 'Failed')}): deleting it and creating "
                "it anew (training resumes from the checkpoints in its run directory)"
            )
            api.delete_trainjob(namespace, name)
        _wait_gone(api, namespace, name, options, clock, sleep)
        recreated = True
    raise DalError(f"TrainJob {namespace}/{name}: could not create it (it keeps coming back)")


def _wait_gone(
    api: TrainJobApi,
    namespace: str,
    name: str,
    options: TrainJobOptions,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> None:
    deadline = clock() + DELETE_TIMEOUT_S
    while True:
        try:
            api.get_trainjob(namespace, name)
        except NotFound:
            return
        if clock() >= deadline:
            raise DalError(
                f"TrainJob {namespace}/{name} is still there {DELETE_TIMEOUT_S}s after its deletion "
                f"(finalizers? kubectl -n {namespace} get trainjob {name} -o yaml)"
            )
        sleep(min(options.poll_s, 10.0))


def _wait(
    api: TrainJobApi,
    namespace: str,
    name: str,
    options: TrainJobOptions,
    say: _Logger,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    deadline: float,
) -> tuple[Literal["Complete", "Failed", "Timeout"], dict[str, Any]]:
    last_seen, job, unavailable = "", {}, 0
    while True:
        try:
            job = api.get_trainjob(namespace, name)
            unavailable = 0
        except NotFound as exc:
            raise DalError(
                f"TrainJob {namespace}/{name} disappeared while it ran (deleted by someone?)"
            ) from exc
        except ApiUnavailable as exc:
            unavailable += 1
            if unavailable > MAX_UNAVAILABLE_POLLS:
                raise DalError(
                    f"TrainJob {namespace}/{name}: {unavailable} status reads failed in a row: {exc}"
                ) from exc
            say(f"status read failed ({exc}); retrying")
        else:
            seen = _describe(job)
            if seen != last_seen:
                say(seen)
                last_seen = seen
            state = terminal_state(job)
            if state:
                return state, job
        remaining = deadline - clock()
        if remaining <= 0:
            return "Timeout", job
        sleep(min(options.poll_s, remaining))


def _delete(api: TrainJobApi, namespace: str, name: str, say: _Logger) -> bool:
    try:
        api.delete_trainjob(namespace, name)
    except NotFound:
        return False
    say("deleted")
    return True


# ---------------------------------------------------------------------------------------------
# Failure reports


def _pods(api: TrainJobApi, namespace: str, name: str) -> list[dict[str, Any]]:
    try:
        pods = api.list_pods(namespace, f"{JOBSET_NAME_LABEL}={name}")
    except DalError:
        return []
    return sorted(pods, key=lambda p: p.get("metadata", {}).get("name", ""))


def _failed_containers(pod: Mapping[str, Any]) -> list[tuple[str, str, int | None, str]]:
    """(container, reason, exit code, message) of each container that ended badly or cannot start."""
    status = pod.get("status", {}) or {}
    found = []
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        state, last = container.get("state", {}) or {}, container.get("lastState", {}) or {}
        terminated = state.get("terminated") or last.get("terminated")
        waiting = state.get("waiting") or {}
        if terminated and terminated.get("exitCode", 0) != 0:
            found.append(
                (
                    container.get("name", "?"),
                    terminated.get("reason", "Error"),
                    terminated.get("exitCode"),
                    (terminated.get("message") or "").strip(),
                )
            )
        elif waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
            found.append(
                (container.get("name", "?"), waiting["reason"], None, (waiting.get("message") or "").strip())
            )
    return found


def _failure_lines(pods: list[dict[str, Any]]) -> list[str]:
    lines = []
    for pod in pods:
        for container, reason, code, message in _failed_containers(pod):
            exit_code = f" exit {code}" if code is not None else ""
            text = f"pod {pod['metadata']['name']} container {container}: {reason}{exit_code}"
            lines.append(text + (f" ({message})" if message else ""))
    return lines


def _pod_summary(pods: list[dict[str, Any]]) -> str:
    if not pods:
        return "none"
    parts = []
    for pod in pods:
        status = pod.get("status", {}) or {}
        why = [
            f"{c.get('reason')}: {c.get('message', '')}".strip(": ")
            for c in status.get("conditions", []) or []
            if c.get("status") == "False" and c.get("reason")
        ]
        parts.append(
            f"{pod['metadata']['name']} {status.get('phase', '?')}" + (f" ({'; '.join(why)})" if why else "")
        )
    return ", ".join(parts)


def _report_pods(
    api: TrainJobApi,
    namespace: str,
    name: str,
    pods: list[dict[str, Any]],
    options: TrainJobOptions,
    say: _Logger,
) -> None:
    if not pods:
        say(f"no pods left with {JOBSET_NAME_LABEL}={name}")
        return
    for pod in pods:
        pod_name = pod["metadata"]["name"]
        failed = _failed_containers(pod)
        if not failed:
            say(f"pod {pod_name}: {pod.get('status', {}).get('phase', '?')}")
            continue
        for line in _failure_lines([pod]):
            say(line)
        for container, _, code, _ in failed:
            if code is None:
                continue  # it never ran: no log
            try:
                text = api.read_pod_log(namespace, pod_name, container, options.log_lines)
            except DalError as exc:
                say(f"pod {pod_name} container {container}: log unavailable ({exc})")
                continue
            lines = text.splitlines()[-options.log_lines :]
            say(f"pod {pod_name} container {container}: last {len(lines)} log lines:")
            for line in lines:
                say(f"  | {line}")

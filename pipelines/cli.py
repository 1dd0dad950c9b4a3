"""``dal pipeline``: compile the KFP pipeline, submit it to a cluster, or run it locally.

* ``compile`` writes pipelines/compiled/dal_pipeline.yaml (checked in, golden-tested);
* ``submit`` uploads it with kfp.Client to ``$KFP_HOST`` and starts a run;
* ``run`` executes the same pipeline on this machine with kfp.local's SubprocessRunner (no
  Docker), logging to a local MLflow store: the laptop / CI path of ``make run``.

Pipeline parameters are flags generated from the pipeline function's signature
(``--dataset prid2011 --nodes 2``), so they are declared once, in pipelines/dal_pipeline.py; a
step's options are ``FIELD=VALUE`` pairs of its config dataclass (``--train lr=0.01 steps=300
--evaluate max_rank=50``), validated by that dataclass before anything is compiled or submitted.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

COMPILED = Path(__file__).resolve().parent / "compiled" / "dal_pipeline.yaml"
log = logging.getLogger(__name__)


def _pipeline_parameters() -> dict[str, inspect.Parameter]:
    from pipelines.dal_pipeline import dal_pipeline

    return dict(inspect.signature(dal_pipeline.pipeline_func).parameters)


def step_options() -> dict[str, Any]:
    """The pipeline's options parameters (``train_options``, ...) and the StepOptions behind them."""
    from components.evaluate.config import EVALUATE_OPTIONS
    from components.extract.config import EXTRACT_OPTIONS
    from components.ingest.config import INGEST_OPTIONS
    from components.train.config import TRAIN_OPTIONS
    from components.train.trainjob import TRAINJOB_OPTIONS

    options = (INGEST_OPTIONS, TRAIN_OPTIONS, EXTRACT_OPTIONS, EVALUATE_OPTIONS, TRAINJOB_OPTIONS)
    found = {o.parameter: o for o in options}
    declared = {n for n, p in _pipeline_parameters().items() if isinstance(p.default, dict)}
    if declared != set(found):  # the pipeline and this list must not drift apart
        raise RuntimeError(f"pipeline options parameters {sorted(declared)} != {sorted(found)}")
    return found


def _add_pipeline_flags(parser: argparse.ArgumentParser) -> None:
    options = step_options()
    for name, param in _pipeline_parameters().items():
        if name in options:
            step = options[name]
            listed = ", ".join(f"{k}={v}" for k, v in step.defaults().items())
            parser.add_argument(
                "--" + name.removesuffix("_options"),
                dest=name,
                nargs="+",
                action="extend",
                default=None,
                metavar="FIELD=VALUE",
                help=f"{step.config_cls.__name__} options (defaults: {listed})",
            )
            continue
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=type(param.default),
            default=None,
            help=f"pipeline parameter (default: {param.default!r})",
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    compile_parser = sub.add_parser("compile", help="write the compiled pipeline YAML")
    compile_parser.add_argument("--output", default=str(COMPILED), help="YAML file to write")

    submit = sub.add_parser("submit", help="upload the compiled pipeline to $KFP_HOST and start a run")
    submit.add_argument("--package", default=str(COMPILED), help="compiled pipeline YAML")
    submit.add_argument("--experiment", default="dal", help="KFP experiment name")
    submit.add_argument("--run-name", default="", help="KFP run name (default: generated)")
    submit.add_argument("--namespace", default=os.environ.get("KFP_NAMESPACE", ""), help="KFP namespace")
    submit.add_argument("--service-account", default="dal-pipeline-runner", help="pods' service account")
    _add_pipeline_flags(submit)

    run = sub.add_parser("run", help="run the pipeline locally (kfp.local SubprocessRunner, no Docker)")
    run.add_argument("--work", default=os.environ.get("WORK", "work"), help="folder for data, runs, MLflow")
    _add_pipeline_flags(run)


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The pipeline arguments given on the command line; each step's options complete (defaults
    filled in) and checked by its config dataclass: a bad value stops here, naming the field."""
    from components.ingest.config import CHECK_PATHS
    from components.train.config import TRAIN_OPTIONS
    from components.train.launch import check_world_size

    parameters = _pipeline_parameters()
    given = {k: getattr(args, k) for k in parameters if getattr(args, k, None) is not None}
    # Ingest options depend on the layout (``index`` is for tracklets only): checked with the dataset.
    known = {
        "ingest_options": {"dataset": given.get("dataset", parameters["dataset"].default), **CHECK_PATHS}
    }
    for name, step in step_options().items():
        if name in given:
            given[name] = step.validate(step.parse(given[name]), **known.get(name, {}))
    train = TRAIN_OPTIONS.build(given.get("train_options", {}), dataset="-", output="-")
    nodes, gpus = (given.get(k, parameters[k].default) for k in ("nodes", "gpus"))
    check_world_size(train, nodes=nodes, gpus=gpus)
    return given


def compile_pipeline(output: str | Path = COMPILED) -> Path:
    from kfp import compiler

    from pipelines.dal_pipeline import dal_pipeline

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(dal_pipeline, str(output))
    output.write_text(_sorted_header_defaults(output.read_text()))
    return output


_DICT_DEFAULT = re.compile(r"^(#\s+\w+: dict \[Default: )(\{.*\})(\])$")


def _sorted_header_defaults(text: str) -> str:
    """KFP's header comment prints a dict parameter's default in protobuf map order, which
    changes from one process to the next; sort it so that the compiled file is reproducible
    (the spec below it is already sorted)."""
    lines = []
    for line in text.splitlines(keepends=True):
        match = _DICT_DEFAULT.match(line.rstrip("\n"))
        if match:
            value = ast.literal_eval(match.group(2))
            line = f"{match.group(1)}{dict(sorted(value.items()))!r}{match.group(3)}\n"
        lines.append(line)
    return "".join(lines)


def submit(args: argparse.Namespace) -> int:
    import kfp

    arguments = _given(args)  # before any connection: a bad option fails here, naming the field
    host = os.environ.get("KFP_HOST", "")
    if not host:
        print(
            "dal pipeline submit: set KFP_HOST (e.g. https://kubeflow.example.com/pipeline)", file=sys.stderr
        )
        return 2
    # Credentials, when the endpoint needs them, come from the environment (KFP_TOKEN) only.
    client = kfp.Client(host=host, existing_token=os.environ.get("KFP_TOKEN") or None)
    run = client.create_run_from_pipeline_package(
        args.package,
        arguments=arguments,
        run_name=args.run_name or None,
        experiment_name=args.experiment,
        namespace=args.namespace or None,
        service_account=args.service_account or None,
    )
    print(json.dumps({"run_id": run.run_id, "url": f"{host.rstrip('/')}/#/runs/details/{run.run_id}"}))
    return 0


def local_defaults(work: Path) -> dict[str, Any]:
    """Where a local run keeps everything: one folder, an sqlite MLflow store beside its artifacts."""
    return {
        "storage_root": str(work / "store"),
        "mlflow_tracking_uri": f"sqlite:///{work / 'mlflow.db'}",
        "mlflow_artifact_location": (work / "mlartifacts").as_uri(),
    }


def run_local(arguments: dict[str, Any], work: Path) -> dict[str, Any]:
    """Run the pipeline with kfp.local; returns the parent MLflow run's metrics and children."""
    from kfp import local

    from pipelines.dal_pipeline import dal_pipeline

    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    arguments = {**local_defaults(work), **arguments}
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(work / "kfp"))
    dal_pipeline(**arguments)
    return summarize_latest_run(arguments["mlflow_tracking_uri"], arguments.get("mlflow_experiment", "dal"))


def summarize_latest_run(tracking_uri: str, experiment: str) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    from components.common.tracking import PIPELINE_JOB_TAG

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return {}
    parents = client.search_runs(
        [found.experiment_id],
        filter_string="tags.`dal.step` = 'pipeline'",
        order_by=["start_time DESC"],
        max_results=1,
    )
    if not parents:
        return {}
    parent = parents[0]
    children = client.search_runs(
        [found.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    return {
        "parent_run_id": parent.info.run_id,
        "status": parent.info.status,
        "pipeline_job_id": parent.data.tags.get(PIPELINE_JOB_TAG, ""),
        "metrics": dict(sorted(parent.data.metrics.items())),
        "children": sorted(c.info.run_name for c in children),
    }


def main(args: argparse.Namespace) -> int:
    if args.action == "compile":
        print(compile_pipeline(args.output))
        return 0
    if args.action == "submit":
        return submit(args)
    work = Path(args.work)
    summary = run_local(_given(args), work)
    print(json.dumps(summary, indent=2))
    metrics = summary.get("metrics", {})
    if metrics:
        from components.evaluate.metrics import METRIC_KEYS

        def shown(prefix: str) -> str:
            return ", ".join(
                f"{k} {100 * metrics[prefix + k]:.1f}%" for k in METRIC_KEYS if prefix + k in metrics
            )

        print(f"\nmetrics ({int(metrics.get('num_splits', 1))} split(s)): {shown('')}")
        if "initial_rank1" in metrics:
            print(f"initial weights, untrained:   {shown('initial_')}")
    print(f"\nMLflow dashboard: make mlflow-ui  (store: {work.resolve() / 'mlflow.db'})")
    return 0 if summary.get("status") == "FINISHED" else 1

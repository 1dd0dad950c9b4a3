"""Learning-quality benchmark (issue 6): does unsupervised DAL learn, and how close does it get to labels?

For the same backbone, image size and step budget, on two synthetic datasets built on real
benchmark structure (scripts/bench_accuracy_data.py), it scores with the official protocols:

* hand-crafted matching that learns nothing: tracklet-mean colour histograms and raw pixels;
* the untrained backbone (the seeded random init that training starts from; ImageNet weights
  too with ``--weights``);
* DAL, unsupervised (tracklet and camera ids only);
* the supervised reference (identity classification on person ids): the upper bound.

Every method runs through the product's own steps, in-process: ``dal synth`` -> ``dal ingest``
(cached) -> ``dal train`` (with periodic evaluation) -> ``dal extract`` -> ``dal evaluate``.
Outputs in ``--work`` (default ``work/bench-accuracy``): ``results.json``, ``results.md`` and
``curves.png``; in MLflow (``$MLFLOW_TRACKING_URI``, else an sqlite store in the work folder,
experiment ``dal-bench-accuracy``) a parent run ``bench-accuracy`` with the table, the curves,
``<dataset>.<method>.<metric>`` metrics and one child run per method x dataset (the steps' runs
nested under it).

    .venv/bin/python scripts/bench_accuracy.py                 # the full benchmark (~30 min, 2 cores)
    .venv/bin/python scripts/bench_accuracy.py --quick         # a tiny version for CI (~1-2 min)
    .venv/bin/python scripts/bench_accuracy.py --weights imagenet_mobilenet_v1.pt
    .venv/bin/python scripts/bench_accuracy.py --datasets prid2011 --methods dal supervised \\
        --set dal.warmup_epochs=4 --set lr=0.01                # experiments

Timings on a shared machine swing several-fold: the load average is recorded with the results.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from components.common import storage, tracking
from components.common.config import ConfigError, parse_field
from components.common.dataset import Dataset
from components.evaluate.config import EvaluateConfig
from components.evaluate.metrics import METRIC_KEYS
from components.evaluate.run import run as evaluate_run
from components.extract.config import ExtractConfig
from components.extract.run import run as extract_run
from components.model.catalog import IMAGENET
from components.train.config import TrainConfig
from components.train.data import build_index
from components.train.monitor import AssociationMonitor
from components.train.run import run as train_run
from scripts import bench_accuracy_report as report
from scripts.bench_accuracy_baselines import FEATURES, handcrafted_features, untrained_model
from scripts.bench_accuracy_data import DataSettings, PreparedData, prepare

log = logging.getLogger("bench_accuracy")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = REPO.parent / "shared" / "data" / "dal-reference"
EXPERIMENT = "dal-bench-accuracy"
HANDCRAFTED = tuple(FEATURES)  # colour_histogram, raw_pixels
# Trained methods and their objective: the supervised reference twice, with DAL's recipe (the
# controlled comparison) and with colour jitter (labels make it robust to the camera colour casts
# that jitter imitates; DAL's intra-camera association relies on colour and loses with it).
OBJECTIVES = {"dal": "dal", "supervised": "supervised", "supervised_jitter": "supervised"}
TRAINED = tuple(OBJECTIVES)
METHODS = (*HANDCRAFTED, "untrained", "untrained_imagenet", *TRAINED)
# TrainConfig fields that train_config() sets itself (--steps, --backbone, --seed, ... change them).
SET_BY_BENCHMARK = frozenset(
    [
        "dataset",
        "output",
        "split",
        "objective",
        "backbone",
        "weights",
        "image_height",
        "image_width",
        "batch_size",
        "steps",
        "seed",
        "device",
        "workers",
        "checkpoint_every",
        "keep_checkpoints",
        "log_every",
        "eval_every",
        "eval_max_frames",
    ]
)
DIFFICULTY = ("color_cast", "occlusion_prob", "clutter", "back_view_prob")


@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchSettings:
    """One benchmark setting: the datasets and what every trained method shares."""

    datasets: tuple[DataSettings, ...]
    steps: tuple[tuple[str, int], ...]  # per dataset: the step budget of DAL and of the supervised run
    backbone: str
    weights: str  # every trained method's init and the untrained_imagenet row's; "": random init
    image_height: int
    image_width: int
    batch_size: int
    # TrainConfig fields for every trained method, then per method (a key of OBJECTIVES).
    train: tuple[tuple[str, Any], ...] = ()
    per_method: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
    eval_points: int = 10  # periodic evaluations per training run (the curves)
    eval_max_frames: int = 8
    seed: int = 0

    def train_fields(self, method: str) -> dict[str, Any]:
        return {**dict(self.train), **dict(dict(self.per_method).get(method, ()))}

    def line(self) -> str:
        steps = ", ".join(f"{name} {n}" for name, n in self.steps)
        shared = ", ".join(f"{k}={v}" for k, v in self.train)
        own = "; ".join(f"{m}: " + ", ".join(f"{k}={v}" for k, v in fields) for m, fields in self.per_method)
        init = {"": "random init", "imagenet": "bundled ImageNet weights"}.get(self.weights, self.weights)
        return (
            f"backbone {self.backbone} from {init}, {self.image_height}x{self.image_width} input, "
            f"batch {self.batch_size}, "
            f"steps ({steps}), {shared or 'TrainConfig defaults'}{'; ' + own if own else ''}, "
            f"seed {self.seed}, {self.eval_points} evaluations per run on <= {self.eval_max_frames} "
            "frames per test tracklet"
        )


JITTER = (("supervised_jitter", (("color_jitter", 0.3),)),)
# The full benchmark, about 40 minutes on 2 CPU cores (README, results section). Input 96x48 (frames
# rendered at 64x32): the ImageNet features need it (untrained ImageNet rank-1 on PRID2011 5.6 % at
# 64x32, 14.6 % at 96x48 and at 128x64); batch 64 x 400 steps are ~5 epochs of PRID2011 (warm-up 2)
# and ~2.5 of the MARS subset (warm-up 1), and six such runs fit the 45-minute budget.
FULL = BenchSettings(
    datasets=(
        DataSettings(name="prid2011", frame_step=4, max_identities=0, image_height=64, image_width=32),
        DataSettings(name="mars", frame_step=16, max_identities=100, image_height=64, image_width=32),
    ),
    steps=(("prid2011", 400), ("mars", 400)),
    backbone="mobilenet_v2",
    weights=IMAGENET,
    image_height=96,
    image_width=48,
    batch_size=64,
    # MARS's default (SGD 0.01, x0.1 at half the steps) is meant for 100k steps: RMSProp for all.
    train=(("optimizer", "rmsprop"),),
    per_method=JITTER,
    eval_points=6,
    eval_max_frames=4,
)
# CI's smoke test: tiny subsets, a tiny backbone and a few steps (about 1-2 minutes).
QUICK = BenchSettings(
    datasets=(
        DataSettings(name="prid2011", frame_step=8, max_identities=8, image_height=32, image_width=16),
        DataSettings(name="mars", frame_step=12, max_identities=4, image_height=32, image_width=16),
    ),
    steps=(("prid2011", 40), ("mars", 40)),
    backbone="mobilenet_v2",  # from the bundled ImageNet weights, as the full benchmark
    weights=IMAGENET,
    image_height=32,
    image_width=16,
    batch_size=32,
    per_method=JITTER,
    eval_points=2,
    eval_max_frames=4,
)


# -- MLflow ------------------------------------------------------------------------------------
class Tracker:
    """The parent run ``bench-accuracy`` and its children (one per method x dataset)."""

    def __init__(self, uri: str, artifact_location: str, params: dict[str, Any]) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.job_id = f"bench-accuracy-{uuid.uuid4().hex[:12]}"
        self.parent = tracking.start_pipeline_run(
            uri, EXPERIMENT, self.job_id, "bench-accuracy", params, artifact_location
        )
        self.client = MlflowClient(uri)
        self.client.set_tag(self.parent, "dal.bench", "accuracy")
        self.experiment_id = self.client.get_run(self.parent).info.experiment_id

    def child(self, dataset: str, method: str) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{dataset}/{method}",
            tags={"mlflow.parentRunId": self.parent, "dal.dataset": dataset, "dal.method": method},
        )
        return run.info.run_id

    def finish_child(self, run_id: str, metrics: dict[str, float], ok: bool) -> None:
        if metrics:
            tracking.log_run_metrics(self.uri, run_id, metrics)
        self.client.set_terminated(run_id, status="FINISHED" if ok else "FAILED")

    def log_results(self, results: dict[str, Any], files: dict[str, Path]) -> None:
        flat = {}
        for dataset, entry in results["datasets"].items():
            for method, result in entry["methods"].items():
                for key in (*METRIC_KEYS, "seconds"):
                    if key in result["metrics"] or key == "seconds":
                        value = result["seconds"] if key == "seconds" else result["metrics"][key]
                        flat[f"{dataset}.{method}.{key}"] = value
            for name, check in entry.get("targets", {}).items():
                flat[f"{dataset}.target.{name}"] = check["value"]
        flat["wall_seconds"] = results["run"]["seconds"]
        tracking.log_run_metrics(self.uri, self.parent, flat)
        for path in files.values():
            self.client.log_artifact(self.parent, str(path))

    def finish(self, ok: bool) -> None:
        tracking.finish_pipeline_run(self.uri, EXPERIMENT, self.job_id, ok)


# -- one method on one dataset -----------------------------------------------------------------
@dataclasses.dataclass
class Context:
    settings: BenchSettings
    work: Path
    tracker: Tracker
    device: str
    workers: int


def _step_tracking(ctx: Context, parent: str, name: str) -> dict[str, str]:
    return {
        "mlflow_tracking_uri": ctx.tracker.uri,
        "mlflow_experiment": EXPERIMENT,
        "mlflow_parent_run_id": parent,
        "mlflow_run_name": name,
    }


def train_config(ctx: Context, data: PreparedData, method: str, output: str, parent: str) -> TrainConfig:
    s = ctx.settings
    steps = dict(s.steps)[data.settings.name]
    return TrainConfig(
        dataset=data.root,
        output=output,
        split=0,
        objective=OBJECTIVES[method],
        backbone=s.backbone,
        weights=s.weights,
        image_height=s.image_height,
        image_width=s.image_width,
        batch_size=s.batch_size,
        steps=steps,
        seed=s.seed,
        device=ctx.device,
        workers=ctx.workers,
        checkpoint_every=steps,
        keep_checkpoints=1,
        log_every=max(1, min(25, steps // 20)),
        eval_every=max(1, steps // s.eval_points),
        eval_max_frames=s.eval_max_frames,
        **s.train_fields(method),
        **_step_tracking(ctx, parent, "train"),
    )


def run_method(ctx: Context, data: PreparedData, method: str) -> dict[str, Any]:
    """Features of the test tracklets by ``method``, scored by ``dal evaluate``; the child run's result."""
    name = data.settings.name
    folder = ctx.work / "runs" / name / method
    shutil.rmtree(folder, ignore_errors=True)  # a run of the benchmark never resumes an older one
    folder.mkdir(parents=True)
    child = ctx.tracker.child(name, method)
    started = time.perf_counter()
    features = str(folder / "features.parquet")
    result: dict[str, Any] = {}
    ok = False
    try:
        if method in HANDCRAFTED:
            handcrafted_features(data.root, 0, method, features)
        else:
            if method in TRAINED:
                summary = train_run(train_config(ctx, data, method, str(folder / "train"), child))
                model = summary.model_uri
                result["train"] = {
                    k: getattr(summary, k) for k in ("steps", "optimizer", "lr", "warmup_steps")
                }
                result["train"]["final"] = summary.final
                result["history"] = summary.eval_history
            else:
                model = str(folder / "model.pt")
                weights = ctx.settings.weights if method == "untrained_imagenet" else ""
                size = (ctx.settings.image_height, ctx.settings.image_width)
                untrained_model(ctx.settings.backbone, size, ctx.settings.seed, model, weights)
            extract_run(
                ExtractConfig(
                    dataset=data.root,
                    model=model,
                    output=features,
                    subset="test",
                    split=0,
                    device=ctx.device,
                    progress=False,
                    **_step_tracking(ctx, child, "extract"),
                )
            )
        evaluated = evaluate_run(
            EvaluateConfig(
                dataset=data.root,
                features=features,
                output=str(folder / "evaluation"),
                split=0,
                **_step_tracking(ctx, child, "evaluate"),
            )
        )
        result["metrics"] = {k: evaluated["metrics"][k] for k in (*METRIC_KEYS, "num_valid_queries")}
        result["protocol"] = evaluated["protocol"]
        ok = True
    finally:
        result["seconds"] = round(time.perf_counter() - started, 1)
        ctx.tracker.finish_child(child, {**result.get("metrics", {}), "seconds": result["seconds"]}, ok)
    log.info(
        "%s / %s: rank-1 %.1f %% (%.0f s)", name, method, 100 * result["metrics"]["rank1"], result["seconds"]
    )
    return result


# -- the whole benchmark -----------------------------------------------------------------------
def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()


def _commit() -> str:
    commit = _git("rev-parse", "--short=12", "HEAD") or "unknown"
    return commit + ("+changes" if _git("status", "--porcelain", "--untracked-files=no") else "")


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _counts_line(dataset: Dataset) -> str:
    train = dataset.subset_tracklets("train", 0)
    test = dataset.subset_tracklets("test", 0)
    return (
        f"train {train['person_id'].nunique()} persons / {len(train)} tracklets / "
        f"{int(train['num_frames'].sum())} frames, test {test['person_id'].nunique()} persons "
        f"(incl. junk/distractor ids) / {len(test)} tracklets / {int(test['num_frames'].sum())} frames"
    )


def _chance(dataset: Dataset) -> float:
    return AssociationMonitor(dataset, build_index(dataset, 0), 0).chance


def run_benchmark(settings: BenchSettings, args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    uri = tracking.resolve_tracking_uri(args.mlflow_tracking_uri) or f"sqlite:///{work / 'mlflow.db'}"
    methods = [m for m in args.methods if m != "untrained_imagenet" or settings.weights]
    started, load_start = time.perf_counter(), _load()
    params = {
        "settings": settings.line(),
        "methods": methods,
        "quick": args.quick,
        "weights": settings.weights,
    }
    tracker = Tracker(uri, (work / "mlartifacts").as_uri(), params)
    ctx = Context(settings, work, tracker, args.device, args.workers)
    results: dict[str, Any] = {"datasets": {}, "curves": {}}
    ok = False
    try:
        for data_settings in settings.datasets:
            if data_settings.name not in args.datasets:
                continue
            data = prepare(data_settings, str(args.reference_dir), work)
            entry: dict[str, Any] = {
                "description": data_settings.describe(),
                "root": data.root,
                "counts": data.counts,
                "counts_line": _counts_line(data.dataset),
                "prepare_seconds": data.seconds,
                "methods": {},
            }
            results["datasets"][data_settings.name] = entry
            for method in methods:
                entry["methods"][method] = run_method(ctx, data, method)
            entry["targets"] = report.targets(data_settings.name, entry["methods"])
            entry["association_chance"] = _chance(data.dataset)
            results["curves"][data_settings.name] = {
                m: entry["methods"][m].pop("history") for m in TRAINED if m in entry["methods"]
            }
        results["run"] = {
            "commit": _commit(),
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, device {args.device}",
            "seconds": round(time.perf_counter() - started, 1),
            "load_start": load_start,
            "load_end": _load(),
            "settings": json.loads(json.dumps(dataclasses.asdict(settings), default=str)),
            "settings_line": settings.line(),
            "quick": args.quick,
            "mlflow": {"tracking_uri": uri, "experiment": EXPERIMENT, "parent_run_id": tracker.parent},
        }
        files = write_outputs(results, work)
        tracker.log_results(results, files)
        ok = True
    finally:
        tracker.finish(ok)
    return results


def write_outputs(results: dict[str, Any], work: Path) -> dict[str, Path]:
    chance = {name: entry["association_chance"] for name, entry in results["datasets"].items()}
    files = {"json": work / "results.json", "markdown": work / "results.md", "curves": work / "curves.png"}
    storage.write_json(str(files["json"]), results)
    storage.write_bytes(str(files["markdown"]), report.markdown(results).encode())
    storage.write_bytes(str(files["curves"]), report.curves_png(results["curves"], chance))
    return files


DATA_FIELDS = ("frame_step", "max_identities")


def _data_fields(items: list[str], name: str) -> dict[str, int]:
    """``--data NAME.FIELD=N`` items that concern dataset ``name``."""
    fields = {}
    for item in items:
        key, equals, value = item.partition("=")
        dataset, _, field = key.partition(".")
        if dataset not in ("prid2011", "mars") or field not in DATA_FIELDS or not value.isdigit():
            raise SystemExit(f"--data {item}: expected (prid2011|mars).({'|'.join(DATA_FIELDS)})=<integer>")
        if dataset == name:
            fields[field] = int(value)
    return fields


def apply_overrides(settings: BenchSettings, args: argparse.Namespace) -> BenchSettings:
    """``--steps``, ``--backbone``, ``--set [dal.|supervised.]FIELD=VALUE`` on top of a preset."""
    train, per_method = dict(settings.train), {m: dict(f) for m, f in settings.per_method}
    train_fields = {
        f.name
        for f in dataclasses.fields(TrainConfig)
        if f.name not in SET_BY_BENCHMARK and not f.name.startswith("mlflow_")
    }
    for item in args.set:
        key, equals, value = item.partition("=")
        method, _, field = key.rpartition(".")
        if field not in train_fields or (method and method not in TRAINED) or not equals:
            raise SystemExit(
                f"--set {item}: expected [<trained method>.]<TrainConfig field>=<value>, not one the "
                "benchmark sets itself (--steps, --backbone, --seed, --image-size change those)"
            )
        try:
            parsed = parse_field(TrainConfig, field, value)  # as `dal train --FIELD VALUE` parses it
        except ConfigError as exc:
            raise SystemExit(f"--set {item}: {exc}") from exc
        (per_method.setdefault(method, {}) if method else train)[field] = parsed
    changes: dict[str, Any] = {
        "train": tuple(train.items()),
        "per_method": tuple((m, tuple(f.items())) for m, f in per_method.items()),
    }
    difficulty = {}
    for item in args.synth:
        key, equals, value = item.partition("=")
        if key not in DIFFICULTY or not equals:
            raise SystemExit(f"--synth {item}: expected one of {', '.join(DIFFICULTY)}=<0..1>")
        difficulty[key] = float(value)
    datasets = []
    for d in settings.datasets:
        if difficulty:
            d = dataclasses.replace(d, difficulty=tuple({**dict(d.difficulty), **difficulty}.items()))
        datasets.append(dataclasses.replace(d, **_data_fields(args.data, d.name)))
    changes["datasets"] = tuple(datasets)
    if args.steps:
        changes["steps"] = tuple((name, args.steps) for name, _ in settings.steps)
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.backbone:
        changes["backbone"] = args.backbone
    if args.weights is not None:
        changes["weights"] = args.weights
    if args.image_size:
        changes["image_height"], changes["image_width"] = args.image_size
    settings = dataclasses.replace(settings, **changes)
    for method in TRAINED:  # fail now on a bad field value, not after the first datasets ran
        TrainConfig(
            dataset="-", output="-", backbone=settings.backbone, weights=settings.weights,
            **settings.train_fields(method),
        )  # fmt: skip
    return settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny datasets, backbone and step budget (CI smoke)"
    )
    parser.add_argument(
        "--work", default=os.environ.get("BENCH_WORK", "work/bench-accuracy"), help="output folder"
    )
    parser.add_argument(
        "--reference-dir", type=Path, default=Path(os.environ.get("DAL_REFERENCE_DIR", DEFAULT_REFERENCE))
    )
    parser.add_argument("--datasets", nargs="+", default=["prid2011", "mars"], choices=["prid2011", "mars"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument(
        "--weights",
        default=None,
        help="init of every trained method and of the untrained_imagenet row: imagenet (bundled, the "
        "preset's), a weights file of the backbone, or '' (random init: the ablation, no such row)",
    )
    parser.add_argument(
        "--steps", type=int, default=0, help="step budget of every trained run (0: the preset's)"
    )
    parser.add_argument("--backbone", default="", help="backbone of every method (default: the preset's)")
    parser.add_argument(
        "--seed", type=int, help="seed of every model's init and data order (default: the preset's, 0)"
    )
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="input size of every model (default: preset's)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="[METHOD.]FIELD=VALUE",
        help=f"TrainConfig field for every trained method, or for one ({', '.join(TRAINED)})",
    )
    parser.add_argument(
        "--synth",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help=f"a difficulty knob of the synthetic data ({', '.join(DIFFICULTY)}), for experiments",
    )
    parser.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="DATASET.FIELD=N",
        help="a dataset setting: mars.max_identities=100, prid2011.frame_step=2, ...",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all CPUs)")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers while training")
    parser.add_argument(
        "--mlflow-tracking-uri", default="", help="default: $MLFLOW_TRACKING_URI, else <work>/mlflow.db"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    for noisy in ("alembic", "mlflow", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parse_args(argv)
    if not (args.reference_dir / "info").is_dir() or not (args.reference_dir / "datasplits").is_dir():
        print(
            f"bench_accuracy: reference data not found at {args.reference_dir} (--reference-dir)",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    try:
        settings = apply_overrides(QUICK if args.quick else FULL, args)
    except ConfigError as exc:
        print(f"bench_accuracy: {exc}", file=sys.stderr)
        return 2
    if settings.weights not in ("", IMAGENET) and not storage.exists(settings.weights):
        print(f"bench_accuracy: --weights {settings.weights}: file not found", file=sys.stderr)
        return 2
    results = run_benchmark(settings, args)
    print()
    print(report.text_table(results))
    work = Path(args.work).resolve()
    minutes = results["run"]["seconds"] / 60
    print(f"\nwall time {minutes:.1f} min; results: {work}/results.json, results.md, curves.png")
    print(f"MLflow: {results['run']['mlflow']['tracking_uri']} (experiment {EXPERIMENT}, run bench-accuracy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

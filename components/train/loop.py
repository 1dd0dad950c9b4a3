"""``dal train``: the training loop (one process, or one per rank under ``torchrun``).

Rank 0 alone logs to MLflow and writes checkpoints and ``model.pt``; every rank resumes from
the newest checkpoint in ``<output>/checkpoints`` by itself. Per step: forward (bf16 autocast
and channels_last on CUDA only), the objective (DAL: cross-camera association from
``warmup_steps`` on), a finite-loss check agreed by all ranks, backward, clip by value,
optimizer and schedule step, EMA update. SIGTERM saves a checkpoint after the current step and
stops with ``TrainingPreempted`` (exit code 143 once the CLI maps it; see checkpoint.py).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from components.common import storage
from components.common.config import to_dict
from components.common.dataset import Dataset
from components.common.distributed import DistEnv, barrier, distributed
from components.common.errors import DalError
from components.common.tracking import RunLogger, step_run
from components.model.artifact import IMAGENET_MEAN, IMAGENET_STD
from components.model.backbones import build_backbone, load_weights
from components.model.embed import forward_precision, model_input
from components.train import checkpoint as ckpt
from components.train.anchors import initial_anchor_features
from components.train.config import (
    TrainConfig,
    resolve_lr,
    resolve_optimizer,
    resolve_steps,
    resolve_warmup_epochs,
)
from components.train.data import (
    StreamOptions,
    TrainIndex,
    TrainStream,
    build_index,
    make_loader,
    plan_row_groups,
    usable_workers,
)
from components.train.ema import WeightEma
from components.train.monitor import AssociationMonitor, RunningMeans, Throughput
from components.train.objectives import Network, build_objective
from components.train.optim import build_optimizer, build_schedule
from components.train.publish import publish_initial_model, publish_model
from components.train.validation import PeriodicEvaluation, Validator

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"  # rank 0's return value, for callers that launch torchrun
# Fields that must match to continue a run from its checkpoint (steps may grow).
_RESUME_FIELDS = (
    "backbone", "objective", "image_height", "image_width", "batch_size", "seed", "split", "precision",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything resolved from the config and the dataset before training starts."""

    dataset_name: str
    optimizer: str
    lr: float
    steps: int
    steps_per_epoch: float
    warmup_steps: int
    rank_batch: int
    sync_batchnorm: bool
    index: TrainIndex

    def params(self) -> dict[str, Any]:
        return {
            "resolved_optimizer": self.optimizer,
            "resolved_lr": self.lr,
            "resolved_steps": self.steps,
            "steps_per_epoch": round(self.steps_per_epoch, 3),
            "warmup_steps": self.warmup_steps,
            "rank_batch_size": self.rank_batch,
            "sync_batchnorm_used": self.sync_batchnorm,
            "dataset_name": self.dataset_name,
            "train_frames": self.index.num_frames,
            "tracklets_per_camera": list(self.index.tracklets_per_camera),
        }


@dataclasses.dataclass
class State:
    """The mutable training state that a checkpoint captures."""

    network: Network
    objective: nn.Module
    ema: WeightEma
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    step: int = 0


def run(config: TrainConfig) -> dict[str, Any]:
    if config.device == "cuda" and not torch.cuda.is_available():
        raise DalError("device: cuda was requested but CUDA is not available")
    with distributed(config.device) as env:
        return _train(config, env)


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype of weights, anchors and losses (bf16 autocast, where on, covers the forward only)."""
    return torch.float64 if precision == "fp64" else torch.float32


def make_plan(config: TrainConfig, dataset: Dataset, env: DistEnv) -> Plan:
    index = build_index(dataset, config.split, with_classes=config.objective == "supervised")
    optimizer = resolve_optimizer(config, dataset.name)
    steps_per_epoch = index.num_frames / config.batch_size
    # As the reference: association starts at step >= int(frames / batch) * warm-up epochs.
    warmup_steps = int(int(steps_per_epoch) * resolve_warmup_epochs(config, dataset.name))
    cuda_ddp = env.is_distributed and env.device.type == "cuda"
    if config.sync_batchnorm == "on" and env.is_distributed and not cuda_ddp:
        raise DalError("sync_batchnorm: 'on' needs CUDA (torch's SyncBatchNorm has no CPU kernel); use off")
    return Plan(
        dataset_name=dataset.name,
        optimizer=optimizer,
        lr=resolve_lr(config, optimizer),
        steps=resolve_steps(config, dataset.name),
        steps_per_epoch=steps_per_epoch,
        warmup_steps=warmup_steps,
        rank_batch=config.rank_batch_size(env.world_size),
        sync_batchnorm=cuda_ddp and config.sync_batchnorm != "off",
        index=index,
    )


def build_state(config: TrainConfig, plan: Plan, env: DistEnv, where: str) -> State:
    torch.manual_seed(config.seed)  # same init on every rank (DDP also broadcasts rank 0's)
    backbone = build_backbone(config.backbone)
    if config.weights:
        load_weights(backbone, config.weights, config.backbone)
    objective, num_classes = build_objective(
        config.objective,
        plan.index,
        backbone.feature_dim,
        config.margin,
        config.eta,
        where,
        unit_start=config.unit_anchor_start,
    )
    network = Network(backbone, num_classes).to(env.device, compute_dtype(config.precision))
    objective = objective.to(env.device, compute_dtype(config.precision))  # the anchors too
    if env.device.type == "cuda":
        network = network.to(memory_format=torch.channels_last)
    ema = WeightEma(network.backbone, config.ema_decay)  # plain batch norm: what model.pt holds
    if plan.sync_batchnorm:
        network = nn.SyncBatchNorm.convert_sync_batchnorm(network)
    optimizer = build_optimizer(plan.optimizer, network, plan.lr, config.weight_decay)
    schedule = build_schedule(optimizer, plan.optimizer, plan.steps, plan.steps_per_epoch)
    return State(network, objective, ema, optimizer, schedule)


def _meta(config: TrainConfig, plan: Plan) -> dict[str, Any]:
    return {
        "tracklets_per_camera": list(plan.index.tracklets_per_camera),
        "num_classes": plan.index.num_classes,
        "dataset_name": plan.dataset_name,
        **{name: getattr(config, name) for name in _RESUME_FIELDS},
    }


def checkpoint_payload(config: TrainConfig, plan: Plan, state: State, env: DistEnv, workers: int) -> dict:
    return {
        "model": state.network.state_dict(),
        "ema": state.ema.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "schedule": state.schedule.state_dict(),
        "objective": state.objective.state_dict(),
        "rng": ckpt.capture_rng(),
        "data": {"batches_per_rank": state.step, "world_size": env.world_size, "workers": workers},
        "meta": _meta(config, plan),
        "config": {k: v for k, v in to_dict(config).items() if not k.startswith("mlflow_")},
    }


def restore(state: State, payload: dict[str, Any], config: TrainConfig, plan: Plan, uri: str) -> None:
    """Load a checkpoint into ``state`` after checking it belongs to this dataset and config."""
    meta, expected = payload["meta"], _meta(config, plan)
    if list(meta["tracklets_per_camera"]) != expected["tracklets_per_camera"]:
        raise DalError(
            f"{uri}: trained on {len(meta['tracklets_per_camera'])} cameras with train tracklets per "
            f"camera {list(meta['tracklets_per_camera'])}, but dataset {config.dataset} has "
            f"{len(expected['tracklets_per_camera'])} cameras with {expected['tracklets_per_camera']}"
        )
    differing = [k for k in (*_RESUME_FIELDS, "num_classes") if meta.get(k) != expected[k]]
    if differing:
        details = ", ".join(f"{k}: checkpoint {meta.get(k)!r} vs now {expected[k]!r}" for k in differing)
        raise DalError(f"{uri}: cannot resume with a different setup ({details}); use a new output")
    try:
        state.network.load_state_dict(payload["model"])
        state.objective.load_state_dict(payload["objective"])
        state.ema.load_state_dict(payload["ema"])
        state.optimizer.load_state_dict(payload["optimizer"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise DalError(f"{uri}: checkpoint does not fit this model ({exc})") from exc
    state.schedule.load_state_dict(payload["schedule"])
    ckpt.restore_rng(payload["rng"])
    state.step = int(payload["step"])


def _agree(values: list[float], env: DistEnv, device: torch.device) -> list[float]:
    """Sum small per-rank values over the ranks (one collective per step)."""
    tensor = torch.tensor(values, dtype=torch.float64 if device.type == "cpu" else torch.float32)
    if env.is_distributed:
        tensor = tensor.to(device)
        dist.all_reduce(tensor)
    return tensor.tolist()


def _train(config: TrainConfig, env: DistEnv) -> dict[str, Any]:
    dataset = Dataset.open(config.dataset)
    plan = make_plan(config, dataset, env)
    row_groups = plan_row_groups(dataset, plan.index)
    state = build_state(config, plan, env, config.dataset)
    resumed_from, previous, initial_model_uri = "", None, ""
    if env.is_main:
        ckpt.remove_partial_writes(config.output)
        initial_model_uri = publish_initial_model(config, state.ema.module)
    found = ckpt.load_latest(config.output)
    if found:
        resumed_from, payload = found
        restore(state, payload, config, plan, resumed_from)
        previous = payload["data"]
        log.info("resuming from %s (step %d)", resumed_from, state.step)
    elif config.objective == "dal" and config.anchor_init == "features":
        image_size = (config.image_height, config.image_width)
        features = initial_anchor_features(
            dataset, plan.index, state.ema.module, image_size, config.anchor_init_frames, env
        )
        state.objective.association.init_anchors(features)
    start_step = state.step
    workers = usable_workers(config.workers, row_groups, env.world_size)
    if previous and (previous["world_size"], previous["workers"]) != (env.world_size, workers):
        log.warning(
            "resuming with %d rank(s) x %d worker(s) (was %d x %d): the data order after the restart "
            "differs from an uninterrupted run",
            env.world_size,
            workers,
            previous["world_size"],
            previous["workers"],
        )
    if env.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model: nn.Module = state.network
    if env.is_distributed:
        model = DistributedDataParallel(
            state.network, device_ids=[env.device.index] if env.device.type == "cuda" else None
        )
    stream = TrainStream(
        dataset,
        row_groups,
        plan.index,
        StreamOptions(
            seed=config.seed,
            rank=env.rank,
            world_size=env.world_size,
            batch_size=plan.rank_batch,
            image_size=(config.image_height, config.image_width),
            augment=config.augment,
            color_jitter=config.color_jitter,
            chunk_row_groups=config.shuffle_buffer_row_groups,
            start_batch=state.step,
            with_labels=config.objective == "supervised",
        ),
    )
    monitor = None
    if env.is_main and config.objective == "dal":
        monitor = AssociationMonitor(dataset, plan.index, config.split)
        monitor = monitor if monitor.has_persons else None
    validator = None
    if env.is_main and config.eval_every:
        image_size = (config.image_height, config.image_width)
        validator = Validator(dataset, config.split, image_size, config.eval_max_frames, env.device)
    evaluation = PeriodicEvaluation(validator, config.eval_every, env)
    tags = {"dal.objective": config.objective, "dal.resumed_from": resumed_from or "-"}
    if config.objective == "supervised":
        tags["dal.upper_bound"] = "supervised reference: reads person labels"
        log.warning("objective=supervised: an UPPER BOUND that reads person labels, not unsupervised DAL")
    with ckpt.PreemptionGuard() as guard, step_run("train", config, enabled=env.is_main, tags=tags) as logger:
        logger.log_params({**plan.params(), "world_size": env.world_size, "workers_used": workers})
        if monitor is not None:
            logger.log_metrics({"association_precision_chance": monitor.chance}, step=state.step)
        if evaluation.every and state.step == 0:  # the curve's starting point (no anchors yet)
            evaluation(0, state.ema.module, logger)
        last = _loop(config, plan, state, model, stream, workers, env, guard, logger, monitor, evaluation)
        checkpoint = ""
        if state.step > start_step or not found:
            checkpoint = _save_checkpoint(config, plan, state, env, workers)
        if guard.requested:
            logger.set_tags({"dal.preempted_at_step": state.step})
            raise ckpt.TrainingPreempted(
                f"preempted (SIGTERM) after step {state.step}: checkpoint {checkpoint or resumed_from} "
                "saved; run the same command again to resume"
            )
        model_uri, mlflow_model_uri = "", ""
        if env.is_main:
            model_uri, mlflow_model_uri = publish_model(config, state.ema.module, logger)
        summary = {
            "steps": state.step,
            "resumed_from": resumed_from,
            "objective": config.objective,
            "optimizer": plan.optimizer,
            "lr": plan.lr,
            "warmup_steps": plan.warmup_steps,
            "final": last,
            "model_uri": model_uri,
            "initial_model_uri": initial_model_uri,
            "mlflow_model_uri": mlflow_model_uri,
            "mlflow_run_id": logger.run_id or "",
            "checkpoint": checkpoint,
            "eval_history": evaluation.history,
        }
        if env.is_main:
            storage.write_json(storage.join(config.output, SUMMARY_FILE), summary)
        barrier(env)
        return summary


def _loop(
    config: TrainConfig,
    plan: Plan,
    state: State,
    model: nn.Module,
    stream: TrainStream,
    workers: int,
    env: DistEnv,
    guard: ckpt.PreemptionGuard,
    logger: RunLogger,
    monitor: AssociationMonitor | None,
    evaluation: PeriodicEvaluation,
) -> dict[str, float]:
    """Train from ``state.step`` to ``plan.steps`` (or until SIGTERM); the last logged metrics."""
    cuda = env.device.type == "cuda"
    means, speed, last = RunningMeans(), Throughput(), {}
    if state.step >= plan.steps:
        return last
    loader = make_loader(stream, workers, pin_memory=cuda)
    batches = iter(loader)
    state.network.train()
    progress = tqdm(
        total=plan.steps,
        initial=state.step,
        disable=not env.is_main,
        desc="train",
        mininterval=10,
        unit="step",
    )
    try:
        while state.step < plan.steps:
            batch = next(batches)
            lr = state.schedule.get_last_lr()[0]
            metrics, stop_requested = train_step(config, plan, state, model, batch, env, guard.requested)
            means.add(metrics)
            speed.add(config.batch_size)
            state.step += 1
            progress.update(1)
            if state.step % config.log_every == 0 or state.step == plan.steps or stop_requested:
                last = {**means.pop(), "lr": lr, "frames_per_s": speed.pop()}
                last["cross_camera"] = float(state.step > plan.warmup_steps)
                if monitor is not None:
                    last.update(monitor(state.objective.association))
                logger.log_metrics(last, step=state.step)
                log.info("step %d/%d %s", state.step, plan.steps, _fmt(last))
                speed.restart_clock()
            if stop_requested:
                guard.requested = True
                break
            if evaluation.due(state.step, plan.steps):
                evaluation(state.step, state.ema.module, logger, _association(monitor, state))
                speed.restart_clock()
            if state.step % config.checkpoint_every == 0 and state.step < plan.steps:
                _save_checkpoint(config, plan, state, env, workers)
                speed.restart_clock()
    finally:
        progress.close()
        del batches  # stops the DataLoader workers
    last["frames_per_s_mean"] = speed.mean
    return last


def train_step(
    config: TrainConfig,
    plan: Plan,
    state: State,
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    env: DistEnv,
    stop_requested: bool,
) -> tuple[dict[str, torch.Tensor], bool]:
    """One optimisation step; returns its metrics and whether any rank got SIGTERM."""
    device = env.device
    dtype = compute_dtype(config.precision)
    pixels = model_input(batch["images"], device, dtype, IMAGENET_MEAN, IMAGENET_STD)
    targets = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "images"}
    with forward_precision(device, dtype, autocast=config.precision == "auto"):
        features, logits = model(pixels)
    cross_camera = state.step >= plan.warmup_steps
    loss, metrics = state.objective(
        features.to(dtype), None if logits is None else logits.to(dtype), targets, cross_camera
    )
    # One collective: every rank sees a NaN of any rank before stepping, and any rank's SIGTERM.
    loss_sum, stops = _agree([float(metrics["loss"]), float(stop_requested)], env, device)
    reported = loss_sum / env.world_size
    if not torch.isfinite(torch.tensor(reported)):
        raise DalError(
            f"loss is {reported} at step {state.step + 1} (diverged): stopping; the last good "
            f"checkpoint in {ckpt.checkpoints_uri(config.output)} is kept (try a lower lr)"
        )
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.clip_value > 0:
        nn.utils.clip_grad_value_(state.network.parameters(), config.clip_value)
    state.optimizer.step()
    state.schedule.step()
    state.ema.update(state.network.backbone)
    return metrics, stops > 0


def _association(monitor: AssociationMonitor | None, state: State) -> dict[str, float]:
    """The association's quality at this step, kept beside the evaluation in its history."""
    return monitor(state.objective.association) if monitor is not None else {}


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in metrics.items())


def _save_checkpoint(config: TrainConfig, plan: Plan, state: State, env: DistEnv, workers: int) -> str:
    uri = ckpt.checkpoint_uri(config.output, state.step)
    if env.is_main:
        payload = checkpoint_payload(config, plan, state, env, workers)
        ckpt.save_checkpoint(config.output, state.step, payload, config.keep_checkpoints)
        log.info("checkpoint %s", uri)
    barrier(env)  # no rank runs ahead of a checkpoint that may be resumed from
    return uri

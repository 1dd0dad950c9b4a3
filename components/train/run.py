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

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from components.common.dataset import Dataset
from components.common.distributed import DistEnv, barrier, distributed
from components.common.errors import DalError
from components.common.tracking import RunLogger, settings_without_tracking, step_run
from components.evaluate.protocols import NoLabelsError, build_eval_set
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
from components.train.publish import example_frames, publish_initial_model, publish_model
from components.train.summary import TrainSummary
from components.train.validation import PeriodicEvaluation, Validator

log = logging.getLogger(__name__)

# Fields that must match to continue a run from its checkpoint (steps may grow).
_RESUME_FIELDS = (
    "backbone", "objective", "image_height", "image_width", "batch_size", "seed", "split", "precision",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class TrainPlan:
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

    def stateful(self) -> dict[str, ckpt.Stateful]:
        """The parts a checkpoint saves, by their checkpoint key (checkpoint.STATEFUL)."""
        return {
            "model": self.network,
            "ema": self.ema,
            "optimizer": self.optimizer,
            "schedule": self.schedule,
            "objective": self.objective,
        }


def run(config: TrainConfig) -> TrainSummary:
    with distributed(config.device) as env:
        return Trainer(config, env).fit()


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype of weights, anchors and losses (bf16 autocast, where on, covers the forward only)."""
    return torch.float64 if precision == "fp64" else torch.float32


def plan_training(config: TrainConfig, dataset: Dataset, env: DistEnv) -> TrainPlan:
    index = build_index(dataset, config.split, with_classes=config.objective == "supervised")
    optimizer = resolve_optimizer(config, dataset.name)
    steps_per_epoch = index.num_frames / config.batch_size
    # As the reference: association starts at step >= int(frames / batch) * warm-up epochs.
    warmup_steps = int(int(steps_per_epoch) * resolve_warmup_epochs(config, dataset.name))
    cuda_ddp = env.is_distributed and env.device.type == "cuda"
    if config.sync_batchnorm == "on" and env.is_distributed and not cuda_ddp:
        raise DalError("sync_batchnorm: 'on' needs CUDA (torch's SyncBatchNorm has no CPU kernel); use off")
    return TrainPlan(
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


def build_state(config: TrainConfig, plan: TrainPlan, env: DistEnv) -> State:
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
        config.dataset,
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


def resume_setup(config: TrainConfig, plan: TrainPlan) -> dict[str, Any]:
    """What a checkpoint must match to be continued (see CheckpointManager)."""
    return {
        "tracklets_per_camera": list(plan.index.tracklets_per_camera),
        "num_classes": plan.index.num_classes,
        "dataset_name": plan.dataset_name,
        **{name: getattr(config, name) for name in _RESUME_FIELDS},
    }


def _agree(values: list[float], env: DistEnv, device: torch.device) -> list[float]:
    """Sum small per-rank values over the ranks (one collective per step)."""
    tensor = torch.tensor(values, dtype=torch.float64 if device.type == "cpu" else torch.float32)
    if env.is_distributed:
        tensor = tensor.to(device)
        dist.all_reduce(tensor)
    return tensor.tolist()


class Trainer:
    """One training run on this rank: the plan, the state, its checkpoints and the step.

    ``fit`` runs it from a fresh start or from the newest checkpoint; ``train_step`` is one
    optimisation step (the benchmark of training speed calls it directly).
    """

    def __init__(self, config: TrainConfig, env: DistEnv) -> None:
        self.config, self.env = config, env
        self.dataset = Dataset.open(config.dataset)
        self.plan = plan_training(config, self.dataset, env)
        self.row_groups = plan_row_groups(self.dataset, self.plan.index)
        self.state = build_state(config, self.plan, env)
        self.workers = usable_workers(config.workers, self.row_groups, env.world_size)
        self.dtype = compute_dtype(config.precision)
        self.image_size = (config.image_height, config.image_width)
        self.model: nn.Module = self.state.network  # DDP-wrapped by fit() under torchrun
        self.checkpoints = ckpt.CheckpointManager(
            config.output,
            config.keep_checkpoints,
            self.state.stateful(),
            resume_setup(config, self.plan),
            settings_without_tracking(config),
            env,
        )

    def fit(self) -> TrainSummary:
        """Train to the plan's last step (resuming where a checkpoint is), publish, summarise."""
        config, env, state = self.config, self.env, self.state
        initial_model_uri = ""
        if env.is_main:
            ckpt.remove_partial_writes(config.output)
            initial_model_uri = publish_initial_model(config, state.ema.module)
        resumed = self._resume_or_start()
        self._wrap_for_ddp()
        monitor, evaluation = self._monitors()
        with (
            ckpt.PreemptionGuard() as guard,
            step_run("train", config, enabled=env.is_main, tags=self._tags(resumed)) as logger,
        ):
            logger.log_dataset(self.dataset.name, self.dataset.root, self.dataset.digest, "training")
            logger.log_params(
                {**self.plan.params(), "world_size": env.world_size, "workers_used": self.workers}
            )
            if monitor is not None and monitor.has_persons:
                logger.log_metrics({"association_precision_chance": monitor.chance}, step=state.step)
            if evaluation.every and state.step == 0:  # the curve's starting point
                evaluation(0, state.ema.module, logger)
            start_step = state.step
            last = self._train_steps(guard, logger, monitor, evaluation)
            checkpoint = ""  # none new when a finished run is run again
            if state.step > start_step or resumed is None:
                checkpoint = self.save_checkpoint()
            if guard.requested:
                logger.set_tags({"dal.preempted_at_step": state.step})
                saved = checkpoint or (resumed.uri if resumed else "")
                raise ckpt.TrainingPreempted(
                    f"preempted (SIGTERM) after step {state.step}: checkpoint {saved} saved; "
                    "run the same command again to resume"
                )
            model_uri, mlflow_model_uri = (
                publish_model(config, state.ema.module, logger, self._example_frames(logger))
                if env.is_main
                else ("", "")
            )
            summary = dataclasses.replace(
                self._summary(resumed, last, evaluation),
                model_uri=model_uri,
                initial_model_uri=initial_model_uri,
                mlflow_model_uri=mlflow_model_uri,
                mlflow_run_id=logger.run_id or "",
                checkpoint=checkpoint,
            )
            if env.is_main:
                summary.write(config.output)
            barrier(env)
            return summary

    def _summary(
        self, resumed: ckpt.Resumed | None, last: dict[str, float], evaluation: PeriodicEvaluation
    ) -> TrainSummary:
        """The summary of the run so far, before anything is published."""
        return TrainSummary(
            steps=self.state.step,
            resumed_from=resumed.uri if resumed else "",
            objective=self.config.objective,
            optimizer=self.plan.optimizer,
            lr=self.plan.lr,
            warmup_steps=self.plan.warmup_steps,
            final=last,
            model_uri="",
            initial_model_uri="",
            mlflow_model_uri="",
            mlflow_run_id="",
            checkpoint="",
            eval_history=evaluation.history,
        )

    def _example_frames(self, logger: RunLogger) -> np.ndarray | None:
        """Frames for the MLflow model's input example; read only when it is logged."""
        if not logger.active:
            return None
        is_train = self.plan.index.camera_of >= 0
        return example_frames(self.dataset, self.row_groups.refs, is_train, self.image_size)

    def _resume_or_start(self) -> ckpt.Resumed | None:
        """Continue from the newest checkpoint, or start the anchors (anchor_init=features)."""
        config, env = self.config, self.env
        resumed = self.checkpoints.restore_latest()
        if resumed is not None:
            self.state.step = resumed.step
            log.info("resuming from %s (step %d)", resumed.uri, resumed.step)
            if (resumed.position.world_size, resumed.position.workers) != (env.world_size, self.workers):
                log.warning(
                    "resuming with %d rank(s) x %d worker(s) (was %d x %d): the data order after the "
                    "restart differs from an uninterrupted run",
                    env.world_size,
                    self.workers,
                    resumed.position.world_size,
                    resumed.position.workers,
                )
        elif config.objective == "dal" and config.anchor_init == "features":
            features = initial_anchor_features(
                self.dataset,
                self.plan.index,
                self.state.ema.module,
                self.image_size,
                config.anchor_init_frames,
                env,
            )
            self.state.objective.association.init_anchors(features)
        return resumed

    def _wrap_for_ddp(self) -> None:
        if self.env.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        if self.env.is_distributed:
            device_ids = [self.env.device.index] if self.env.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.state.network, device_ids=device_ids)

    def _monitors(self) -> tuple[AssociationMonitor | None, PeriodicEvaluation]:
        """Rank 0's association monitor (label-free, scored where person ids exist) and periodic
        evaluation."""
        config, env = self.config, self.env
        monitor = None
        if env.is_main and config.objective == "dal":
            monitor = AssociationMonitor(self.dataset, self.plan.index, config.split)
        every, eval_set = config.eval_every, None
        if every:
            try:  # every rank decides alike (the tracklet table), so all agree on the barriers
                eval_set = build_eval_set(
                    self.dataset.name, self.dataset.tracklets(), self.dataset.splits(), split=config.split
                )
            except NoLabelsError as exc:  # own footage without labels: train all the same
                every = 0
                if env.is_main:
                    log.warning("periodic evaluation off: %s", exc)
        validator = None
        if env.is_main and eval_set is not None:
            validator = Validator(self.dataset, eval_set, self.image_size, config.eval_max_frames, env.device)
        return monitor, PeriodicEvaluation(validator, every, env)

    def _tags(self, resumed: ckpt.Resumed | None) -> dict[str, str]:
        tags = {"dal.objective": self.config.objective, "dal.resumed_from": resumed.uri if resumed else "-"}
        if self.config.objective == "supervised":
            tags["dal.upper_bound"] = "supervised reference: reads person labels"
            log.warning("objective=supervised: an UPPER BOUND that reads person labels, not unsupervised DAL")
        return tags

    def _stream(self) -> TrainStream:
        config, env = self.config, self.env
        options = StreamOptions(
            seed=config.seed,
            rank=env.rank,
            world_size=env.world_size,
            batch_size=self.plan.rank_batch,
            image_size=self.image_size,
            augment=config.augment,
            color_jitter=config.color_jitter,
            chunk_row_groups=config.shuffle_buffer_row_groups,
            start_batch=self.state.step,
            with_labels=config.objective == "supervised",
        )
        return TrainStream(self.dataset, self.row_groups, self.plan.index, options)

    def _train_steps(
        self,
        guard: ckpt.PreemptionGuard,
        logger: RunLogger,
        monitor: AssociationMonitor | None,
        evaluation: PeriodicEvaluation,
    ) -> dict[str, float]:
        """Train from the current step to the plan's last (or until SIGTERM); the last logged metrics."""
        config, plan, state = self.config, self.plan, self.state
        means, speed, last = RunningMeans(), Throughput(), {}
        if state.step >= plan.steps:
            return last
        batches = iter(make_loader(self._stream(), self.workers, pin_memory=self.env.device.type == "cuda"))
        state.network.train()
        progress = tqdm(
            total=plan.steps,
            initial=state.step,
            disable=not self.env.is_main,
            desc="train",
            mininterval=10,
            unit="step",
        )
        try:
            while state.step < plan.steps:
                lr = state.schedule.get_last_lr()[0]
                metrics, stop_requested = self.train_step(next(batches), guard.requested)
                means.add(metrics)
                speed.add(config.batch_size)
                progress.update(1)
                if state.step % config.log_every == 0 or state.step == plan.steps or stop_requested:
                    last = {**means.pop(), "lr": lr, "frames_per_s": speed.pop()}
                    last["cross_camera"] = float(state.step > plan.warmup_steps)
                    last.update(self._association(monitor))
                    logger.log_metrics(last, step=state.step)
                    log.info("step %d/%d %s", state.step, plan.steps, _fmt(last))
                    speed.restart_clock()
                if stop_requested:
                    guard.requested = True
                    break
                if evaluation.due(state.step, plan.steps):
                    evaluation(state.step, state.ema.module, logger, self._association(monitor))
                    speed.restart_clock()
                if state.step % config.checkpoint_every == 0 and state.step < plan.steps:
                    self.save_checkpoint()
                    speed.restart_clock()
        finally:
            progress.close()
            del batches  # stops the DataLoader workers
        last["frames_per_s_mean"] = speed.mean
        return last

    def train_step(
        self, batch: dict[str, torch.Tensor], stop_requested: bool
    ) -> tuple[dict[str, torch.Tensor], bool]:
        """One optimisation step (advances ``state.step``); its metrics and whether any rank got SIGTERM."""
        config, state, device = self.config, self.state, self.env.device
        pixels = model_input(batch["images"], device, self.dtype, IMAGENET_MEAN, IMAGENET_STD)
        targets = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "images"}
        with forward_precision(device, self.dtype, autocast=config.precision == "auto"):
            features, logits = self.model(pixels)
        cross_camera = state.step >= self.plan.warmup_steps
        logits = None if logits is None else logits.to(self.dtype)
        loss, metrics = state.objective(features.to(self.dtype), logits, targets, cross_camera)
        # One collective: every rank sees a NaN of any rank before stepping, and any rank's SIGTERM.
        loss_sum, stops = _agree([float(metrics["loss"]), float(stop_requested)], self.env, device)
        reported = loss_sum / self.env.world_size
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
        state.step += 1
        return metrics, stops > 0

    def save_checkpoint(self) -> str:
        position = ckpt.DataPosition(world_size=self.env.world_size, workers=self.workers)
        return self.checkpoints.save(self.state.step, position)

    def _association(self, monitor: AssociationMonitor | None) -> dict[str, float]:
        """The association's state at this step (scored where person ids exist; monitoring only)."""
        return monitor(self.state.objective.association) if monitor is not None else {}


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in metrics.items())

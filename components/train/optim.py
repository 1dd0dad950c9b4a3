"""Optimizers and learning-rate schedules of the reference release.

* ``sgd``: Nesterov momentum 0.9, lr 0.01 -> 0.001 at half the steps (MARS).
* ``rmsprop``: TensorFlow's RMSProp (decay 0.9, momentum 0.9, epsilon 1.0 inside the square
  root, mean square initialised to ones; timm's ``RMSpropTF`` reproduces it), lr 0.045 decayed
  x 0.94 (staircase) every 2 epochs (PRID2011 / iLIDS-VID).

Weight decay 4e-5 is coupled L2 (added to the gradient), on conv and linear weights only, like
the reference's slim regularisers (which skip biases and batch-norm parameters).
"""

from __future__ import annotations

import torch
from torch import nn

RMSPROP_DECAY = 0.9
RMSPROP_MOMENTUM = 0.9
RMSPROP_EPSILON = 1.0
RMSPROP_LR_DECAY = 0.94
RMSPROP_EPOCHS_PER_DECAY = 2.0
SGD_MOMENTUM = 0.9
SGD_LR_DROP = 0.1


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim > 1 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=SGD_MOMENTUM, nesterov=True)
    if name == "rmsprop":
        from timm.optim import RMSpropTF

        return RMSpropTF(groups, lr=lr, alpha=RMSPROP_DECAY, eps=RMSPROP_EPSILON, momentum=RMSPROP_MOMENTUM)
    raise ValueError(f"optimizer must be sgd or rmsprop, got {name!r}")


def lr_factor(name: str, step: int, total_steps: int, steps_per_epoch: float) -> float:
    """Multiplier of the initial lr at ``step`` (0-based): a pure function, so resuming is exact."""
    if name == "sgd":
        return 1.0 if step < total_steps // 2 else SGD_LR_DROP
    decay_steps = max(1, int(steps_per_epoch * RMSPROP_EPOCHS_PER_DECAY))
    return RMSPROP_LR_DECAY ** (step // decay_steps)


def build_schedule(
    optimizer: torch.optim.Optimizer, name: str, total_steps: int, steps_per_epoch: float
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(name, step, total_steps, steps_per_epoch)
    )

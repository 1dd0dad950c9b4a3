"""Exponential moving average of the weights: the copy that ``model.pt`` holds and extraction uses.

As ``tf.train.ExponentialMovingAverage(decay, num_updates=global_step)`` in the reference
release, the decay ramps up as ``min(decay, (1 + t) / (10 + t))``: with a fixed 0.9999 a run of
a few thousand steps would still be mostly its random init. Parameters are averaged; buffers
(batch-norm statistics) are copied, as the reference averaged trainable variables only.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class WeightEma:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.num_updates = 0

    def current_decay(self) -> float:
        t = self.num_updates
        return min(self.decay, (1.0 + t) / (10.0 + t))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` (same architecture, unwrapped) into the average."""
        weight = 1.0 - self.current_decay()
        averaged = list(self.module.parameters())
        current = [p.detach() for p in model.parameters()]
        if len(averaged) != len(current):
            raise ValueError("WeightEma.update: the model does not match the averaged copy")
        torch._foreach_lerp_(averaged, current, weight)
        for mine, theirs in zip(self.module.buffers(), model.buffers(), strict=True):
            mine.copy_(theirs)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.num_updates = int(state["num_updates"])

"""Optimizers and schedules of the reference release."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from components.train.optim import build_optimizer, build_schedule, lr_factor, param_groups


def test_weight_decay_only_on_conv_and_linear_weights() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    decay, no_decay = param_groups(model, 4e-5)
    assert decay["weight_decay"] == 4e-5 and no_decay["weight_decay"] == 0.0
    assert {p.shape for p in decay["params"]} == {(4, 3, 3, 3), (2, 4)}
    assert len(no_decay["params"]) == 4  # conv bias, bn weight + bias, linear bias


def test_sgd_is_nesterov_and_drops_tenfold_at_half() -> None:
    model = nn.Linear(2, 2)
    optimizer = build_optimizer("sgd", model, 0.01, 4e-5)
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.SGD) and group["nesterov"] and group["momentum"] == 0.9
    schedule = build_schedule(optimizer, "sgd", total_steps=10, steps_per_epoch=3.0)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs == pytest.approx([0.01] * 5 + [0.001] * 5)


def test_rmsprop_as_tensorflow_decays_every_two_epochs() -> None:
    model = nn.Linear(2, 2)
    optimizer = build_optimizer("rmsprop", model, 0.045, 4e-5)
    group = optimizer.param_groups[0]
    assert type(optimizer).__name__ == "RMSpropTF"
    assert (group["alpha"], group["eps"], group["momentum"]) == (0.9, 1.0, 0.9)
    # 2 epochs of 2.5 steps = 5 steps per decay
    assert [lr_factor("rmsprop", s, 100, 2.5) for s in (0, 4, 5, 9, 10)] == pytest.approx(
        [1.0, 1.0, 0.94, 0.94, 0.94**2]
    )
    schedule = build_schedule(optimizer, "rmsprop", 100, 2.5)
    for _ in range(5):
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.045 * 0.94)


def test_schedule_state_resumes_exactly() -> None:
    model = nn.Linear(2, 2)
    optimizer = build_optimizer("rmsprop", model, 0.045, 0.0)
    schedule = build_schedule(optimizer, "rmsprop", 100, 1.0)
    for _ in range(7):
        optimizer.step()
        schedule.step()
    state = schedule.state_dict()
    fresh_optimizer = build_optimizer("rmsprop", model, 0.045, 0.0)
    fresh = build_schedule(fresh_optimizer, "rmsprop", 100, 1.0)
    fresh.load_state_dict(state)
    fresh_optimizer.load_state_dict(optimizer.state_dict())
    assert fresh.get_last_lr() == schedule.get_last_lr()


def test_unknown_optimizer() -> None:
    with pytest.raises(ValueError, match="sgd or rmsprop"):
        build_optimizer("adam", nn.Linear(2, 2), 0.1, 0.0)

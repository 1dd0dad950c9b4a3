"""The weight EMA: TensorFlow's ramped decay, parameters averaged, buffers copied."""

from __future__ import annotations

import torch
from torch import nn

from components.train.ema import WeightEma


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_decay_ramps_up_to_the_configured_value() -> None:
    ema = WeightEma(_model(), decay=0.9999)
    assert ema.current_decay() == 0.1  # (1 + 0) / (10 + 0)
    ema.num_updates = 90
    assert abs(ema.current_decay() - 91 / 100) < 1e-12
    ema.num_updates = 10**7
    assert ema.current_decay() == 0.9999


def test_update_averages_parameters_and_copies_buffers() -> None:
    model = _model()
    ema = WeightEma(model, decay=0.5)
    start = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(8, 3))  # moves the batch-norm running statistics
    ema.update(model)  # decay min(0.5, 1/10) = 0.1: average = 0.1 * old + 0.9 * new
    for averaged, old, new in zip(ema.module.parameters(), start, model.parameters(), strict=True):
        assert torch.allclose(averaged, 0.1 * old + 0.9 * new.detach())
    assert torch.equal(ema.module[1].running_mean, model[1].running_mean)
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert ema.num_updates == 1


def test_state_dict_round_trip() -> None:
    model = _model()
    ema = WeightEma(model, decay=0.99)
    for _ in range(3):
        with torch.no_grad():
            model[0].weight.mul_(1.1)
        ema.update(model)
    other = WeightEma(_model(), decay=0.99)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 3
    assert torch.equal(other.module[0].weight, ema.module[0].weight)

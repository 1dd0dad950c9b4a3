"""EvaluateConfig validation: a bad value is a ConfigError naming the field."""

from __future__ import annotations

import pytest

from components.common.config import ConfigError
from components.evaluate.config import EvaluateConfig

BASE = {"dataset": "ds", "features": "f.parquet", "output": "out"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"dataset": " "}, "dataset"),
        ({"features": ""}, "features"),
        ({"protocol": "market"}, "protocol"),
        ({"split": -2}, "split"),
        ({"direction": "sideways"}, "direction"),
        ({"max_rank": 10}, "max_rank"),
        ({"num_ranklist_queries": -1}, "num_ranklist_queries"),
        ({"ranklist_size": 0}, "ranklist_size"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"threads": -1}, "threads"),
    ],
)
def test_bad_values_name_the_field(change: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}: "):
        EvaluateConfig(**{**BASE, **change})


def test_defaults() -> None:
    config = EvaluateConfig(**BASE)
    assert (config.protocol, config.split, config.direction, config.max_rank) == ("auto", -1, "forward", 20)

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
        ({"rerank": "20,6"}, "rerank"),
        ({"rerank": "20,six,0.3"}, "rerank"),
        ({"rerank": "0,1,0.3"}, "rerank"),
        ({"rerank": "20,22,0.3"}, "rerank"),
        ({"rerank": "20,6,1.5"}, "rerank"),
        ({"rerank": "yes"}, "rerank"),
        ({"aqe": "5"}, "aqe"),
        ({"aqe": "0,3"}, "aqe"),
        ({"aqe": "5,-1"}, "aqe"),
        ({"aqe": "5.5,3"}, "aqe"),
    ],
)
def test_bad_values_name_the_field(change: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}: "):
        EvaluateConfig(**{**BASE, **change})


def test_defaults() -> None:
    config = EvaluateConfig(**BASE)
    assert (config.protocol, config.split, config.direction, config.max_rank) == ("auto", -1, "forward", 20)


def test_rerank_and_aqe_settings() -> None:
    from components.evaluate.config import AqeSettings, RerankSettings

    off = EvaluateConfig(**BASE)
    assert (off.rerank, off.aqe, off.rerank_settings, off.aqe_settings) == ("off", "off", None, None)
    on = EvaluateConfig(**BASE, rerank="on", aqe="ON")
    assert on.rerank_settings == RerankSettings(20, 6, 0.3) and on.aqe_settings == AqeSettings(5, 3.0)
    custom = EvaluateConfig(**BASE, rerank=" 10, 3 ,0.5", aqe="7,2")
    assert custom.rerank_settings == RerankSettings(10, 3, 0.5) and custom.aqe_settings == AqeSettings(7, 2.0)
    assert EvaluateConfig(**BASE, rerank="none", aqe="").rerank_settings is None

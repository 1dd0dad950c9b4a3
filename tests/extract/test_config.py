"""ExtractConfig validation: a bad value is a ConfigError naming the field."""

from __future__ import annotations

import pytest

from components.common.config import ConfigError
from components.extract.config import ExtractConfig

BASE = {"dataset": "ds", "model": "model.pt", "output": "features.parquet"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"dataset": ""}, "dataset"),
        ({"model": " "}, "model"),
        ({"output": "dir/"}, "output"),
        ({"subset": "val"}, "subset"),
        ({"split": -1}, "split"),
        ({"pooling": "median"}, "pooling"),
        ({"batch_size": 0}, "batch_size"),
        ({"device": "tpu"}, "device"),
        ({"workers": -1}, "workers"),
    ],
)
def test_bad_values_name_the_field(change: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}: "):
        ExtractConfig(**{**BASE, **change})


def test_defaults_follow_the_reference_release() -> None:
    config = ExtractConfig(**BASE)
    assert (config.subset, config.pooling, config.device) == ("test", "max", "auto")


def test_configs_and_evaluation_do_not_import_torch() -> None:
    # The CLI builds every parser from the configs; evaluation runs without torch (fast start).
    import subprocess
    import sys

    modules = "components.extract.config, components.evaluate.config, components.evaluate.run"
    code = f"import sys, {modules}; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr

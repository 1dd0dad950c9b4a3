"""Device choice, shared by every step (train, extract, search, serving): one rule, one error."""

from __future__ import annotations

import pytest
import torch

from components.cli import main
from components.common.distributed import pick_device
from components.common.errors import DalError

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")


@needs_no_cuda
def test_auto_is_the_cpu_and_cuda_is_a_clear_error_without_a_gpu() -> None:
    assert pick_device("auto") == torch.device("cpu") and pick_device("cpu") == torch.device("cpu")
    with pytest.raises(DalError, match="device: cuda was requested but CUDA is not available"):
        pick_device("cuda")
    with pytest.raises(ValueError, match="device must be auto, cpu or cuda, got 'tpu'"):
        pick_device("tpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_is_this_ranks_gpu() -> None:
    assert pick_device("cuda", 0) == torch.device("cuda", 0) and pick_device("auto").type == "cuda"


@needs_no_cuda
def test_a_step_asked_for_cuda_without_one_exits_2_naming_the_field(tmp_path, capsys) -> None:
    code = main(
        ["search", "--features", str(tmp_path / "f.parquet"), "--query", "1", "--output", str(tmp_path / "o"),
         "--device", "cuda", "--mlflow-tracking-uri", ""]
    )  # fmt: skip
    assert code == 2 and "device: cuda was requested but CUDA is not available" in capsys.readouterr().err

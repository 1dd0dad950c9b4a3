"""scripts/mlflow_screenshots.py: its checks always; the real screenshots only where Chromium is
installed (``apt-get install -y chromium``; CI images usually lack it)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from components.common.errors import DalError
from scripts import mlflow_screenshots as shots
from tests.train.test_support import Spec, one_thread, tiny_config, write_dataset

CHROMIUM = next((name for name in shots.CHROMIUM_NAMES if shutil.which(name)), None)


def test_missing_chromium_names_the_install_command() -> None:
    with pytest.raises(DalError, match=r"apt-get install -y chromium"):
        shots.find_chromium("no-such-browser-dal")


def test_blank_pages_are_refused(tmp_path) -> None:
    blank = tmp_path / "blank.png"
    Image.new("RGB", (400, 300), "white").save(blank)
    with pytest.raises(DalError, match="distinct colours"):
        shots.check_png(blank)
    busy = tmp_path / "busy.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(busy)
    assert shots.check_png(busy) > shots.MIN_COLOURS


def test_a_store_without_a_pipeline_run_is_an_error(tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(store).create_experiment("dal", artifact_location=(tmp_path / "art").as_uri())
    with pytest.raises(DalError, match="no pipeline run"):
        shots.find_targets(store, "dal")
    with pytest.raises(DalError, match="no experiment 'other'"):
        shots.find_targets(store, "other")


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install -y chromium)")
@pytest.mark.usefixtures(one_thread.__name__)
def test_screenshots_of_a_tracked_training_run(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from components.common.tracking import start_pipeline_run
    from components.train.run import run

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = tmp_path / "mlflow.db"
    write_dataset(
        str(tmp_path / "ds"), Spec(persons=3, cameras=2, frames=3, row_group_rows=8, height=32, width=16)
    )
    parent = start_pipeline_run(
        f"sqlite:///{store}", "dal", "job", "pipeline", {}, (tmp_path / "art").as_uri()
    )
    tracking = {"mlflow_tracking_uri": f"sqlite:///{store}", "mlflow_parent_run_id": parent}
    run(tiny_config(str(tmp_path / "ds"), str(tmp_path / "run"), steps=2, **tracking))
    written = shots.take_screenshots(store, tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(s.name for s in shots.shots(_any_targets()))
    for path in written:
        with Image.open(path) as image:
            assert image.size == shots.WINDOW


def _any_targets() -> shots.Targets:
    return shots.Targets("1", "p", "pipeline", "t", "d", "m", "0.5")

"""Tests here track to MLflow only when they ask for the ``mlflow_env`` fixture."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_ambient_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

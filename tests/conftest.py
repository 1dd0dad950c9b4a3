"""Shared fixtures: real S3 / MLflow servers on 127.0.0.1, the reference data beside the repo."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import MlflowServer, S3Server

REPO = Path(__file__).resolve().parents[1]
# Real structure of the benchmarks from the DAL code release; never copied into the repo.
REFERENCE_DIR = Path(os.environ.get("DAL_REFERENCE_DIR", REPO.parent / "shared" / "data" / "dal-reference"))


@pytest.fixture(autouse=True)
def torch_threads_unchanged() -> Iterator[None]:
    """Fail a test that leaves torch's intra-op thread count changed: later tests that compare
    runs bit for bit (resume, retry) would otherwise compare different kernels' arithmetic."""
    import torch

    before = torch.get_num_threads()
    yield
    after = torch.get_num_threads()
    if after != before:
        torch.set_num_threads(before)
        pytest.fail(f"the test left torch with {after} intra-op threads (it had {before}): restore them")


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not (REFERENCE_DIR / "info").is_dir() or not (REFERENCE_DIR / "datasplits").is_dir():
        pytest.skip(f"reference data not found at {REFERENCE_DIR} (set DAL_REFERENCE_DIR to point at it)")
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """Point the standard AWS environment of this process at the test server."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    return s3_server


@pytest.fixture
def s3_bucket(s3_env: S3Server) -> str:
    """A fresh, empty bucket on the test server, as ``s3://name``."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_env.create_bucket(name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def mlflow_server(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    bucket = "mlflow-artifacts"
    s3_server.create_bucket(bucket)
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"), s3_server, bucket).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mlflow_env(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> MlflowServer:
    for key, value in mlflow_server.client_env.items():
        monkeypatch.setenv(key, value)
    return mlflow_server

"""Real servers for integration tests, started on 127.0.0.1 and stopped by pid.

* ``S3Server``: moto's standalone server (``moto_server``), an S3 endpoint over HTTP; in
  production the same code talks to MinIO or AWS S3.
* ``MlflowServer``: ``mlflow server`` with a sqlite backend and artifacts proxied into S3.
* ``served_model``: ``mlflow models serve --env-manager local`` of a logged model (the scoring
  server a user starts), and ``post_json`` to call it.

Nothing is mocked in-process: the code under test reaches them through their HTTP APIs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

BIN = Path(sys.executable).parent
# Dummy credentials: moto accepts any; they exist only for these test servers.
S3_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_MAX_ATTEMPTS": "2",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, process: subprocess.Popen, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url}: server not up after {timeout_s:.0f}s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    """Stop the server and everything it spawned (its own process group), by pid."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


class S3Server:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"moto-{self.port}.log"
        self.process: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS environment a client needs to reach this server."""
        return {**S3_TEST_ENV, "AWS_ENDPOINT_URL": self.endpoint}

    def start(self) -> S3Server:
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **S3_TEST_ENV},
                start_new_session=True,
            )
        _wait_http(f"{self.endpoint}/moto-api/", self.process, 60, self.log)
        return self

    def create_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, **_boto_credentials()).create_bucket(Bucket=name)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_TEST_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_TEST_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_TEST_ENV["AWS_REGION"],
    }


def s3_client(server: S3Server):  # noqa: ANN201 - boto3 client type is dynamic
    import boto3

    return boto3.client("s3", endpoint_url=server.endpoint, **_boto_credentials())


class MlflowServer:
    """``mlflow server`` on sqlite with artifacts proxied to ``s3://<bucket>/mlflow``."""

    def __init__(self, workdir: Path, s3: S3Server, bucket: str) -> None:
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.s3 = s3
        self.bucket = bucket
        self.log = workdir / f"mlflow-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 240) -> MlflowServer:
        env = {
            **os.environ,
            **self.s3.env,
            # Without these the server starts a job runner and 7 consumers (~2.5 GB).
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        command = [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{self.workdir / 'mlflow.db'}",
            "--artifacts-destination",
            f"s3://{self.bucket}/mlflow",
        ]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        _wait_http(f"{self.uri}/health", self.process, timeout_s, self.log)
        return self

    @property
    def client_env(self) -> dict[str, str]:
        """What a step needs to log here: the URI, and no retries so failures show at once."""
        return {"MLFLOW_TRACKING_URI": self.uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)


@contextlib.contextmanager
def served_model(uri: str, env: Mapping[str, str], log: Path, timeout_s: float = 240) -> Iterator[str]:
    """``mlflow models serve -m uri --env-manager local`` on a free port of 127.0.0.1 for the
    block; yields its base URL. ``env``: the tracking client's (where the model is read from)."""
    port = free_port()
    command = [str(BIN / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local"]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*command, "-h", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            # The venv's bin on PATH: the scoring server execs `uvicorn` from there.
            env={**os.environ, **env, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_http(f"{url}/ping", process, timeout_s, log)
        yield url
    finally:
        _stop(process)


def post_json(url: str, body: dict) -> tuple[int, dict]:
    """POST ``body`` as JSON; (status, decoded answer), error statuses included."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())

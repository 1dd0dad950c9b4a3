"""Screenshots of the MLflow UI for the docs, taken from a real store with headless Chromium.

Starts ``mlflow server`` on 127.0.0.1 (a free port, one worker, no job runner) on a backend store
(default ``work/mlflow.db``, what ``make run`` writes), finds the newest pipeline run of the
experiment and writes to ``--out`` (default ``docs/images``):

* ``mlflow-runs.png``: the pipeline's step runs in the model-training view, Dataset column filled;
* ``mlflow-pipeline-run.png``: the parent (pipeline) run;
* ``mlflow-train-run.png``: the train run, with the dataset it read;
* ``mlflow-model.png``: the logged model's artifacts with its input example open.

Each page is loaded until text that proves it rendered is there (not a spinner or an empty page)
and each PNG is checked for enough distinct colours; either failing is an error. The server is
stopped in every case. Needs Chromium: ``apt-get install -y chromium``.

    .venv/bin/python scripts/mlflow_screenshots.py                       # work/mlflow.db -> docs/images
    .venv/bin/python scripts/mlflow_screenshots.py --store /tmp/w/mlflow.db --out /tmp/shots
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from components.common.errors import DalError  # noqa: E402

# The UI opens its assistant panel by itself when the page's host is localhost/127.0.0.1; the
# browser reaches the server under this name instead (mapped to 127.0.0.1 inside Chromium only).
UI_HOST = "dal-mlflow.test"
WINDOW = (1600, 1000)
MIN_COLOURS = 500  # a loaded page has text and icons; a blank page or a spinner has a few dozen
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
EXAMPLE_FILE = "input_example.json"


@dataclasses.dataclass(frozen=True)
class Shot:
    name: str  # the PNG's file name
    route: str  # the UI's hash route, with its query
    wait_for: tuple[str, ...]  # texts that must all be on the page before the picture
    click: str = ""  # text of an element to click once those are there (then wait again)
    then_wait_for: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Targets:
    """What the screenshots show, found in the store: the newest pipeline run and its steps."""

    experiment_id: str
    parent_run_id: str
    parent_name: str
    train_run_id: str
    dataset_name: str
    logged_model_id: str
    example_value: str  # the first number of the model's input_example.json, as written there


def find_targets(tracking_uri: str, experiment: str) -> Targets:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise DalError(f"{tracking_uri}: no experiment {experiment!r} (--experiment)")
    ids = [found.experiment_id]
    parents = client.search_runs(
        ids, "tags.`dal.step` = 'pipeline'", order_by=["attributes.start_time DESC"], max_results=1
    )
    if not parents:
        raise DalError(f"{tracking_uri}: experiment {experiment!r} has no pipeline run (dal.step=pipeline)")
    parent = parents[0]
    trains = client.search_runs(
        ids,
        f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and tags.`dal.step` = 'train'",
        max_results=1,
    )
    if not trains or not trains[0].inputs.dataset_inputs:
        raise DalError(
            f"{tracking_uri}: pipeline run {parent.info.run_id} has no train run with a dataset input"
        )
    train = trains[0]
    models = client.search_logged_models(ids, filter_string=f"source_run_id = '{train.info.run_id}'")
    if not models:
        raise DalError(f"{tracking_uri}: train run {train.info.run_id} logged no model")
    example = _first_number(models[0].artifact_location)
    return Targets(
        experiment_id=found.experiment_id,
        parent_run_id=parent.info.run_id,
        parent_name=parent.info.run_name,
        train_run_id=train.info.run_id,
        dataset_name=train.inputs.dataset_inputs[0].dataset.name,
        logged_model_id=models[0].model_id,
        example_value=example,
    )


def _first_number(model_artifacts: str) -> str:
    """The first value of the model's input example: the page shows it once the file is open."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    where = f"{model_artifacts}/{EXAMPLE_FILE}"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            text = Path(mlflow.artifacts.download_artifacts(artifact_uri=where, dst_path=tmp)).read_text()
        except (MlflowException, OSError) as exc:
            raise DalError(f"{where}: the logged model has no input example ({exc})") from exc
    found = re.search(r"-?\d+(\.\d+)?(e-?\d+)?", text)
    if found is None:
        raise DalError(f"{where}: no number in the input example")
    return found.group(0)


def shots(targets: Targets) -> list[Shot]:
    experiment = f"/experiments/{targets.experiment_id}"
    # The "Model training" view whatever the browser chose before; MLflow 3.17's UI takes the
    # view from this parameter (or the browser's saved choice), not from the experiment's tag.
    view = {"workflowType": "machine_learning"}
    # A search filter with a sort other than by date lists the child runs flat (not folded
    # under their parent), so the Dataset column of each step is in sight.
    steps = {
        **view,
        "searchFilter": f"tags.`mlflow.parentRunId` = '{targets.parent_run_id}'",
        "orderByKey": "attributes.run_name",
        "orderByAsc": "true",
    }
    model = f"{experiment}/models/{targets.logged_model_id}/artifacts"
    return [
        # The train run's row in the Dataset column: "<name> (<digest>)" and its context.
        Shot("mlflow-runs.png", _route(f"{experiment}/runs", steps), (targets.dataset_name, "Training")),
        Shot(
            "mlflow-pipeline-run.png",
            _route(f"{experiment}/runs/{targets.parent_run_id}", view),
            (targets.parent_name, "Parameters"),
        ),
        Shot(
            "mlflow-train-run.png",
            _route(f"{experiment}/runs/{targets.train_run_id}", view),
            ("Datasets", targets.dataset_name, "Training"),
        ),
        Shot(
            "mlflow-model.png", _route(model, view), (EXAMPLE_FILE,), EXAMPLE_FILE, (targets.example_value,)
        ),
    ]


def _route(path: str, query: dict[str, str]) -> str:
    return f"#{path}?{urllib.parse.urlencode(query, quote_via=urllib.parse.quote)}"


# -- the MLflow server ----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def mlflow_server(store: Path, log: Path, timeout_s: float = 240) -> Iterator[int]:
    """``mlflow server`` on ``store``; yields its port and stops it (its process group) at the end."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # else ~2.5 GB of job runners
    command = [
        str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--backend-store-uri", f"sqlite:///{store.resolve()}",
        "--allowed-hosts", f"127.0.0.1:{port},{UI_HOST}:{port}",
        "--cors-allowed-origins", f"http://{UI_HOST}:{port}",
    ]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        _wait_up(f"http://127.0.0.1:{port}/health", process, timeout_s, log)
        yield port
    finally:
        _stop(process)


def _wait_up(url: str, process: subprocess.Popen, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DalError(
                f"mlflow server exited with {process.returncode}; see {log}:\n{log.read_text()[-2000:]}"
            )
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2):
            return
        time.sleep(0.5)
    raise DalError(f"mlflow server not up after {timeout_s:.0f} s; see {log}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)


# -- headless Chromium over the DevTools protocol (a pipe: no extra packages) ----------------
def find_chromium(name: str = "") -> str:
    for candidate in (name,) if name else CHROMIUM_NAMES:
        path = shutil.which(candidate)
        if path:
            return path
    wanted = name or " / ".join(CHROMIUM_NAMES)
    raise DalError(f"--chromium: {wanted} not found; install it with `apt-get install -y chromium`")


class Browser:
    """One headless Chromium page driven through ``--remote-debugging-pipe`` (fds 3 and 4)."""

    def __init__(self, chromium: str, port: int, profile: str) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def child_fds() -> None:  # Chromium reads commands on fd 3 and answers on fd 4
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        command = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--remote-debugging-pipe", f"--user-data-dir={profile}", "--no-first-run",
            f"--host-resolver-rules=MAP {UI_HOST} 127.0.0.1", f"--window-size={WINDOW[0]},{WINDOW[1]}",
            "about:blank",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            pass_fds=(3, 4),
            preexec_fn=child_fds,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.base = f"http://{UI_HOST}:{port}/"
        self._next_id = 0
        self._buffer = b""
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        metrics = {"width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False}
        self._call("Emulation.setDeviceMetricsOverride", metrics, session=True)

    def _call(
        self, method: str, params: dict[str, Any], *, session: bool = False, timeout_s: float = 60
    ) -> Any:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise DalError(f"chromium: {method}: {reply['error']}")
                    return reply.get("result", {})
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise DalError(f"chromium exited (during {method})")
            self._buffer += chunk
        raise DalError(f"chromium: no answer to {method} in {timeout_s:.0f} s")

    def _text(self) -> str:
        expression = "document.body ? document.body.innerText : ''"
        result = self._call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True
        )
        return str(result.get("result", {}).get("value", ""))

    def _wait_for(self, texts: tuple[str, ...], what: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        missing = list(texts)
        while time.monotonic() < deadline:
            page = self._text()
            missing = [t for t in texts if t not in page]
            if not missing:
                time.sleep(1.0)  # let late requests (icons, counts) finish painting
                return
            time.sleep(0.5)
        raise DalError(f"{what}: the page did not show {missing} in {timeout_s:.0f} s (not loaded?)")

    def _click(self, text: str, what: str) -> None:
        script = f"""(() => {{
            // The innermost element with exactly this text (ancestors come first in document order).
            const hit = [...document.querySelectorAll('body *')].filter(
                e => e.textContent.trim() === {json.dumps(text)}).pop();
            if (!hit) return false;
            hit.click();
            return true;
        }})()"""
        result = self._call("Runtime.evaluate", {"expression": script, "returnByValue": True}, session=True)
        if not result.get("result", {}).get("value"):
            raise DalError(f"{what}: nothing to click labelled {text!r}")

    def take(self, shot: Shot, path: Path) -> None:
        self._call("Page.navigate", {"url": self.base + shot.route}, session=True)
        try:
            self._wait_for(shot.wait_for, shot.name)
            if shot.click:
                self._click(shot.click, shot.name)
                self._wait_for(shot.then_wait_for, shot.name)
        except DalError as exc:  # keep what the page showed, to see why
            failed = path.with_suffix(".failed.png")
            self._capture(failed)
            raise DalError(f"{exc}; the page as it was: {failed}") from exc
        self._capture(path)

    def _capture(self, path: Path) -> None:
        data = self._call("Page.captureScreenshot", {"format": "png"}, session=True)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        with contextlib.suppress(DalError, OSError):
            self._call("Browser.close", {}, timeout_s=10)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)
        for fd in (self._to_chrome, self._from_chrome):
            with contextlib.suppress(OSError):
                os.close(fd)


def check_png(path: Path) -> int:
    """Distinct colours of the screenshot; too few means a blank page or a spinner."""
    from PIL import Image

    with Image.open(path) as image:
        colours = len(image.convert("RGB").getcolors(maxcolors=1 << 24) or [])
    if colours < MIN_COLOURS:
        raise DalError(f"{path}: {colours} distinct colours (< {MIN_COLOURS}): a blank page or a spinner?")
    return colours


def take_screenshots(store: Path, out: Path, experiment: str = "dal", chromium: str = "") -> list[Path]:
    """All the screenshots of ``store`` into ``out``; their paths."""
    browser_path = find_chromium(chromium)  # before anything starts
    if not store.is_file():
        raise DalError(f"--store: {store} does not exist (run `make run` first, or pass --store)")
    targets = find_targets(f"sqlite:///{store.resolve()}", experiment)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with (
        tempfile.TemporaryDirectory(prefix="dal-shots-") as tmp,
        mlflow_server(store, Path(tmp) / "mlflow-server.log") as port,
    ):
        browser = Browser(browser_path, port, str(Path(tmp) / "profile"))
        try:
            for shot in shots(targets):
                path = out / shot.name
                browser.take(shot, path)
                print(f"{path}: {check_png(path)} colours, {path.stat().st_size} bytes")
                written.append(path)
        finally:
            browser.close()
    return written


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--store", type=Path, default=REPO / "work" / "mlflow.db", help="sqlite backend store"
    )
    parser.add_argument("--experiment", default="dal", help="MLflow experiment of the pipeline runs")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images", help="folder for the PNGs")
    parser.add_argument(
        "--chromium", default="", help=f"browser executable (default: {' / '.join(CHROMIUM_NAMES)})"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        take_screenshots(args.store, args.out, args.experiment, args.chromium)
    except DalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of ``dal ingest``: frames/s and peak RSS, local and to S3, at two dataset sizes.

Generates synthetic MARS sets (``dal synth``; kept under ``--workdir`` and reused while their
config is unchanged), ingests each one in a subprocess to a local folder and to a moto S3 server
started here, and prints a table. The ingest process's peak RSS comes from ``wait4``; frames/s
is the step's own figure (the run without interpreter start-up) and the wall time of the whole
command. Memory should stay flat from the smaller to the bigger set: the script reports the
growth and says whether it stays within ``--flat-tolerance-mb``. It does not fail on timings
(they swing with the load of the machine).

    python scripts/bench_ingest.py            # ~25 k and ~100 k frames at 128x64
    python scripts/bench_ingest.py --quick    # ~2 k and ~8 k frames at 64x32: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: make the repository's packages importable

from tests.servers import S3Server  # noqa: E402

FRAMES_PER_TRACKLET = 50  # MARS-like; 2 cameras x 1 tracklet per person


def synth_config(frames: int, height: int, width: int) -> dict:
    """A MARS layout of about ``frames`` frames: persons x 2 cameras x 50 frames."""
    persons = max(2, round(frames / (2 * FRAMES_PER_TRACKLET)))
    return {
        "layout": "mars",
        "num_identities": persons,
        "num_cameras": 2,
        "tracklets_per_camera": [1, 1],
        "frames_per_tracklet": [FRAMES_PER_TRACKLET, FRAMES_PER_TRACKLET],
        "num_distractors": 0,
        "image_height": height,
        "image_width": width,
        "seed": 0,
    }


def ensure_synthetic(
    workdir: Path, frames: int, height: int, width: int, synth_workers: int
) -> tuple[Path, int]:
    """The raw set for ``frames`` (generated unless an identical one is there); its frame count."""
    options = synth_config(frames, height, width)
    output = workdir / f"raw-mars-{frames}-{height}x{width}"
    marker = output / "synth.json"
    if marker.is_file():
        saved = json.loads(marker.read_text())
        if all(saved["config"].get(k) == v for k, v in options.items()):
            return output, int(saved["counts"]["frames"])
    command = [
        sys.executable,
        "-m",
        "components.cli",
        "synth",
        "--output",
        str(output),
        "--workers",
        str(synth_workers),
    ]
    for key, value in options.items():
        values = value if isinstance(value, list) else [value]
        command += [f"--{key.replace('_', '-')}", *map(str, values)]
    print(f"generating {output.name} ...", flush=True)
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return output, int(json.loads(marker.read_text())["counts"]["frames"])


def run_ingest(source: Path, output: str, env: dict[str, str], options: list[str]) -> dict:
    """One ``dal ingest`` in a subprocess: its summary, wall seconds and peak RSS (MiB)."""
    command = [
        *(sys.executable, "-m", "components.cli", "ingest", "--dataset", "mars"),
        *("--source", str(source), "--output", output, "--progress", "false", *options),
    ]
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err)
        # wait4 gives this child's own rusage (RUSAGE_CHILDREN would mix all children).
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise SystemExit(
                f"ingest to {output} failed ({process.returncode}):\n{err.read().decode()[-3000:]}"
            )
        summary = json.loads(out.read().decode())
    return {**summary, "wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024}  # Linux: KiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sets at 64x32 (a smoke run)")
    parser.add_argument("--sizes", type=int, nargs=2, default=None, help="the two frame counts to compare")
    parser.add_argument(
        "--workdir", default=str(REPO / "work" / "bench"), help="where raw sets and local outputs go"
    )
    parser.add_argument("--workers", type=int, default=4, help="ingest --workers")
    parser.add_argument(
        "--shard-size-mb",
        type=float,
        default=32.0,
        help="ingest --shard-size-mb; smaller than the default 100 so that both sizes hold several full "
        "shards (an S3 upload buffers up to a shard, so the peak follows the shard size)",
    )
    parser.add_argument("--synth-workers", type=int, default=2, help="dal synth --workers")
    parser.add_argument("--no-s3", action="store_true", help="skip the S3 runs")
    parser.add_argument(
        "--flat-tolerance-mb", type=float, default=64.0, help="allowed RSS growth, small -> big"
    )
    args = parser.parse_args(argv)
    sizes = args.sizes or ((2_000, 8_000) if args.quick else (25_000, 100_000))
    height, width = (64, 32) if args.quick else (128, 64)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    raws = [ensure_synthetic(workdir, size, height, width, args.synth_workers) for size in sizes]
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    options = ["--workers", str(args.workers), "--shard-size-mb", str(args.shard_size_mb)]
    results = []
    server = None if args.no_s3 else S3Server(Path(tempfile.mkdtemp(prefix="bench-s3-"))).start()
    try:
        if server is not None:
            server.create_bucket("bench")
        for (source, frames), size in zip(raws, sizes, strict=True):
            local = workdir / f"dataset-{size}"
            results.append(("local", frames, run_ingest(source, str(local), base_env, options)))
            shutil.rmtree(local, ignore_errors=True)
            if server is not None:
                env = {**base_env, **server.env}
                results.append(("s3", frames, run_ingest(source, f"s3://bench/dataset-{size}", env, options)))
    finally:
        if server is not None:
            server.stop()

    print(f"\ndal ingest, MARS layout, {height}x{width} JPEG, {' '.join(options)}, {os.cpu_count()} CPUs")
    print(f"{'target':<7} {'frames':>8} {'shards':>6} {'frames/s':>9} {'wall s':>7} {'peak RSS MiB':>13}")
    for target, frames, r in results:
        print(
            f"{target:<7} {frames:>8} {r['shards']:>6} {r['frames_per_s']:>9.0f} {r['wall_s']:>7.1f} "
            f"{r['peak_rss_mib']:>13.0f}"
        )
    for target in ("local", "s3"):
        rss = [r["peak_rss_mib"] for t, _, r in results if t == target]
        if len(rss) == 2:
            growth = rss[1] - rss[0]
            verdict = "flat" if growth <= args.flat_tolerance_mb else "NOT flat"
            print(
                f"{target}: peak RSS {rss[0]:.0f} -> {rss[1]:.0f} MiB for {sizes[1] / sizes[0]:.0f}x the "
                f"frames ({growth:+.0f} MiB: {verdict}, tolerance {args.flat_tolerance_mb:.0f} MiB)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput on this machine (a script, not a test): frames/s of

* ``loader``: the data stream alone (Parquet read, JPEG decode, resize, crop, flip, batch);
* ``step, no association``: forward + a dummy loss + backward + clip + optimizer + EMA;
* ``step, DAL``: the same step with the association loss and anchor updates;

at the global batch (64 by default), with the association's overhead as the ratio of the two
step rates. Steps run on batches already in memory, so they measure compute, not loading.
Frames are smooth random 256x128 JPEGs (about MARS's size) in a throwaway dataset.

    .venv/bin/python scripts/bench_train.py            # mobilenet_v1 at 224x112
    .venv/bin/python scripts/bench_train.py --quick    # a tiny backbone at 64x32, a few steps
    .venv/bin/python scripts/bench_train.py --anchors 8298   # the association at MARS's size

Timings on a shared machine swing a lot: compare the ratios, repeat runs before trusting numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torchvision.io import encode_jpeg

from components.common.dataset import Dataset, DatasetWriter
from components.common.distributed import DistEnv
from components.train.config import TrainConfig
from components.train.data import StreamOptions, TrainStream, build_index, make_loader, plan_row_groups
from components.train.objectives import DalObjective
from components.train.run import Trainer


class DummyObjective(nn.Module):
    """A loss with the same backward graph through the features, without any association."""

    def forward(
        self, features: Tensor, logits: Tensor | None, batch: dict[str, Tensor], cross_camera: bool
    ) -> tuple[Tensor, dict[str, Tensor]]:
        loss = features.pow(2).mean()
        return loss, {"loss": loss.detach()}


def write_frames(root: str, tracklets: int, frames: int, cameras: int = 2, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    with DatasetWriter(root, "bench", row_group_rows=1024) as writer:
        for t in range(tracklets):
            small = torch.from_numpy(rng.integers(0, 256, (frames, 3, 16, 8), dtype=np.uint8))
            big = torch.nn.functional.interpolate(small.float(), size=(256, 128), mode="bilinear")
            encoded = [bytes(encode_jpeg(f.clamp(0, 255).to(torch.uint8), quality=90).numpy()) for f in big]
            writer.add_frames(
                {
                    "tracklet_id": [t] * frames,
                    "frame_index": list(range(frames)),
                    "person_id": [t // cameras + 1] * frames,
                    "camera_id": [t % cameras] * frames,
                    "image": encoded,
                    "source_path": [f"{t}/{i}.jpg" for i in range(frames)],
                }
            )
            rows.append(
                {
                    "tracklet_id": t,
                    "person_id": t // cameras + 1,
                    "camera_id": t % cameras,
                    "subset": "train",
                    "is_query": False,
                    "num_frames": frames,
                    "name": str(t),
                }
            )
        writer.finish(pd.DataFrame(rows))


def rate(run_once: Callable[[], None], frames_per_call: int, calls: int, warmup: int) -> float:
    for _ in range(warmup):
        run_once()
    start = time.perf_counter()
    for _ in range(calls):
        run_once()
    return frames_per_call * calls / (time.perf_counter() - start)


def median_rates(
    runs: dict[str, Callable[[], None]], frames: int, calls: int, repeats: int
) -> dict[str, float]:
    """Median over ``repeats`` rounds that alternate the candidates (load drifts hit all alike)."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run_once in runs.items():
            samples[name].append(rate(run_once, frames, calls, warmup=1))
    return {name: float(np.median(values)) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny backbone, 64x32, few steps")
    parser.add_argument("--backbone", default=None, help="default: mobilenet_v1 (quick: timm:test_resnet)")
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per round (default 5, quick 2)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for the loader row")
    parser.add_argument(
        "--anchors",
        type=int,
        default=0,
        help="tracklets the association holds, split over 6 cameras (8298: MARS); 0: the bench dataset's",
    )
    args = parser.parse_args()
    backbone = args.backbone or ("timm:test_resnet" if args.quick else "mobilenet_v1")
    height = args.height or (64 if args.quick else 224)
    width = args.width or (32 if args.quick else 112)
    steps = args.steps or (2 if args.quick else 5)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        root = f"{tmp}/ds"
        write_frames(root, tracklets=64, frames=32 if args.quick else 64)
        dataset = Dataset.open(root)
        config = TrainConfig(
            dataset=root,
            output=f"{tmp}/run",
            backbone=backbone,
            weights="",  # speed does not depend on the init
            image_height=height,
            image_width=width,
            batch_size=args.batch_size,
            steps=10**6,
            warmup_epochs=0,
            device="cpu",
        )
        env = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
        index = build_index(dataset, 0)
        options = StreamOptions(
            seed=0, rank=0, world_size=1, batch_size=args.batch_size, image_size=(height, width)
        )
        stream = TrainStream(dataset, plan_row_groups(dataset, index), index, options)
        rows = []
        for workers in sorted({0, args.workers}):
            batches = iter(make_loader(stream, workers))
            # Drain the workers' prefetch queue first so that it does not inflate the rate.
            loader_rate = rate(lambda b=batches: next(b), args.batch_size, 10 * steps, warmup=2 * workers + 2)
            rows.append((f"loader ({workers} workers)", loader_rate))
            del batches
        batch = next(iter(stream))
        with_dal = Trainer(config, env)
        if args.anchors:
            sizes = [args.anchors // 6 + (c < args.anchors % 6) for c in range(6)]
            fake = dataclasses.replace(index, tracklets_per_camera=tuple(sizes))
            feature_dim = with_dal.state.network.backbone.feature_dim
            with_dal.state.objective = DalObjective(fake, feature_dim, config.margin, config.eta, "bench")
        without = Trainer(config, env)
        without.state.objective = DummyObjective()

        def stepper(trainer: Trainer) -> Callable[[], None]:
            def one_step() -> None:
                trainer.train_step(batch, False)

            return one_step

        runs = {"step, no association": stepper(without), "step, DAL": stepper(with_dal)}
        step_rates = median_rates(runs, args.batch_size, steps, repeats=3)
        rows.extend(step_rates.items())

    overhead = step_rates["step, no association"] / step_rates["step, DAL"] - 1
    anchors = args.anchors or sum(index.tracklets_per_camera)
    print(
        f"\n{backbone} {height}x{width}, batch {args.batch_size}, {anchors} tracklet anchors, "
        f"CPU threads {torch.get_num_threads()}"
    )
    print(f"{'measurement':<24}{'frames/s':>12}")
    for name, value in rows:
        print(f"{name:<24}{value:>12.1f}")
    print(f"{'association overhead':<24}{overhead:>11.1%}")


if __name__ == "__main__":
    main()

"""``dal``: one command with a subcommand per pipeline step (the containers run the same).

Each step is a frozen config dataclass plus ``run(config)``; the flags are generated from the
dataclass fields so that defaults are declared once. Step modules are imported only when their
subcommand runs, so ``dal --help`` does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from components.common import config as config_lib
from components.common.errors import DalError


@dataclasses.dataclass(frozen=True)
class Step:
    config: str  # "module:ClassName" of the frozen config dataclass (must not import torch)
    runner: str  # "module:function" taking the config, returning a summary (JSON dict or .to_json())
    help: str


STEPS: dict[str, Step] = {
    "synth": Step(
        "components.ingest.synthetic_config:SynthConfig",
        "components.ingest.synthetic:run",
        "generate a synthetic multi-camera dataset in a real raw layout (MARS, PRID2011, iLIDS-VID)",
    ),
    "ingest": Step(
        "components.ingest.config:IngestConfig",
        "components.ingest.run:run",
        "raw dataset layout -> Parquet shards, tracklet/split tables and a manifest in storage",
    ),
    "train": Step(
        "components.train.config:TrainConfig",
        "components.train.run:run",
        "train a feature extractor with Deep Association Learning (works under torchrun)",
    ),
    "extract": Step(
        "components.extract.config:ExtractConfig",
        "components.extract.run:run",
        "tracklet features of a trained model -> features.parquet",
    ),
    "evaluate": Step(
        "components.evaluate.config:EvaluateConfig",
        "components.evaluate.run:run",
        "CMC rank-k and mAP under the benchmark protocol, with plots",
    ),
    "search": Step(
        "components.search.config:SearchConfig",
        "components.search.run:run",
        "rank gallery tracklets for query tracklets (ids, features or new frames) -> ranked table + PNG",
    ),
    "export": Step(
        "components.export.config:ExportConfig",
        "components.export.run:run",
        "export a trained model to ONNX (dynamic batch, preprocessing inside), checked with onnxruntime",
    ),
    "aggregate": Step(
        "components.evaluate.config:AggregateConfig",
        "components.evaluate.aggregate:run",
        "average per-split evaluations (PRID2011 / iLIDS-VID) into mean ± std CMC and mAP",
    ),
}

# Subcommands that bring their own argument parsing: "module" exposing
# add_arguments(parser) and main(args) -> int.
COMMANDS: dict[str, tuple[str, str]] = {
    "pipeline": ("pipelines.cli", "compile, submit or run the Kubeflow pipeline"),
}


def _load(reference: str) -> Any:
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dal",
        description="Deep Association Learning for unsupervised video person re-ID: the pipeline steps.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, step in STEPS.items():
        step_parser = sub.add_parser(name, help=step.help, description=step.help)
        config_lib.add_arguments(step_parser, _load(step.config))
        step_parser.set_defaults(_step=step)
    for name, (module, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(command_parser)
        command_parser.set_defaults(_command=module)
    return parser


def _setup_logging() -> None:
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank{rank}] %(name)s %(levelname)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging()
    try:
        if hasattr(args, "_command"):
            return int(importlib.import_module(args._command).main(args) or 0)
        step: Step = args._step
        config = config_lib.from_args(_load(step.config), args)
        summary = _load(step.runner)(config)
    except DalError as exc:
        print(f"dal {args.command}: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))  # e.g. 143 after preemption: retryable
    except KeyboardInterrupt:
        print(f"dal {args.command}: interrupted", file=sys.stderr)
        return 130
    if summary is not None and int(os.environ.get("RANK", "0")) == 0:
        record = summary.to_json() if hasattr(summary, "to_json") else summary  # typed summaries
        print(json.dumps(record, indent=2, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

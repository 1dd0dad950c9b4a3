"""`dal pipeline run/submit`: step options as FIELD=VALUE flags, checked before anything runs."""

from __future__ import annotations

import pytest

from components.cli import build_parser, main
from components.train.config import TRAIN_OPTIONS
from pipelines.cli import _given, step_options


def _args(*argv: str):
    return build_parser().parse_args(["pipeline", "run", *argv])


def test_every_options_parameter_has_a_flag_and_the_flags_complete_the_options() -> None:
    assert set(step_options()) == {
        "ingest_options",
        "train_options",
        "extract_options",
        "evaluate_options",
        "trainjob_options",
    }
    given = _given(
        _args("--dataset", "prid2011", "--train", "lr=0.01", "steps=300", "--train", "optimizer=sgd")
    )
    assert given["dataset"] == "prid2011"
    # All options go to KFP: the given ones typed, the rest at the dataclass defaults.
    assert given["train_options"] == {
        **TRAIN_OPTIONS.defaults(),
        "lr": 0.01,
        "steps": 300,
        "optimizer": "sgd",
    }
    assert "extract_options" not in given  # not given: the pipeline's defaults apply
    own = _given(_args("--dataset", "tracklets", "--ingest", "index=s3://raw/index.csv"))
    assert own["ingest_options"]["index"] == "s3://raw/index.csv"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--train", "lr=-1"], "train_options.lr: must be >= 0"),
        (["--evaluate", "max_rank=5"], "evaluate_options.max_rank: must be >= 20, got 5"),
        (["--extract", "pooling=median"], "extract_options.pooling: argument --pooling: invalid choice"),
        (["--train", "stepz=3"], "train_options.stepz: unknown option"),
        (["--trainjob", "keep=sometimes"], "trainjob_options.keep: "),
        # 64 frames do not split over 3 nodes x 1 GPU: refused before any node is scheduled.
        (["--nodes", "3"], "batch_size: 64 does not split evenly over 3 ranks"),
        (["--nodes", "0"], "nodes: must be >= 1, got 0"),
        # Checked against the dataset given: an index file belongs to the tracklets layout only.
        (["--ingest", "index=raw/index.csv"], "ingest_options.index: only for the tracklets dataset"),
        (
            ["--dataset", "videos", "--ingest", "frame_stride=0"],
            "ingest_options.frame_stride: must be at least 1",
        ),
    ],
)
def test_a_bad_option_fails_submit_before_any_connection_naming_the_field(
    argv: list[str], message: str, capsys, monkeypatch
) -> None:
    # A host that would fail if it were contacted: the options are checked first.
    monkeypatch.setenv("KFP_HOST", "http://127.0.0.1:9")
    assert main(["pipeline", "submit", *argv]) == 2
    assert message in capsys.readouterr().err


def test_submit_without_a_host_says_what_to_set(capsys, monkeypatch) -> None:
    monkeypatch.delenv("KFP_HOST", raising=False)
    assert main(["pipeline", "submit", "--train", "lr=0.01"]) == 2
    assert "set KFP_HOST" in capsys.readouterr().err

"""Dataclass configs <-> argparse flags <-> dicts: one declaration of every default."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Literal

import pytest

from components.common.config import (
    ConfigError,
    add_arguments,
    from_args,
    from_dict,
    parse_field,
    require,
    to_argv,
    to_dict,
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Example:
    name: str = dataclasses.field(metadata={"help": "required"})
    steps: int = 10
    lr: float = 0.5
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    size: tuple[int, int] = (4, 2)
    items: tuple[str, ...] = ("x",)
    limit: int | None = None

    def __post_init__(self) -> None:
        require(self.steps > 0, "steps", f"must be positive, got {self.steps}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_arguments(parser, Example)
    return parser


def test_defaults_and_types_from_flags() -> None:
    config = from_args(Example, _parser().parse_args(["--name", "n"]))
    assert config == Example(name="n")
    config = from_args(
        Example,
        _parser().parse_args(
            [
                "--name",
                "n",
                "--steps",
                "3",
                "--flag",
                "true",
                "--mode",
                "b",
                "--size",
                "8",
                "4",
                "--items",
                "p",
                "q",
                "--limit",
                "7",
                "--lr",
                "0.25",
            ]
        ),
    )
    assert config == Example(
        name="n", steps=3, flag=True, mode="b", size=(8, 4), items=("p", "q"), limit=7, lr=0.25
    )


def test_round_trip_through_argv_and_dict() -> None:
    config = Example(name="n", steps=3, flag=True, mode="b", size=(8, 4), items=("p", "q"), limit=None)
    assert from_args(Example, _parser().parse_args(to_argv(config))) == config
    assert from_dict(Example, to_dict(config)) == config


def test_errors_name_the_field() -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args([])  # --name is required
    with pytest.raises(SystemExit):
        _parser().parse_args(["--name", "n", "--mode", "c"])
    with pytest.raises(ConfigError, match="steps: must be positive"):
        from_args(Example, _parser().parse_args(["--name", "n", "--steps", "0"]))
    with pytest.raises(ConfigError, match="unknown field"):
        from_dict(Example, {"name": "n", "nope": 1})


def test_parse_field_parses_as_the_flag_does() -> None:
    assert parse_field(Example, "steps", "3") == 3
    assert parse_field(Example, "lr", "1e-3") == pytest.approx(1e-3)
    assert parse_field(Example, "flag", "true") is True
    assert parse_field(Example, "mode", "b") == "b"
    assert parse_field(Example, "size", "8 4") == (8, 4)
    assert parse_field(Example, "items", "p q r") == ("p", "q", "r")
    assert parse_field(Example, "limit", "none") is None and parse_field(Example, "limit", "7") == 7
    assert parse_field(Example, "name", "") == ""  # a required field parses too


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("steps", "ten", "steps: .*invalid int value"),
        ("mode", "c", "mode: .*invalid choice"),
        ("flag", "maybe", "flag: .*expected a boolean"),
        ("size", "8", "size: .*expected 2 arguments"),
        ("missing", "1", "Example has no field 'missing'"),
    ],
)
def test_parse_field_names_the_bad_field(name: str, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_field(Example, name, text)


def test_a_bare_boolean_flag_means_true() -> None:
    assert from_args(Example, _parser().parse_args(["--name", "n", "--flag"])).flag is True
    assert from_args(Example, _parser().parse_args(["--name", "n", "--flag", "false"])).flag is False
    assert from_args(Example, _parser().parse_args(["--flag", "--name", "n"])).flag is True  # next flag
    assert parse_field(Example, "flag", "false") is False

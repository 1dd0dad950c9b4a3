"""A step's options as one typed pipeline parameter, generated from the step's config dataclass.

The pipeline takes each step's user-settable config fields as one ``dict`` parameter (a JSON
object in the KFP UI, ``--train lr=0.01`` on ``dal pipeline run/submit``), so that every field a
user may set is reachable without re-declaring it: names, defaults, types and validation are the
dataclass's. The fields the pipeline sets per task (paths, split, tracking) are not options.

The same options are checked three times, always by the dataclass: when the CLI parses them,
when the pipeline's first task opens the run (a value typed into the KFP UI), and in each pod.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar

from components.common.config import ConfigError, parse_field
from components.common.tracking import TrackingOptions

T = TypeVar("T")
_TRACKING_FIELDS = frozenset(f.name for f in dataclasses.fields(TrackingOptions))


@dataclasses.dataclass(frozen=True)
class StepOptions(Generic[T]):
    """The user-settable fields of ``config_cls``: all but ``pipeline_fields`` and tracking."""

    parameter: str  # the pipeline parameter's name, e.g. "train_options" (named in every error)
    config_cls: type[T]
    pipeline_fields: frozenset[str]

    def __post_init__(self) -> None:
        names = {f.name for f in dataclasses.fields(self.config_cls)}  # type: ignore[arg-type]
        unknown = sorted(set(self.pipeline_fields) - names)
        if unknown:
            raise TypeError(f"{self.config_cls.__name__} has no field(s) {unknown}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(
            f.name
            for f in dataclasses.fields(self.config_cls)  # type: ignore[arg-type]
            if f.init and f.name not in self.pipeline_fields and f.name not in _TRACKING_FIELDS
        )

    def defaults(self) -> dict[str, Any]:
        """Every option with its default, JSON-ready: the pipeline parameter's default value."""
        fields = {f.name: f for f in dataclasses.fields(self.config_cls)}  # type: ignore[arg-type]
        result = {}
        for name in self.names:
            field = fields[name]
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise TypeError(f"{self.config_cls.__name__}.{name}: an option needs a default")
            value = field.default if field.default is not dataclasses.MISSING else field.default_factory()
            result[name] = list(value) if isinstance(value, tuple) else value
        return result

    def parse(self, assignments: Iterable[str]) -> dict[str, Any]:
        """``["lr=0.01", "steps=300"]`` as typed values, each parsed as its ``--flag`` would be."""
        values = {}
        for assignment in assignments:
            name, sep, text = assignment.partition("=")
            if not sep:
                raise ConfigError(f"{self.parameter}: expected FIELD=VALUE, got {assignment!r}")
            values[name.strip()] = self._parse_one(name.strip(), text)
        return values

    def coerce(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` (JSON from the KFP UI or a pod's arguments) as the fields' Python types.

        JSON numbers reach a pod as doubles (a protobuf Struct): an integral 300.0 is 300 again.
        """
        if not isinstance(values, Mapping):
            raise ConfigError(f"{self.parameter}: expected a JSON object, got {type(values).__name__}")
        return {name: self._parse_one(name, _as_text(value)) for name, value in values.items()}

    def build(self, values: Mapping[str, Any], **pipeline_values: Any) -> T:
        """The step's config from the options plus the fields the pipeline sets for this task."""
        options = self.coerce(values)
        try:
            return self.config_cls(**options, **pipeline_values)
        except ConfigError as exc:
            raise ConfigError(f"{self.parameter}.{exc}") from exc

    def validate(self, values: Mapping[str, Any], **pipeline_values: Any) -> dict[str, Any]:
        """Check the options as the pod will (``pipeline_values`` where known, e.g. the dataset,
        placeholders for the other pipeline fields); returns every option, the given ones typed and
        the rest at their defaults, JSON-ready (what the run records and submits). Values the config
        resolves itself (e.g. a namespace from the pod) stay as given: they resolve where the step
        runs, not here."""
        given = self.coerce(values)
        self.build(given, **{**self._placeholders(), **pipeline_values})
        typed = {k: list(v) if isinstance(v, tuple) else v for k, v in given.items()}
        return {**self.defaults(), **typed}

    def _parse_one(self, name: str, text: str) -> Any:
        if name not in self.names:
            known = ", ".join(self.names)
            why = (
                "set by the pipeline, not an option"
                if name in self.pipeline_fields | _TRACKING_FIELDS
                else "unknown option"
            )
            raise ConfigError(f"{self.parameter}.{name}: {why}; the options are: {known}")
        try:
            return parse_field(self.config_cls, name, text)
        except ConfigError as exc:
            raise ConfigError(f"{self.parameter}.{exc}") from exc

    def _placeholders(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field in dataclasses.fields(self.config_cls):  # type: ignore[arg-type]
            if field.name in self.pipeline_fields and field.default is dataclasses.MISSING:
                values[field.name] = "set-by-the-pipeline"  # the required fields are paths (str)
        return values


def _as_text(value: Any) -> str:
    """A JSON value as the text its ``--flag`` would get."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a double that was an int; float fields parse "300" as 300.0
    if isinstance(value, list | tuple):
        return " ".join(_as_text(v) for v in value)
    if value is None:
        return "none"
    return str(value)


def integral(value: Any) -> Any:
    """A dict parameter travels as a protobuf Struct: its numbers become doubles, and pipeline
    parameters inside it arrive as their text ("2.0"). An integral one is an int again."""
    text = str(value)
    if isinstance(value, float | str) and text.endswith(".0") and text[:-2].lstrip("-").isdigit():
        return int(text[:-2])
    return value

"""Typed step configs: dataclass <-> argparse <-> plain dict.

Every step owns a frozen dataclass whose ``__post_init__`` validates it. The CLI flags, the
KFP parameters and the MLflow params are all derived from those fields here, so a default is
declared exactly once. Help text lives in ``field(metadata={"help": ...})``.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from components.common.errors import DalError

T = TypeVar("T")


class ConfigError(DalError, ValueError):
    """A config field has a value that cannot work; the message names the field."""


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {text!r}")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """Add one ``--flag`` per dataclass field; fields without a default become required."""
    hints = get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        if field.init:
            parser.add_argument(_flag(field.name), **_argument(config_cls, field, hints[field.name]))


def parse_field(config_cls: type, name: str, text: str) -> Any:
    """``text`` as the value of field ``name``, parsed exactly as its ``--flag`` would parse it
    (e.g. for ``FIELD=VALUE`` overrides); a bad name or value raises ConfigError naming it."""
    fields = {f.name: f for f in dataclasses.fields(config_cls) if f.init}
    if name not in fields:
        raise ConfigError(f"{config_cls.__name__} has no field {name!r}")
    kwargs = {k: v for k, v in _argument(config_cls, fields[name], get_type_hints(config_cls)[name]).items()}
    kwargs.pop("required", None)
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    parser.add_argument(_flag(name), **kwargs)
    values = text.split() if kwargs.get("nargs") else [text]
    try:
        value = getattr(parser.parse_args([_flag(name), *values]), name)
    except (argparse.ArgumentError, argparse.ArgumentTypeError) as exc:
        raise ConfigError(f"{name}: {exc}") from exc
    return tuple(value) if isinstance(value, list) else value


def _argument(config_cls: type, field: dataclasses.Field, hint: Any) -> dict[str, Any]:
    """``add_argument`` keywords of one field: type, choices, nargs, default and help."""
    tp, optional = _strip_optional(hint)
    kwargs: dict[str, Any] = {"dest": field.name, "help": field.metadata.get("help", "")}
    has_default = (
        field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING  # type: ignore[misc]
    )
    if has_default:
        default = (
            field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[misc]
        )
        kwargs["default"] = default
        kwargs["help"] += f" (default: {default})"
    else:
        kwargs["required"] = True

    origin = get_origin(tp)
    if tp is bool:
        kwargs["type"] = _parse_bool
        kwargs["metavar"] = "{true,false}"
        kwargs["nargs"], kwargs["const"] = "?", True  # a bare --flag means true
    elif origin is Literal:
        choices = list(get_args(tp))
        kwargs["type"] = type(choices[0])
        kwargs["choices"] = choices
    elif origin in (tuple, list):
        item_type = get_args(tp)[0]
        kwargs["type"] = item_type
        fixed_length = origin is tuple and ... not in get_args(tp)
        kwargs["nargs"] = len(get_args(tp)) if fixed_length else "+"
    elif tp in (int, float, str):
        kwargs["type"] = tp
    else:
        raise TypeError(f"{config_cls.__name__}.{field.name}: unsupported field type {tp!r}")
    if optional and kwargs.get("type") is not None and tp is not bool:
        inner = kwargs["type"]
        kwargs["type"] = lambda text, _inner=inner: None if text.lower() == "none" else _inner(text)
    return kwargs


def from_args(config_cls: type[T], namespace: argparse.Namespace) -> T:
    """Build the config from parsed flags; list values become tuples to keep configs frozen."""
    values = {}
    for field in dataclasses.fields(config_cls):  # type: ignore[arg-type]
        if field.init and hasattr(namespace, field.name):
            value = getattr(namespace, field.name)
            values[field.name] = tuple(value) if isinstance(value, list) else value
    return config_cls(**values)


def from_dict(config_cls: type[T], values: dict[str, Any]) -> T:
    """Build a config from a dict (e.g. a saved checkpoint's config); unknown keys are an error."""
    names = {f.name for f in dataclasses.fields(config_cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{config_cls.__name__}: unknown field(s) {', '.join(unknown)}")
    cleaned = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return config_cls(**cleaned)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain, JSON-serialisable dict of a config (tuples become lists)."""
    result = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        result[field.name] = list(value) if isinstance(value, tuple) else value
    return result


def require(condition: bool, field: str, message: str) -> None:
    """Validation helper for ``__post_init__``: raise a ConfigError that names the field."""
    if not condition:
        raise ConfigError(f"{field}: {message}")


def to_argv(config: Any) -> list[str]:
    """The ``--flag value`` list that parses back (``add_arguments``) into an equal config."""
    argv: list[str] = []
    for field in dataclasses.fields(config):
        if not field.init:
            continue
        value = getattr(config, field.name)
        if value is None:
            argv += [_flag(field.name), "none"]
        elif isinstance(value, tuple | list):
            argv += [_flag(field.name), *(str(v) for v in value)]
        else:
            argv += [_flag(field.name), str(value).lower() if isinstance(value, bool) else str(value)]
    return argv

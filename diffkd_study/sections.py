"""The one section parser: a YAML mapping, or a notebook's parameters, checked into a section dataclass.

A section is a frozen dataclass whose fields are typed (``bool``, ``int``, ``float``, ``str``, tuples of
them, ``X | None``, nested sections, and mappings ``dict[str, X]`` / ``Mapping[str, X]`` with string keys)
and whose ``__post_init__`` checks the values (raising ``ValueError``, or :class:`FieldError` to name the
field). :func:`parse_section` reads a section from the study config's YAML, :func:`section_from_parameters`
from a notebook's papermill parameters, and :func:`section_parameters` turns a section back into notebook
parameters (literal values only): the same type checks and the same error texts everywhere. Named
profiles (:mod:`diffkd_study.profiles`) are applied while parsing.

A leaf module: it imports nothing of ``diffkd_study``, so every section module can use it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

__all__ = ["ConfigError", "FieldError", "check_range", "parse_section", "section_from_parameters",
           "section_parameters"]


class ConfigError(ValueError):
    """A study config is malformed; the message names the file and the key."""


class FieldError(ValueError):
    """A section's check that fails on one field: the parsers report it at that key (``where.field: message``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def check_range(field: str, value: float, low: float | None = None, high: float | None = None) -> None:
    """Raise :class:`FieldError` when ``value`` lies outside ``[low, high]`` (``None``: unbounded on that side)."""
    if (low is not None and value < low) or (high is not None and value > high):
        raise FieldError(field, f"{value!r} is outside [{low}, {high}]")


def _expect(mapping: Any, where: str, allowed: set[str], required: set[str] = frozenset()) -> Mapping[str, Any]:
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(mapping).__name__}")
    unknown = set(mapping) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    missing = set(required) - set(mapping)
    if missing:
        raise ConfigError(f"{where}: required key(s) {sorted(missing)} missing")
    return mapping


def _number(value: Any, where: str, kind: type, low: float | None = None, high: float | None = None) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{where}: {value!r} is outside [{low}, {high}]")
    return kind(value)


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
    return tuple(str(v) for v in value)


def _check_value(value: Any, hint: Any, where: str) -> Any:
    """``value`` (from YAML or a notebook) checked against the type annotation ``hint``; tuples from lists,
    plain dicts from mappings."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None:
            if type(None) in options:
                return None
            raise ConfigError(f"{where}: a value is required")
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _check_value(value, option, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {hint}")
    if origin is tuple:
        args = typing.get_args(hint)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and args[0] is str:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_check_value(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping):
        key_hint, value_hint = typing.get_args(hint)
        if key_hint is not str:
            raise TypeError(f"{where}: mapping keys must be typed str, got {hint!r}")  # a programming error
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{where}: keys must be strings, got {key!r}")
            out[key] = _check_value(item, value_hint, f"{where}.{key}")
        return out
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint in (int, float):
        return _number(value, where, hint)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if dataclasses.is_dataclass(hint):
        return parse_section(value, hint, where)
    raise TypeError(f"{where}: unsupported field type {hint!r} in a stage section")  # a programming error


def parse_section(raw: Any, cls: type, where: str) -> Any:
    """A section (a YAML mapping; ``None``: all defaults) as an instance of the dataclass ``cls``.

    Unknown keys, missing required keys (fields without a default), wrong types and the dataclass's own
    ``__post_init__`` checks all become a :class:`ConfigError` that names the file and the key (a
    :class:`FieldError` is reported at its field, ``where.field``); missing keys take the defaults. A class
    with named profiles (a ``PROFILES`` attribute, :class:`diffkd_study.profiles.Profiles`) takes the values
    of the profile its ``profile`` key selects first; the keys given override them.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    mapping = raw or {}
    profiles = getattr(cls, "PROFILES", None)  # a diffkd_study.profiles.Profiles (duck-typed: this is a leaf)
    if profiles is not None and isinstance(mapping, Mapping):
        try:
            mapping = profiles.apply(cls, mapping, where)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    mapping = _expect(mapping, where, names, required)
    values = {name: _check_value(value, hints[name], f"{where}.{name}") for name, value in mapping.items()}
    try:
        return cls(**values)
    except FieldError as err:
        raise ConfigError(f"{where}.{err.field}: {err.message}") from None
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None


def section_from_parameters(cls: type, params: Mapping[str, Any], where: str) -> Any:
    """The section ``cls`` from a notebook's parameters (papermill passes tuples as lists, sections as dicts).

    The parameters named like a field of ``cls`` are checked as :func:`parse_section` checks a YAML section
    (a :class:`ConfigError`, a ``ValueError``, names ``where`` and the parameter); every other name, such
    as the run's common parameters, is ignored, and a field without a parameter takes its profile's value
    (when the class has named profiles) or its default.
    """
    present = {f.name: params[f.name] for f in dataclasses.fields(cls) if f.name in params}
    return parse_section(present, cls, where)


def section_parameters(section: Any) -> dict[str, Any]:
    """A section's fields as notebook parameters: literal values only (tuples as lists, nested sections and
    mappings as dicts), the inverse of :func:`section_from_parameters`."""
    def literal(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return section_parameters(value)
        if isinstance(value, Mapping):
            return {key: literal(item) for key, item in value.items()}
        return [literal(v) for v in value] if isinstance(value, (list, tuple)) else value

    return {f.name: literal(getattr(section, f.name)) for f in dataclasses.fields(section)}

"""What a stage hands on: its result in the run (:class:`StageResult`) and the part of the index page its
notebook writes (:class:`IndexSection`, with its :class:`IndexTable` and :class:`IndexFigure` records).

A leaf module (no torch, nothing of the package): the notebooks, the runner, the index page and the summary
import it. A stage notebook builds an ``IndexSection`` and stores ``IndexSection.to_dict()`` under
``index_section`` in its metrics JSON; the index page and the summary read it back with
``IndexSection.from_dict``, which names the stage and the field when the JSON has another shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["IndexFigure", "IndexSection", "IndexSectionError", "IndexTable", "StageRecord", "StageResult"]


@dataclass
class StageResult:
    """One stage's outcome in a run: its status, wall time, error (why it failed or was skipped) and the metrics
    JSON its notebook wrote (empty when there is none); the runner records it and the index page shows it."""

    stage: str
    notebook: str
    status: str  # "ok" | "cached" (re-used, unchanged) | "failed" | "skipped" (error then says why)
    wall_s: float
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The result for the run records: stage, notebook, status, wall time (rounded to 0.01 s) and error."""
        return {"stage": self.stage, "notebook": self.notebook, "status": self.status,
                "wall_s": round(self.wall_s, 2), "error": self.error}


class IndexSectionError(ValueError):
    """An index section (or one of its tables or figures) with an unknown or missing key or a value of the wrong
    type; the message names the field (``index_section.tables[1].caption``) and, when read from a metrics JSON,
    the stage."""


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_text(value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise IndexSectionError(f"{where} must be a string, got {_kind(value)}")


def _check_list(value: Any, where: str, what: str) -> None:
    if not isinstance(value, list):
        raise IndexSectionError(f"{where} must be a list of {what}, got {_kind(value)}")


def _check_texts(value: Any, where: str) -> None:
    _check_list(value, where, "strings")
    for i, item in enumerate(value):
        _check_text(item, f"{where}[{i}]")


def _check_records(value: Any, where: str) -> None:
    _check_list(value, where, "records")
    for i, row in enumerate(value):
        if not isinstance(row, dict) or not all(isinstance(key, str) for key in row):
            raise IndexSectionError(f"{where}[{i}] must be a record (column name -> value), got {_kind(row)}")


def _items_of(kind: type) -> Callable[[Any, str], None]:
    def check(value: Any, where: str) -> None:
        _check_list(value, where, f"{kind.__name__} records")
        for i, item in enumerate(value):
            if not isinstance(item, kind):
                raise IndexSectionError(f"{where}[{i}] must be an {kind.__name__}, got {_kind(item)}")

    return check


Checks = dict[str, Callable[[Any, str], None]]


def _check_fields(values: Mapping[str, Any], checks: Checks, where: str) -> None:
    """Run the check of every field present in ``values`` (a record's fields, or the keys of its JSON)."""
    for key, check in checks.items():
        if key in values:
            check(values[key], f"{where}.{key}")


def _keys(data: Any, where: str, checks: Checks, required: tuple[str, ...]) -> dict[str, Any]:
    """``data`` as a dict, after checking that it is a JSON object with every required key and no other."""
    if not isinstance(data, Mapping):
        raise IndexSectionError(f"{where} must be an object, got {_kind(data)}")
    unknown = [key for key in data if key not in checks]
    if unknown:
        raise IndexSectionError(f"{where} has unknown key(s) {unknown}; known keys: {', '.join(checks)}")
    missing = [key for key in required if key not in data]
    if missing:
        raise IndexSectionError(f"{where} lacks the key(s) {missing}")
    return dict(data)


def _present(record: Any, names: Checks) -> dict[str, Any]:
    """A record's fields that are set (``None`` means left out of the JSON)."""
    return {name: getattr(record, name) for name in names if getattr(record, name) is not None}


_TABLE_CHECKS: Checks = {"title": _check_text, "caption": _check_text, "records": _check_records}
_FIGURE_CHECKS: Checks = {"png": _check_text, "title": _check_text, "caption": _check_text}


@dataclass(frozen=True)
class IndexTable:
    """A table of a stage's index section: its title, its rows as records (column name -> value; the columns
    are the first record's keys, as :func:`diffkd_study.nbutil.records` writes them) and an optional caption
    (``None``: the JSON has no ``caption`` key)."""

    title: str
    records: list[dict[str, Any]]
    caption: str | None = None

    def __post_init__(self) -> None:
        _check_fields(_present(self, _TABLE_CHECKS), _TABLE_CHECKS, "IndexTable")

    def to_dict(self) -> dict[str, Any]:
        """The table as the metrics JSON holds it: ``title``, ``caption`` (when set), ``records``."""
        caption = {} if self.caption is None else {"caption": self.caption}
        return {"title": self.title, **caption, "records": [dict(row) for row in self.records]}

    @classmethod
    def from_dict(cls, data: Any, where: str = "IndexTable") -> IndexTable:
        """The table of a JSON object; an :class:`IndexSectionError` naming ``where`` if it has another shape."""
        values = _keys(data, where, _TABLE_CHECKS, ("title", "records"))
        _check_fields(values, _TABLE_CHECKS, where)
        return cls(**values)


@dataclass(frozen=True)
class IndexFigure:
    """A figure of a stage's index section: the PNG file (relative to the report folder), its title (the
    image's alternative text) and its caption."""

    png: str
    title: str
    caption: str

    def __post_init__(self) -> None:
        _check_fields(_present(self, _FIGURE_CHECKS), _FIGURE_CHECKS, "IndexFigure")

    def to_dict(self) -> dict[str, Any]:
        """The figure as the metrics JSON holds it: ``png``, ``title``, ``caption``."""
        return {"png": self.png, "title": self.title, "caption": self.caption}

    @classmethod
    def from_dict(cls, data: Any, where: str = "IndexFigure") -> IndexFigure:
        """The figure of a JSON object; an :class:`IndexSectionError` naming ``where`` if it has another shape."""
        values = _keys(data, where, _FIGURE_CHECKS, ("png", "title", "caption"))
        _check_fields(values, _FIGURE_CHECKS, where)
        return cls(**values)


_SECTION_CHECKS: Checks = {"title": _check_text, "text": _check_texts, "tables": _items_of(IndexTable),
                           "figures": _items_of(IndexFigure), "limitations": _check_texts}
_SECTION_RECORDS: dict[str, type[IndexTable] | type[IndexFigure]] = {"tables": IndexTable, "figures": IndexFigure}


@dataclass(frozen=True)
class IndexSection:
    """A stage's part of the index page: a heading (``title``), paragraphs (``text``), then its tables, its
    figures and its limitations (the summary gathers every stage's limitations). A field left at ``None`` is
    left out of the JSON (the page then shows nothing for it); an empty list is written as one."""

    title: str
    text: list[str]
    tables: list[IndexTable] | None = None
    figures: list[IndexFigure] | None = None
    limitations: list[str] | None = None

    def __post_init__(self) -> None:
        _check_fields(_present(self, _SECTION_CHECKS), _SECTION_CHECKS, "IndexSection")

    def to_dict(self) -> dict[str, Any]:
        """The ``index_section`` of the stage's metrics JSON: ``title``, ``text``, then ``tables``, ``figures``
        and ``limitations`` where set, in that order."""
        out: dict[str, Any] = {"title": self.title, "text": list(self.text)}
        if self.tables is not None:
            out["tables"] = [table.to_dict() for table in self.tables]
        if self.figures is not None:
            out["figures"] = [figure.to_dict() for figure in self.figures]
        if self.limitations is not None:
            out["limitations"] = list(self.limitations)
        return out

    @classmethod
    def from_dict(cls, data: Any, *, stage: str) -> IndexSection:
        """The ``index_section`` a stage wrote in its metrics JSON; an :class:`IndexSectionError` naming the stage
        and the field on an unknown or missing key or a value of the wrong type."""
        where = "index_section"
        try:
            values = _keys(data, where, _SECTION_CHECKS, ("title", "text"))
            for key, record in _SECTION_RECORDS.items():
                if key in values:
                    _check_list(values[key], f"{where}.{key}", f"{record.__name__} records")
                    values[key] = [record.from_dict(item, f"{where}.{key}[{i}]") for i, item in enumerate(values[key])]
            _check_fields(values, _SECTION_CHECKS, where)
            return cls(**values)
        except IndexSectionError as err:
            raise IndexSectionError(f"stage {stage}: {err}") from None


class StageRecord:
    """Base of a frozen dataclass that a stage writes as its JSON record (``records.json``) and reads back.

    :meth:`to_dict` is the record (the fields in declaration order, nested dataclasses as dicts) and
    :meth:`from_dict` the instance of a record that :meth:`to_dict` wrote.
    """

    def to_dict(self) -> dict[str, Any]:
        """The record as written to the stage's JSON file."""
        return asdict(self)  # type: ignore[call-overload]  (subclasses are dataclasses)

    @classmethod
    def from_dict(cls, records: Mapping[str, Any]) -> Any:
        """The result of a record (as :meth:`to_dict` wrote it)."""
        return cls(**records)

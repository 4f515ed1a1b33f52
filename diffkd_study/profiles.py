"""Named profiles of a section: presets (field -> value) that a section's ``profile`` key selects.

A section class declares its presets as a class attribute, ``PROFILES: ClassVar[Profiles] = Profiles({...})``,
next to its fields. :func:`diffkd_study.sections.parse_section` (and so ``section_from_parameters``) applies
them while it parses: the section's ``profile`` key (or that field's default) picks a preset, the preset's
values replace the dataclass defaults, and the keys the YAML (or the notebook) gives override the preset.
Every consumer therefore sees resolved values; no field means "the profile's value".

The default profile's preset may name fields too, but only with their dataclass defaults (checked), so that
``Section()`` and a parsed empty section are the same. A key named like a profile (the retired nested
``cpu:`` / ``full:`` blocks) is refused with a message that says how to write it now.

A leaf module: it imports nothing of ``diffkd_study``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Profiles"]


@dataclass(frozen=True)
class Profiles:
    """The named presets of one section class: ``{profile name: {field: value}}``, selected by ``selector``.

    ``note`` is added to the error for a nested profile block (e.g. a renamed field). :meth:`apply` is what
    the section parser calls; :meth:`check` verifies the table against the class (every preset key a field,
    the default profile's values equal to the field defaults) and runs on every :meth:`apply`.
    """

    presets: Mapping[str, Mapping[str, Any]]
    selector: str = "profile"
    note: str = ""
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not self.presets:
            raise TypeError("Profiles needs at least one preset")
        object.__setattr__(self, "names", tuple(self.presets))

    def preset(self, name: str) -> Mapping[str, Any]:
        """The values of profile ``name`` (a ``ValueError`` naming the known profiles when there is none)."""
        if not isinstance(name, str) or name not in self.presets:
            raise ValueError(f"{self.selector} must be one of {list(self.names)}, got {name!r}")
        return self.presets[name]

    def check(self, cls: type) -> None:
        """Raise ``TypeError`` (a programming error) when the table does not fit the dataclass ``cls``."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        selector = fields.get(self.selector)
        if selector is None or selector.default not in self.presets:
            raise TypeError(f"{cls.__name__}.PROFILES: the field {self.selector!r} must exist and default to one of "
                            f"{list(self.names)}")
        for name, preset in self.presets.items():
            unknown = sorted((set(preset) - set(fields)) | (set(preset) & {self.selector}))
            if unknown:
                raise TypeError(f"{cls.__name__}.PROFILES[{name!r}] names {unknown}, which are not settable fields "
                                f"of {cls.__name__}")
        default = self.presets[selector.default]
        differ = sorted(key for key, value in default.items() if fields[key].default != value)
        if differ:
            raise TypeError(f"{cls.__name__}.PROFILES[{selector.default!r}] (the default profile) gives {differ} "
                            "values other than the field defaults")

    def apply(self, cls: type, given: Mapping[str, Any], where: str) -> dict[str, Any]:
        """``given`` (a section's keys) over the preset its ``selector`` key (or that field's default) names.

        A ``ValueError`` whose message names ``where`` and the key: an unknown profile, or a key named like a
        profile (a nested block of the former layout).
        """
        self.check(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        nested = [key for key in given if key in self.presets and key not in fields]
        if nested:
            key = nested[0]
            raise ValueError(f"{where}.{key}: profiles are no longer nested blocks; write `{self.selector}: {key}` "
                             f"and give its settings as keys of the section itself{self.note}")
        name = given.get(self.selector, fields[self.selector].default)
        try:
            preset = self.preset(name)
        except ValueError as err:
            raise ValueError(f"{where}.{self.selector}: {err}") from None
        return {**preset, **given}

"""App option schemas in caesar-rest's describe shape, and their enforcement.

Three kinds, as in caesar-rest: a flag (a boolean switch, rendered ``--name``), a value option (int, float or str
with optional min/max) and an enum option (one of ``allowed_values``). Unlike caesar-rest, every rule is enforced:
unknown options, wrong JSON types, values out of range or outside the enum are refused, each with the option named.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from appliance.errors import InvalidOptions

_TYPE_NAMES = {int: "int", float: "float", str: "str"}


@dataclass(frozen=True)
class Option:
    name: str
    description: str
    category: str = "RUN"
    subcategory: str = ""
    advanced: bool = False
    mandatory: bool = False

    default: Any = None

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def check(self, value: Any) -> Any:
        """The value to use, or ValueError with the reason."""
        raise NotImplementedError

    def _common(self, type_name: str) -> dict[str, Any]:
        return {
            "mandatory": self.mandatory,
            "type": type_name,
            "description": self.description,
            "advanced": int(self.advanced),
            "category": self.category,
            "subcategory": self.subcategory,
        }


@dataclass(frozen=True)
class Flag(Option):
    """A switch: true adds ``--name``; false (the default) leaves it out. The value must be a JSON boolean."""

    default: bool = False

    def describe(self) -> dict[str, Any]:
        return {**self._common("none"), "enum": False, "default": self.default}

    def check(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, got {value!r}")
        return value


@dataclass(frozen=True)
class Value(Option):
    value_type: type = float
    min: float | None = None
    max: float | None = None

    def describe(self) -> dict[str, Any]:
        return {
            **self._common(_TYPE_NAMES[self.value_type]),
            "enum": False,
            "default": self.default,
            "min": self.min,
            "max": self.max,
        }

    def check(self, value: Any) -> Any:
        value = _typed(value, self.value_type)
        if self.min is not None and value < self.min:
            raise ValueError(f"must be at least {self.min}, got {value}")
        if self.max is not None and value > self.max:
            raise ValueError(f"must be at most {self.max}, got {value}")
        return value


@dataclass(frozen=True)
class Choice(Option):
    value_type: type = str
    allowed_values: tuple[Any, ...] = ()

    def describe(self) -> dict[str, Any]:
        return {
            **self._common(_TYPE_NAMES[self.value_type]),
            "enum": True,
            "default": self.default,
            "allowed_values": list(self.allowed_values),
        }

    def check(self, value: Any) -> Any:
        value = _typed(value, self.value_type)
        if value not in self.allowed_values:
            allowed = ", ".join(map(str, self.allowed_values))
            raise ValueError(f"must be one of {allowed}, got {value!r}")
        return value


def _typed(value: Any, value_type: type) -> Any:
    """JSON value to the declared type without silent coercion: 3.7 is not an int, true is not a number."""
    if isinstance(value, bool):
        raise ValueError(
            f"must be {'an integer' if value_type is int else 'a ' + _TYPE_NAMES[value_type]}, got {str(value).lower()}"
        )
    if value_type is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if not isinstance(value, int):
            raise ValueError(f"must be an integer, got {value!r}")
        return value
    if value_type is float:
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {value!r}")
    return value


class OptionSchema:
    """An app's options, in declaration order (the order /describe lists them)."""

    def __init__(self, options: Iterable[Option]) -> None:
        self.options = {option.name: option for option in options}

    def describe(self) -> dict[str, dict[str, Any]]:
        return {name: option.describe() for name, option in self.options.items()}

    def validate(self, given: Any) -> dict[str, Any]:
        """Every option with its value: the given one after checking, else the default. All problems at once."""
        if given is None:
            given = {}
        if not isinstance(given, dict):
            raise InvalidOptions({"job_inputs": "must be an object mapping option names to values"})
        problems = {name: "unknown option" for name in given if name not in self.options}
        values: dict[str, Any] = {}
        for name, option in self.options.items():
            if name not in given:
                if option.mandatory:
                    problems[name] = "is mandatory"
                values[name] = option.default
                continue
            try:
                values[name] = option.check(given[name])
            except ValueError as exc:
                problems[name] = str(exc)
        if problems:
            raise InvalidOptions(problems)
        return values

    def from_form(self, form: Mapping[str, str]) -> dict[str, Any]:
        """Typed job_inputs from an HTML form: a flag is whether its box is checked (a form sends no unchecked box),
        empty fields are left out (so the default applies), numbers are parsed; what does not parse is kept as text
        for validate() to reject."""
        given: dict[str, Any] = {}
        for name, option in self.options.items():
            raw = form.get(name)
            if isinstance(option, Flag):
                given[name] = raw is not None and raw not in ("", "off", "false")
                continue
            if raw is None or raw.strip() == "":
                continue
            kind = getattr(option, "value_type", str)
            try:
                given[name] = kind(raw.strip()) if kind in (int, float) else raw
            except ValueError:
                given[name] = raw
        return given

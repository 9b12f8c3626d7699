"""Checks of the values specs are built from: specs come from untyped input too (config
files), so each field's type and range is checked when the spec is made, with one wording."""

from __future__ import annotations

import math

from corral.errors import SpecError

__all__ = ("check_bool", "check_count", "check_number")


def check_number(name: str, value: object, *, low: float, high: float = math.inf) -> None:
    """*value* is a finite int or float within [*low*, *high*]."""
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        bounds = f">= {low}" if high == math.inf else f"within [{low}, {high}]"
        msg = f"{name} must be a finite number {bounds}, got {value!r}"
        raise SpecError(msg)


def check_count(name: str, value: object, *, low: int = 1) -> None:
    """*value* is an int (not a bool) of at least *low*."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        msg = f"{name} must be an integer >= {low}, got {value!r}"
        raise SpecError(msg)


def check_bool(name: str, value: object) -> None:
    """*value* is True or False."""
    if not isinstance(value, bool):
        msg = f"{name} must be True or False, got {value!r}"
        raise SpecError(msg)
